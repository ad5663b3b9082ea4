"""One structured log line and one set of metrics per HTTP request.

``RequestObserver`` wraps the app's whole ASGI handler, outside routing: Litestar runs
middleware only for requests that matched a route, and 404s, 405s and CORS preflights
deserve a line too. For every request it logs, on the ``rag.access`` logger, one JSON
object: time, method, path (never the query string, which may carry ``?key=``), route
template, status, duration, trace id, the API key's id (never the key) and the client
address. The question is added only with ``[web] log_questions = true``.

The trace id: minted here, once per request, and handed down to the answer
(``request_trace_id``), so the log line, the ``X-Trace-Id`` header, the service's own
log lines and the ``done`` event of an answer all carry the same id.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import parse_qs

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send

from rag.domain import new_trace_id
from rag.logs import printable
from rag.web.sse import answer_observer

log = logging.getLogger("rag.access")

QUESTION_BODY_MAX = 65536
"""Bytes of a ``POST /v1/ask`` body kept to log its question (only when configured)."""


@dataclass
class RequestRecord:
    method: str
    path: str
    trace_id: str
    client: str | None
    key_id: int | None = None
    status: int = 500
    """Stays 500 if the app fails before it starts a response."""
    question: str | None = None

    def fields(self, route: str, seconds: float) -> dict[str, Any]:
        line: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "msg": "request",
            "method": self.method,
            "path": self.path,
            "route": route,
            "status": self.status,
            "duration_ms": round(seconds * 1000, 1),
            "trace_id": self.trace_id,
            "key_id": self.key_id,
            "client": self.client,
        }
        if self.question is not None:
            line["question"] = self.question
        return line


current_request: ContextVar[RequestRecord | None] = ContextVar("rag_request", default=None)
"""The request being served (the auth guard fills in the key id)."""


def request_trace_id() -> str:
    """The trace id of the request being served (a fresh one outside ``RequestObserver``)."""
    record = current_request.get()
    return record.trace_id if record is not None else new_trace_id()


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: Any, log_questions: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_questions = log_questions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        http: HTTPScope = scope
        began = time.perf_counter()
        client = http.get("client")
        record = RequestRecord(
            method=http["method"],
            path=http["path"],
            trace_id=new_trace_id(),
            client=client[0] if client else None,
        )
        body = bytearray()
        asks = self.log_questions and record.path == "/v1/ask"
        if asks and record.method == "GET":
            record.question = _query_question(http.get("query_string", b""))
        capture = asks and record.method == "POST"

        async def observed_receive() -> ReceiveMessage:
            message = await receive()
            if message["type"] == "http.request" and len(body) < QUESTION_BODY_MAX:
                body.extend(message.get("body", b"")[: QUESTION_BODY_MAX - len(body)])
            return message

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                headers = [*message.get("headers", []), (b"x-trace-id", record.trace_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        request_token = current_request.set(record)
        observer_token = answer_observer.set(self.metrics.observe_answer)
        try:
            await self.app(scope, observed_receive if capture else receive, observed_send)
        finally:
            answer_observer.reset(observer_token)
            current_request.reset(request_token)
            seconds = time.perf_counter() - began
            if capture:
                record.question = _body_question(bytes(body))
            route = str(http.get("path_template") or "(unmatched)")
            self.metrics.observe_request(route, record.method, record.status, seconds)
            fields = record.fields(route, seconds)
            log.info(json.dumps(fields, ensure_ascii=False), extra={"access": fields})


def _query_question(query: bytes) -> str | None:
    values = parse_qs(query.decode("latin-1")).get("q")
    return values[0] if values else None


def _body_question(body: bytes) -> str | None:
    try:
        question = json.loads(body).get("question")
    except (ValueError, AttributeError):
        return None
    return question if isinstance(question, str) else None


class _TerminalFormatter(logging.Formatter):
    """People at a terminal read a short line; everything else gets the JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "access", None)
        if not isinstance(fields, dict):
            return super().format(record)
        key = f" key={fields['key_id']}" if fields["key_id"] is not None else ""
        # JSON escapes what the path carries; this line must too, or a %0A forges a line.
        return (
            f"{printable(fields['method'])} {printable(fields['path'])} {fields['status']} "
            f"{fields['duration_ms']:.0f} ms trace={fields['trace_id']}{key}"
        )


def configure_access_log(stream: IO[str] | None = None) -> None:
    """Send ``rag.access`` lines to ``stream`` (stderr): JSON unless it is a terminal."""
    target = stream or sys.stderr
    if any(getattr(h, "rag_access", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(target)
    handler.rag_access = True  # type: ignore[attr-defined]
    isatty = getattr(target, "isatty", None)
    handler.setFormatter(
        _TerminalFormatter()
        if isatty is not None and isatty()
        else logging.Formatter("%(message)s")
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)
