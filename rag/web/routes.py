"""HTTP handlers: ask (SSE, POST and GET), search, usage, health."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, cast

from litestar import Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body, QueryParameter, RawBody, SkipValidation

from rag.config import Settings
from rag.ports import QAService
from rag.web.access_log import request_trace_id
from rag.web.answer_slots import AnswerSlots
from rag.web.schemas import (
    HISTORY_PARAM_MAX_CHARS,
    HISTORY_TURNS_MAX,
    TOP_K_MAX,
    AskRequest,
    ErrorResponse,
    HistoryTurn,
    SearchHit,
    SearchRequest,
    SearchResponse,
    decode_strict,
    parse_history,
)
from rag.web.sse import EventStream, SSEStream


def provide_service(state: State) -> QAService:
    return cast(QAService, state.service)


def provide_settings(state: State) -> Settings:
    return cast(Settings, state.settings)


def provide_answer_slots(state: State) -> AnswerSlots:
    return cast(AnswerSlots, state.answer_slots)


DEPENDENCIES = {
    "service": Provide(provide_service, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "answer_slots": Provide(provide_answer_slots, sync_to_thread=False),
}


async def _answer_stream(
    service: QAService,
    settings: Settings,
    question: str,
    top_k: int | None,
    history: Sequence[HistoryTurn] | None,
    slots: AnswerSlots,
) -> SSEStream:
    # The service validates the question, once for every caller; an InputError raised
    # before the first event is a 400 (``EventStream.start``), never a stream.
    # An empty history is no history: the same call, and the same cache entry, as none.
    slot = slots.take()
    try:
        answer = service.ask(question, top_k, history or None, trace_id=request_trace_id())
        events = EventStream(answer, settings.server.heartbeat_s, on_close=slot.release)
        await events.start()
    except BaseException:
        slot.release()
        raise
    return SSEStream(events)


# Documents the error shape every handler really returns (see app.py), instead of
# Litestar's default ValidationException body.
_ERRORS = {
    400: ResponseSpec(ErrorResponse, description="The request is invalid; the message says why."),
    503: ResponseSpec(
        ErrorResponse,
        description="Busy (too many answers in flight) or shutting down; see Retry-After.",
    ),
    500: ResponseSpec(ErrorResponse, description="Internal error; no details are disclosed."),
}

_SSE_DESCRIPTION = (
    "Server-Sent Events: `sources`, then `delta` events, then `done` (or `error`); "
    "`: ping` comments while the model is idle. A rejected question is a 400 JSON error "
    "instead of a stream."
)


@post(
    "/v1/ask",
    summary="Ask a question (SSE)",
    description=_SSE_DESCRIPTION,
    media_type="text/event-stream",
    response_description="An SSE stream of answer events.",
    responses=_ERRORS,
    status_code=200,
)
async def ask_post(
    data: Annotated[
        AskRequest,
        Body(
            title="Question",
            examples=[Example(value={"question": "How do I ingest a folder?", "top_k": 5})],
        ),
    ],
    body: RawBody,
    service: NamedDependency[SkipValidation[QAService]],
    settings: NamedDependency[SkipValidation[Settings]],
    answer_slots: NamedDependency[SkipValidation[AnswerSlots]],
) -> SSEStream:
    # ``data`` gives the OpenAPI body schema and Litestar's (lax) validation; the raw
    # ``body`` is decoded again strictly so a wrong JSON type is a 400, not coerced.
    data = decode_strict(body, AskRequest)
    return await _answer_stream(
        service, settings, data.question, data.top_k, data.history, answer_slots
    )


@get(
    "/v1/ask",
    summary="Ask a question (SSE, for EventSource)",
    description=_SSE_DESCRIPTION,
    media_type="text/event-stream",
    response_description="An SSE stream of answer events.",
    responses=_ERRORS,
)
async def ask_get(
    question: Annotated[str, QueryParameter(name="q", description="The question.")],
    service: NamedDependency[SkipValidation[QAService]],
    settings: NamedDependency[SkipValidation[Settings]],
    answer_slots: NamedDependency[SkipValidation[AnswerSlots]],
    top_k: Annotated[
        int | None,
        QueryParameter(ge=1, le=TOP_K_MAX, description="How many sources to use."),
    ] = None,
    history: Annotated[
        str | None,
        QueryParameter(
            description=f"Earlier turns as JSON, oldest first: "
            f'[{{"question": "...", "answer": "..."}}], at most {HISTORY_TURNS_MAX} turns '
            f"and {HISTORY_PARAM_MAX_CHARS} characters.",
        ),
    ] = None,
) -> SSEStream:
    turns = parse_history(history)
    return await _answer_stream(service, settings, question, top_k, turns, answer_slots)


@post("/v1/search", summary="Ranked chunks for a query", responses=_ERRORS, status_code=200)
async def search(
    data: Annotated[SearchRequest, Body(title="Search")],
    body: RawBody,
    service: NamedDependency[SkipValidation[QAService]],
) -> SearchResponse:
    data = decode_strict(body, SearchRequest)
    found = await service.search_result(data.query, data.k)
    hits = [SearchHit.from_hit(n, hit) for n, hit in enumerate(found.hits, 1)]
    return SearchResponse(hits=hits, degraded=found.degraded)


@get(
    "/v1/usage",
    summary="Model usage per UTC day: tokens, neurons, dollars, today's budget",
    responses=_ERRORS,
)
async def usage(
    service: NamedDependency[SkipValidation[QAService]],
    days: Annotated[
        int, QueryParameter(ge=1, le=366, description="How many UTC days, today included.")
    ] = 7,
) -> dict[str, object]:
    return await service.usage_report(days)


@get("/healthz", summary="Liveness and index status", responses={500: _ERRORS[500]})
async def healthz(service: NamedDependency[SkipValidation[QAService]]) -> dict[str, object]:
    return await service.health()


@get(
    "/readyz",
    summary="Readiness: can the database be read and written now",
    description="`status` is `ok`, `degraded` (answers work, writes fail: uploads and "
    "ingestion would not) or `unavailable` (a 503: the database cannot be read); "
    "`database` says which and why.",
)
async def readyz(service: NamedDependency[SkipValidation[QAService]]) -> Response[dict[str, Any]]:
    ready = await service.readiness()
    return Response(ready, status_code=503 if ready["status"] == "unavailable" else 200)


ROUTES = [ask_post, ask_get, search, usage, healthz, readyz]
