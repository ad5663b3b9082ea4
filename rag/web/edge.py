"""The app's outer edge: requests refused before routing, and requests cut by shutdown.

* A path with a control character (``%00``, ``%0A``...) names no resource this app
  has, and a NUL reaching the file system is an error (500) rather than a miss: it is
  refused here with a 400, for every route at once.
* A request still unanswered when the server gives up waiting at shutdown is cancelled
  by uvicorn, which would then answer a plain-text 500. It gets a 503 in the API's
  error shape instead, so a client knows to retry against the next instance.
"""

from __future__ import annotations

import asyncio

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from rag.text import CONTROL_CHARS
from rag.web.schemas import ErrorDetail, ErrorResponse


def error_messages(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> tuple[Message, Message]:
    """The two ASGI messages of a JSON error response, for code that runs outside Litestar."""
    body = msgspec.json.encode(ErrorResponse(ErrorDetail(code=code, message=message)))
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in (headers or {}).items()),
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": raw_headers},
        {"type": "http.response.body", "body": body, "more_body": False},
    )


class Edge:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        if CONTROL_CHARS.search(scope["path"]):
            for message in error_messages(
                400, "bad_request", "the request path contains a control character"
            ):
                await send(message)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except asyncio.CancelledError:
            if started:
                raise
            # The task ends here, normally: uvicorn cancelled it to shut down, and the
            # answer below is all that is left to do for this request.
            for message in error_messages(
                503,
                "shutting_down",
                "the server is shutting down; send the request again",
                {"Retry-After": "1", "Connection": "close"},
            ):
                await send(message)
