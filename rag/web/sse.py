"""Server-Sent Events for one answer: framing, heartbeats, errors and cancellation.

The service's event iterator runs in one pump task that hands events over through a
one-slot queue. That gives three things a plain ``async for`` cannot:

* heartbeats: the response waits on the queue with a timeout, so an idle model gets a
  ``: ping`` comment without cancelling (and so corrupting) the generator's pending step;
* one task owns the generator for its whole life, so cancel scopes, timeouts or
  sessions the service opens inside it are entered and exited in the same task;
* back-pressure: the pump is never more than one event ahead of the client.

Closing: Litestar's streaming response cancels the body task when the client sends
``http.disconnect`` but never closes the iterator it was given; if the cancellation lands
while it awaits ``send`` the iterator is simply abandoned. ``SSEStream`` therefore closes
the ``EventStream`` itself once the response is over, whatever ended it, and closing it
cancels the pump, which runs the service generator's ``finally``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

import anyio
from litestar.response import Stream
from litestar.response.streaming import ASGIStreamingResponse

from rag.domain import AnswerEvent, ErrorEvent, event_name, event_payload
from rag.errors import InputError, RagError

if TYPE_CHECKING:
    from litestar import Litestar, Request
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.datastructures import Cookie
    from litestar.enums import MediaType
    from litestar.response.base import ASGIResponse
    from litestar.types import Receive, Scope, Send, TypeEncodersMap

log = logging.getLogger(__name__)

PING: Final = b": ping\n\n"
HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MEDIA_TYPE: Final = "text/event-stream"

answer_observer: ContextVar[Callable[[AnswerEvent], None] | None] = ContextVar(
    "rag_answer_observer", default=None
)
"""Set per request by the app (``rag.web.access_log``): sees every event an answer
stream sends, so metrics and the request log read latency, cache hits and the trace id
off the ``done`` event without the service knowing about either."""


class _End:
    """Marks the end of the service's iterator in the queue."""


_END: Final = _End()
_Item = AnswerEvent | Exception | _End


def encode(event: AnswerEvent) -> bytes:
    """One SSE frame; the JSON payload has no raw newlines, so one ``data:`` line suffices."""
    return b"event: " + event_name(event).encode() + b"\ndata: " + event_payload(event) + b"\n\n"


def error_event(exc: Exception) -> ErrorEvent:
    """What the client is told about a failure; only ``RagError`` messages are shown."""
    if isinstance(exc, RagError):
        return ErrorEvent(code=exc.code, message=exc.message, retryable=exc.retryable)
    return ErrorEvent(code="internal", message="internal error", retryable=False)


class EventStream:
    """The SSE byte frames of one answer, with heartbeats while the service is idle.

    Call ``start`` before sending headers (it may raise ``InputError``) and ``aclose``
    when the response is over; ``aclose`` is idempotent.
    """

    def __init__(
        self,
        events: AsyncGenerator[AnswerEvent, None],
        heartbeat_s: float,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._heartbeat_s = heartbeat_s
        self._on_close = on_close
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=1)
        self._head: _Item | None = None
        self._finished = False
        self._observe = answer_observer.get()
        self._pump = asyncio.create_task(self._run(events), name="rag-sse-pump")

    async def _run(self, events: AsyncGenerator[AnswerEvent, None]) -> None:
        try:
            async for event in events:
                if self._observe is not None:
                    self._observed(self._observe, event)
                await self._queue.put(event)
        except Exception as exc:
            await self._queue.put(exc)
        finally:
            # On cancellation the generator may be parked at a ``yield``; closing it
            # here, in the task that iterated it, runs its ``finally`` right away.
            await events.aclose()
        await self._queue.put(_END)

    @staticmethod
    def _observed(observe: Callable[[AnswerEvent], None], event: AnswerEvent) -> None:
        try:
            observe(event)
        except Exception:  # bookkeeping must never break an answer
            log.exception("observing an answer event failed")

    async def start(self) -> None:
        """Wait up to one heartbeat for the first event, so a rejected question is a 400.

        A service slower than that to produce its first event gets its stream started
        anyway (the client sees pings); an ``InputError`` after that becomes an
        ``error`` event like any other failure.
        """
        try:
            self._head = await asyncio.wait_for(self._queue.get(), self._heartbeat_s)
        except TimeoutError:
            return
        except BaseException:
            await self.aclose()
            raise
        if isinstance(self._head, InputError):
            await self.aclose()
            raise self._head

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        if self._head is not None:
            item, self._head = self._head, None
        else:
            try:
                # Cancelling queue.get on a timeout loses nothing: the pump's pending
                # step and any queued event stay where they are.
                item = await asyncio.wait_for(self._queue.get(), self._heartbeat_s)
            except TimeoutError:
                return PING
        if isinstance(item, _End):
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, Exception):
            if not isinstance(item, RagError):
                log.error("answer stream failed", exc_info=item)
            # The pump stops after an exception; the error is the last frame.
            self._finished = True
            failure = error_event(item)
            if self._observe is not None:
                self._observed(self._observe, failure)
            return encode(failure)
        return encode(item)

    async def aclose(self) -> None:
        """Stop the pump (closing the service's generator) and wait for it to finish."""
        self._finished = True
        self._pump.cancel()
        try:
            await asyncio.wait({self._pump})
        finally:
            if self._on_close is not None:
                self._on_close()
        if not self._pump.cancelled() and (exc := self._pump.exception()) is not None:
            log.error("closing the answer stream failed", exc_info=exc)


class _ClosingStreamingResponse(ASGIStreamingResponse):
    __slots__ = ("events",)

    def __init__(self, *, events: EventStream, **kwargs: Any) -> None:
        super().__init__(iterator=events, **kwargs)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: the request task itself may be cancelled (server shutdown) and
            # the service must still get to run its cleanup.
            with anyio.CancelScope(shield=True):
                await self.events.aclose()


class SSEStream(Stream):
    """A ``text/event-stream`` response that always closes its ``EventStream``."""

    __slots__ = ("events",)

    def __init__(self, events: EventStream) -> None:
        super().__init__(events, headers=dict(HEADERS), media_type=MEDIA_TYPE)
        self.events = events

    def to_asgi_response(
        self,
        app: Litestar | None,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        # Same merging as Stream.to_asgi_response; only the response class differs.
        return _ClosingStreamingResponse(
            events=self.events,
            background=self.background or background,
            content_length=0,
            cookies=self.cookies if cookies is None else itertools.chain(self.cookies, cookies),
            encoded_headers=encoded_headers,
            encoding=self.encoding,
            headers={**headers, **self.headers} if headers is not None else self.headers,
            is_head_response=is_head_response,
            media_type=MEDIA_TYPE,
            status_code=self.status_code or status_code,
        )
