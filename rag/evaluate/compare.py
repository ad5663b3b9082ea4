"""Two runs side by side: metric deltas, what changed in the fingerprint, and the
questions won and lost (ranking moved, or the answer/refusal decision flipped)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rag.evaluate.metrics import reciprocal_rank
from rag.evaluate.results import QuestionResult, RunRecord
from rag.evaluate.summary import LOWER_IS_BETTER, Metrics, metric_names


@dataclass(frozen=True)
class Delta:
    metric: str
    a: float | None
    b: float | None

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else round(self.b - self.a, 6)

    @property
    def better(self) -> bool | None:
        """Whether B improves on A (None when equal or not comparable)."""
        change = self.change
        if not change:
            return None
        return change < 0 if self.metric in LOWER_IS_BETTER else change > 0


@dataclass(frozen=True)
class Change:
    question: QuestionResult
    """As run B saw it."""
    what: str


@dataclass
class Comparison:
    a: RunRecord
    b: RunRecord
    deltas: list[Delta] = field(default_factory=list)
    config: list[tuple[str, Any, Any]] = field(default_factory=list)
    won: list[Change] = field(default_factory=list)
    lost: list[Change] = field(default_factory=list)
    common: int = 0


def compare(a: RunRecord, b: RunRecord) -> Comparison:
    result = Comparison(a, b)
    ma: Metrics = a.metrics
    mb: Metrics = b.metrics
    for name in metric_names(mb):
        group, _, key = name.partition(".")
        result.deltas.append(Delta(name, ma.get(group, {}).get(key), mb[group][key]))
    ca, cb = flatten(a.config), flatten(b.config)
    keys = sorted(set(ca) | set(cb))
    result.config = [(k, ca.get(k), cb.get(k)) for k in keys if ca.get(k) != cb.get(k)]
    before = {r.id: r for r in a.results}
    for new in b.results:
        old = before.get(new.id)
        if old is None:
            continue
        result.common += 1
        for won, what in _changes(old, new):
            (result.won if won else result.lost).append(Change(new, what))
    return result


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys (``retrieval.top_k``), so a diff names the knob."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changes(old: QuestionResult, new: QuestionResult) -> list[tuple[bool, str]]:
    changes = []
    if new.labelled:
        rr_old = reciprocal_rank(old.reranked_ranking(), new.relevant, 10) or 0.0
        rr_new = reciprocal_rank(new.reranked_ranking(), new.relevant, 10) or 0.0
        if rr_new != rr_old:
            changes.append((rr_new > rr_old, f"RR@10 {rr_old:.3f} -> {rr_new:.3f}"))
    right_old = old.grounded == old.answerable
    right_new = new.grounded == new.answerable
    if right_old != right_new:
        verb = "answered" if new.grounded else "refused"
        kind = "answerable" if new.answerable else "unanswerable"
        changes.append((right_new, f"now {verb} ({kind})"))
    held_old, held_new = old.facts_held, new.facts_held
    if held_old is not None and held_new is not None and held_old != held_new:
        held = "holds every fact" if held_new else "misses a fact"
        changes.append((held_new, f"answer now {held}"))
    return changes
