"""How uvicorn runs the app: bounded connections, keep-alive and header deadlines.

``uvicorn_config`` is the one place the server's limits are set (``rag serve`` and the
socket-level tests use it). The h11 protocol below adds what uvicorn lacks:

* A deadline on request headers. uvicorn's keep-alive timer is cancelled by the first
  byte a client sends and never set on a new connection, so a client that sends half a
  header line (or one byte a minute) keeps its socket for ever; a thousand of them use up
  the process's file descriptors. Here a timer runs whenever the server waits for a
  request's headers (from the moment a connection opens, and again after each response)
  and closes the connection when it fires; a complete set of headers disarms it, so slow
  uploads and long answer streams are not affected.
* A connection cap that answers in the app's JSON error shape with ``Retry-After``.
  uvicorn's own ``limit_concurrency`` answers a plain-text 503 with no hint of when to
  come back (and logs a warning per request), so it is off and the same count (open
  connections, requests in flight) is checked here instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
import uvicorn
from litestar import Litestar
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.h11_impl import H11Protocol

from rag.config import ServerSettings

log = logging.getLogger(__name__)


_BUSY_BODY = json.dumps(
    {
        "error": {
            "code": "busy",
            "message": "the server is at its connection limit ([server] max_connections): "
            "try again shortly",
        }
    }
).encode()


async def _busy(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BUSY_BODY)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),  # a refused client should not hold its socket either
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _BUSY_BODY, "more_body": False})


class _Bounded(H11Protocol):
    header_timeout_s: float = 10.0
    max_connections: int = 100
    _header_timer: asyncio.TimerHandle | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        served = self.app

        async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
            # This connection is in ``connections``; this request is not yet in ``tasks``.
            over = len(self.connections) > self.max_connections
            if scope["type"] == "http" and (over or len(self.tasks) >= self.max_connections):
                await _busy(scope, receive, send)
            else:
                await served(scope, receive, send)

        self.app = app

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request's headers are complete
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()  # waiting for the next request's headers on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            # Debug only: a flood of slow clients must not become a flood of log lines.
            log.debug("closing a connection that sent no complete request headers in time")
            self.transport.close()


def bounded_protocol(server: ServerSettings) -> type[H11Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    attributes = {
        "header_timeout_s": server.header_timeout_s,
        "max_connections": server.max_connections,
    }
    return type("BoundedH11Protocol", (_Bounded,), attributes)


def uvicorn_config(app: Litestar, server: ServerSettings, **options: Any) -> uvicorn.Config:
    """The server for ``app`` with ``server``'s limits; ``options`` add to or override them."""
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "http": bounded_protocol(server),
        "timeout_keep_alive": server.keepalive_timeout_s,
        # Open SSE streams would hold shutdown for ever; after 5 s they are closed.
        "timeout_graceful_shutdown": 5,
        # The app logs each request itself, as JSON (rag.web.access_log).
        "access_log": False,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default, which is every
        # client of a local server; the app applies [server] trusted_proxies instead
        # (rag.web.app).
        "proxy_headers": False,
    }
    return uvicorn.Config(app, **{**settings, **options})
