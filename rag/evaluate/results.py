"""What a run keeps per question: enough to recompute every metric with no model call.

The candidates carry their dense and keyword ranks and the final order its scores, so a
replay rebuilds both rankings (before and after reranking) from storage alone, and a
change of labels can be re-scored against an old run.
"""

from __future__ import annotations

from typing import Any

import msgspec

from rag.evaluate import metrics
from rag.evaluate.metrics import distinct


class Candidate(msgspec.Struct, frozen=True, array_like=True):
    """A dense or keyword candidate; array-like keeps 600 questions x 80 candidates small."""

    chunk_id: str
    source: str
    dense_rank: int | None
    dense_score: float | None
    keyword_rank: int | None
    keyword_score: float | None


class Ranked(msgspec.Struct, frozen=True, array_like=True):
    """A hit in the reranker's final order."""

    chunk_id: str
    score: float
    relevance: float


class QuestionResult(msgspec.Struct, kw_only=True):
    id: str
    question: str
    answerable: bool
    relevant: dict[str, float]
    """Source -> graded gain; empty when the question has no relevance labels."""
    references: list[str] = msgspec.field(default_factory=list)
    facts: list[list[str]] = msgspec.field(default_factory=list)
    """What a correct answer must contain (each fact as its alternatives)."""
    candidates: list[Candidate] = msgspec.field(default_factory=list)
    reranked: list[Ranked] = msgspec.field(default_factory=list)
    best_relevance: float | None = None
    """The figure the evidence gate compared: best relevance among the top-k hits."""
    coverage: float | None = None
    """The term-coverage figure of the evidence gate, where the retriever computes one."""
    grounded: bool = False
    """The answer flow's verdict (DoneEvent.grounded): False is a refusal."""
    answer: str = ""
    citations: int = 0
    valid_citations: int = 0
    f1: float | None = None
    rouge_l: float | None = None
    facts_held: bool | None = None
    """Whether the answer holds every fact; None without facts or for an unanswerable
    question. A refusal holds none."""
    neurons: float = 0.0
    usd: float = 0.0
    retrieve_ms: float | None = None
    total_ms: float | None = None
    error: str | None = None
    """The answer flow's error event or input error, when it did not finish."""

    @property
    def labelled(self) -> bool:
        return self.answerable and any(g > 0 for g in self.relevant.values())

    def dense_ranking(self) -> list[str]:
        """Sources in dense order: the ranking before reranking."""
        dense = sorted((c for c in self.candidates if c.dense_rank is not None), key=_dense_key)
        return distinct(c.source for c in dense)

    def reranked_ranking(self) -> list[str]:
        """Sources in the reranker's order."""
        sources = {c.chunk_id: c.source for c in self.candidates}
        return distinct(sources[r.chunk_id] for r in self.reranked if r.chunk_id in sources)


def score_answer(result: QuestionResult) -> None:
    """Set the answer figures (F1, ROUGE-L, facts held) from ``result``'s own labels.

    One place for a fresh run and a replay against new labels. A refusal answers
    nothing: it is scored as an empty answer, not as its boilerplate.
    """
    result.f1 = result.rouge_l = result.facts_held = None
    if not result.answerable or result.error is not None:
        return
    said = result.answer if result.grounded else ""
    if result.references:
        result.f1 = metrics.best_over(metrics.token_f1, said, result.references)
        result.rouge_l = metrics.best_over(metrics.rouge_l, said, result.references)
    if result.facts:
        result.facts_held = metrics.holds_facts(said, result.facts)


class RunRecord(msgspec.Struct, kw_only=True):
    run_id: str
    dataset: str
    dataset_sha256: str
    created_at: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    results: list[QuestionResult]


def _dense_key(candidate: Candidate) -> tuple[int, str]:
    return (candidate.dense_rank or 0, candidate.chunk_id)
