"""The HTTP API: Litestar app factory, routes, schemas and the SSE answer stream."""

from rag.web.app import create_app

__all__ = ["create_app"]
