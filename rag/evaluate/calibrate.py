"""Pick the evidence-gate threshold that best separates answerable from unanswerable.

The sweep tries every observed best-relevance value as the threshold (a question is
answered when its best relevance is at least the threshold and its other gate checks
pass) and scores each by balanced accuracy: the mean of the share of answerable
questions kept and the share of unanswerable ones refused. Balanced, because the two
groups rarely have the same size; its argmax is also Youden's J's (J = 2 * BA - 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rag.evaluate.results import QuestionResult


@dataclass(frozen=True)
class Row:
    threshold: float
    kept: int
    """Answerable questions that would be answered."""
    answerable: int
    refused: int
    """Unanswerable questions that would be refused."""
    unanswerable: int

    @property
    def kept_share(self) -> float:
        return self.kept / self.answerable if self.answerable else 0.0

    @property
    def refused_share(self) -> float:
        return self.refused / self.unanswerable if self.unanswerable else 0.0

    @property
    def balanced_accuracy(self) -> float:
        return (self.kept_share + self.refused_share) / 2

    def as_dict(self) -> dict[str, float | int]:
        return {
            "threshold": self.threshold,
            "answerable_kept": self.kept,
            "answerable": self.answerable,
            "unanswerable_refused": self.refused,
            "unanswerable": self.unanswerable,
            "balanced_accuracy": round(self.balanced_accuracy, 4),
        }


def sweep(results: Sequence[QuestionResult], min_coverage: float = 0.0) -> list[Row]:
    """One row per distinct observed best relevance, lowest threshold first.

    ``min_coverage`` is the term-coverage check held at its configured value: a
    question it refuses stays refused whatever the relevance threshold.
    """
    values = sorted({r.best_relevance for r in results if r.best_relevance is not None})
    return [row_at(results, threshold, min_coverage) for threshold in values]


def row_at(results: Sequence[QuestionResult], threshold: float, min_coverage: float = 0.0) -> Row:
    """What the gate would do at ``threshold`` (questions that errored are left out)."""
    scored = [r for r in results if r.error is None]
    answerable = [r for r in scored if r.answerable]
    kept = sum(1 for r in answerable if _answered(r, threshold, min_coverage))
    refused = sum(
        1 for r in scored if not r.answerable and not _answered(r, threshold, min_coverage)
    )
    return Row(threshold, kept, len(answerable), refused, len(scored) - len(answerable))


def _answered(result: QuestionResult, threshold: float, min_coverage: float) -> bool:
    best = result.best_relevance
    covered = result.coverage is None or result.coverage >= min_coverage
    return best is not None and best >= threshold and covered


def best(rows: Sequence[Row]) -> Row | None:
    """Highest balanced accuracy; on a tie the lower threshold, which refuses less."""
    if not rows:
        return None
    return max(rows, key=lambda row: (round(row.balanced_accuracy, 12), -row.threshold))


def table(rows: Sequence[Row], lines: int = 15) -> list[Row]:
    """An even sample of the sweep for printing (hundreds of rows say no more)."""
    if len(rows) <= lines:
        return list(rows)
    step = (len(rows) - 1) / (lines - 1)
    return [rows[round(i * step)] for i in range(lines)]
