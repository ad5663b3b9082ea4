"""One answer as a stream of events: sources, deltas, done (or error).

The contract (docs/design.md#answer-stream): sources are announced before any text; the
``done`` event carries the whole answer, its citations, whether it is grounded, the
provider, usage and latency. Retrieval has finished before the first event, so the
stream holds no database session while the model talks.

The provider reported is the one that answered: the fallback chain's stream says which
(``answered_by``). ``usage`` is read when the answer is complete, so it sums every call
the answer made (embed, rerank, chat).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from rag.answer.chain import ChainStream, FallbackChain
from rag.answer.citations import extract_citations
from rag.domain import (
    AnswerEvent,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    Hit,
    Latency,
    Source,
    SourcesEvent,
    Usage,
)
from rag.errors import RagError
from rag.retrieval.retriever import Retrieval

log = logging.getLogger(__name__)

NOT_COVERED = (
    "The documents do not cover this question: nothing in them is close enough to answer "
    "it with a citation."
)
SNIPPET_CHARS = 240


def numbered_sources(hits: Sequence[Hit]) -> tuple[Source, ...]:
    return tuple(
        Source(
            n=n,
            chunk_id=hit.chunk_id,
            document=hit.source,
            title=hit.title,
            page=hit.page_start,
            score=round(hit.relevance, 4),
            snippet=_snippet(hit.text),
            recognised=hit.recognised,
            confidence=hit.confidence,
        )
        for n, hit in enumerate(hits, start=1)
    )


async def answer_events(
    question: str,
    retrieval: Retrieval,
    chat: FallbackChain,
    began: float,
    *,
    trace_id: str,
    usage: Callable[[], Usage] = Usage,
) -> AsyncIterator[AnswerEvent]:
    """Stream one answer; ``began`` is when the request arrived (perf_counter), and
    ``trace_id`` the request's own (minted at the edge: rag.web, or the service)."""
    latency = Latency(retrieve=_ms(retrieval.seconds))
    if not retrieval.grounded:
        yield SourcesEvent(())
        latency.first_token = _ms(time.perf_counter() - began)
        yield DeltaEvent(NOT_COVERED)
        latency.total = _ms(time.perf_counter() - began)
        yield DoneEvent(
            answer=NOT_COVERED,
            citations=(),
            grounded=False,
            provider=chat.name,
            cached=False,
            usage=usage(),
            latency_ms=latency,
            trace_id=trace_id,
            degraded=retrieval.degraded,
        )
        return
    hits = retrieval.hits
    yield SourcesEvent(numbered_sources(hits))
    pieces: list[str] = []
    stream = chat.stream(question, hits)
    try:
        try:
            async for piece in stream:
                if not piece:
                    continue
                if latency.first_token is None:
                    latency.first_token = _ms(time.perf_counter() - began)
                pieces.append(piece)
                yield DeltaEvent(piece)
        finally:
            await stream.aclose()
    except RagError as exc:
        _note_fallbacks(trace_id, stream, "")
        yield ErrorEvent(code=exc.code, message=exc.message, retryable=exc.retryable)
        return
    provider = stream.answered_by or chat.name
    _note_fallbacks(trace_id, stream, provider)
    answer = "".join(pieces).strip()
    if not answer:
        # The model found nothing to say in these sources: say so rather than send silence.
        latency.first_token = latency.first_token or _ms(time.perf_counter() - began)
        answer = NOT_COVERED
        yield DeltaEvent(NOT_COVERED)
    citations = extract_citations(answer, hits)
    latency.total = _ms(time.perf_counter() - began)
    yield DoneEvent(
        answer=answer,
        citations=citations,
        grounded=bool(citations),
        provider=provider,
        cached=False,
        usage=usage(),
        latency_ms=latency,
        trace_id=trace_id,
        degraded=retrieval.degraded,
    )


def _note_fallbacks(trace_id: str, stream: ChainStream, provider: str) -> None:
    """Log, with the trace id, every provider the chain passed over and why."""
    passed_over = stream.passed_over
    if passed_over:
        log.warning(
            "trace %s: passed over %s; answered by %s",
            trace_id,
            "; ".join(passed_over),
            provider or "nobody",
        )


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= SNIPPET_CHARS:
        return flat
    cut = flat.rfind(" ", 0, SNIPPET_CHARS)
    return flat[: cut if cut > 0 else SNIPPET_CHARS] + "…"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
