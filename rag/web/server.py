"""How uvicorn runs the app: bounded connections, keep-alive and header deadlines.

``uvicorn_config`` is the one place the server's limits are set (``rag serve`` and the
socket-level tests use it). uvicorn's ``limit_concurrency`` caps the connections served
at once (a request beyond it gets uvicorn's own plain-text 503 and the connection is
closed); the h11 protocol below adds the deadline on request headers that uvicorn lacks.

uvicorn has no such timeout: its keep-alive timer is cancelled by the first byte a
client sends and never set on a new connection, so a client that sends half a header
line (or one byte a minute) keeps its socket for ever; a thousand of them use up the
process's file descriptors. Here a timer runs whenever the server waits for a request's
headers (from the moment a connection opens, and again after each response) and closes
the connection when it fires; a complete set of headers disarms it, so slow uploads and
long answer streams are not affected.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from litestar import Litestar
from uvicorn.protocols.http.h11_impl import H11Protocol

from rag.config import ServerSettings

log = logging.getLogger(__name__)


class _HeaderDeadline(H11Protocol):
    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

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


def header_deadline_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    attributes = {"header_timeout_s": header_timeout_s}
    return type("HeaderDeadlineH11Protocol", (_HeaderDeadline,), attributes)


def uvicorn_config(app: Litestar, server: ServerSettings, **options: Any) -> uvicorn.Config:
    """The server for ``app`` with ``server``'s limits; ``options`` add to or override them."""
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "http": header_deadline_protocol(server.header_timeout_s),
        "timeout_keep_alive": server.keepalive_timeout_s,
        "limit_concurrency": server.max_connections,
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
