"""One question through the real answer flow, recorded for scoring.

A ``RetrievalRecorder`` observes the service's retriever (``Retriever.observers``) and
keeps what the answer flow retrieved (every candidate with its dense and keyword ranks,
and the gate's verdict), so each question is retrieved once, by the same code users get,
and the ranking metrics describe the very retrieval the answer was built on.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.domain import DoneEvent, ErrorEvent, Hit, Source, SourcesEvent
from rag.errors import RagError
from rag.evaluate.datasets import Question
from rag.evaluate.results import Candidate, QuestionResult, Ranked, score_answer
from rag.retrieval.retriever import Retrieval
from rag.service import RagService


class RetrievalRecorder:
    """The last retrieval a service made, with its candidates; attach with ``observe``."""

    def __init__(self) -> None:
        self.last_candidates: list[Hit] = []
        self.last_retrieval: Retrieval | None = None

    def observe(self, service: RagService) -> None:
        service.retriever.observers.append(self)

    def __call__(self, candidates: list[Hit], retrieval: Retrieval) -> None:
        self.last_candidates = candidates
        self.last_retrieval = retrieval

    def reset(self) -> None:
        self.last_candidates = []
        self.last_retrieval = None


async def evaluate_question(
    service: RagService, recorder: RetrievalRecorder, question: Question, *, answer: bool
) -> QuestionResult:
    """Ask (or, with ``answer`` False, only retrieve) and record what happened."""
    result = QuestionResult(
        id=question.id,
        question=question.text,
        answerable=question.answerable,
        relevant=dict(question.relevant),
        references=list(question.references),
        facts=[list(f) for f in question.facts],
    )
    recorder.reset()
    sources: Sequence[Source] = ()
    done: DoneEvent | None = None
    try:
        if answer:
            async for event in service.ask(question.text):
                if isinstance(event, SourcesEvent):
                    sources = event.sources
                elif isinstance(event, DoneEvent):
                    done = event
                elif isinstance(event, ErrorEvent):
                    result.error = f"{event.code}: {event.message}"
        else:
            await service.search(question.text)
        await _record_retrieval(service, recorder, question.text, result)
    except RagError as exc:
        result.error = f"{exc.code}: {exc.message}"
    if done is not None:
        # The sources are the ranked hits and the first one's opening (not a candidate).
        given = recorder.last_retrieval.hits if recorder.last_retrieval else []
        _record_answer(result, question, done, sources, [*recorder.last_candidates, *given])
    elif not answer and recorder.last_retrieval is not None:
        result.grounded = recorder.last_retrieval.grounded
        result.retrieve_ms = round(recorder.last_retrieval.seconds * 1000, 1)
    return result


async def _record_retrieval(
    service: RagService, recorder: RetrievalRecorder, query: str, result: QuestionResult
) -> None:
    candidates = recorder.last_candidates
    retrieval = recorder.last_retrieval
    if retrieval is None:
        return
    # The answer flow reranked only its top-k; the metrics look 10 documents deep.
    full = await service.reranker.rerank(query, candidates, len(candidates))
    result.candidates = [
        Candidate(
            h.chunk_id, h.source, h.dense_rank, h.dense_score, h.keyword_rank, h.keyword_score
        )
        for h in candidates
    ]
    result.reranked = [Ranked(h.chunk_id, h.score, h.relevance) for h in full]
    result.best_relevance = retrieval.best_relevance
    result.coverage = retrieval.coverage


def _record_answer(
    result: QuestionResult,
    question: Question,
    done: DoneEvent,
    sources: Sequence[Source],
    candidates: Sequence[Hit],
) -> None:
    result.grounded = done.grounded
    result.answer = done.answer
    result.citations = len(done.citations)
    texts = {h.chunk_id: h.text for h in candidates}
    result.valid_citations = sum(
        1
        for c in done.citations
        if 1 <= c.n <= len(sources)
        and sources[c.n - 1].chunk_id == c.chunk_id
        and c.quote
        and c.quote in texts.get(c.chunk_id, "")
    )
    score_answer(result)
    result.neurons = done.usage.neurons
    result.usd = done.usage.usd
    result.retrieve_ms = done.latency_ms.retrieve
    result.total_ms = done.latency_ms.total
