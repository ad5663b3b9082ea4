"""Per-question results to the run's figures, dotted metric names, and the CI gate.

Every figure is an aggregate over stored ``QuestionResult``s, so a fresh run and a
replay go through the same code. A metric that does not apply (no labels, no reference
answers, no unanswerable questions) is None, never 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import InputError
from rag.evaluate import metrics as m
from rag.evaluate.results import QuestionResult, RunRecord

RANKING_KEYS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
LOWER_IS_BETTER = {"abstention.false_refusal"} | {
    f"{group}.{key}"
    for group, keys in (
        ("cost", ("neurons_per_question", "usd_per_question")),
        ("latency_ms", ("retrieve_p50", "retrieve_p95", "total_p50", "total_p95")),
    )
    for key in keys
}
"""The figures where an increase is the regression."""
Ranking = Callable[[QuestionResult], list[str]]
Metrics = dict[str, dict[str, float | None]]


def ranking_metrics(results: Sequence[QuestionResult], ranking: Ranking) -> dict[str, float | None]:
    """Means over answerable questions that have relevance labels."""
    labelled = [r for r in results if r.labelled]
    rows = [(ranking(r), r.relevant) for r in labelled]
    return {
        "recall@1": _round(m.mean(m.recall_at(rank, rel, 1) for rank, rel in rows)),
        "recall@5": _round(m.mean(m.recall_at(rank, rel, 5) for rank, rel in rows)),
        "recall@10": _round(m.mean(m.recall_at(rank, rel, 10) for rank, rel in rows)),
        "mrr@10": _round(m.mean(m.reciprocal_rank(rank, rel, 10) for rank, rel in rows)),
        "ndcg@10": _round(m.mean(m.ndcg_at(rank, rel, 10) for rank, rel in rows)),
    }


def recall_curve(
    results: Sequence[QuestionResult], ranking: Ranking, depth: int = 10
) -> list[float]:
    """Mean recall@k for k = 1..depth (the report's curve); empty without labels."""
    rows = [(ranking(r), r.relevant) for r in results if r.labelled]
    if not rows:
        return []
    return [
        m.mean(m.recall_at(rank, rel, k) for rank, rel in rows) or 0.0 for k in range(1, depth + 1)
    ]


def summarise(results: Sequence[QuestionResult]) -> Metrics:
    """The ``metrics`` object of ``rag eval --json``."""
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]
    cited = sum(r.citations for r in results)
    retrieve = [r.retrieve_ms for r in results if r.retrieve_ms is not None]
    total = [r.total_ms for r in results if r.total_ms is not None]
    return {
        "retrieval": ranking_metrics(results, QuestionResult.dense_ranking),
        "reranked": ranking_metrics(results, QuestionResult.reranked_ranking),
        "abstention": {
            "correct_refusal": _share(unanswerable, lambda r: not r.grounded),
            "false_refusal": _share(answerable, lambda r: not r.grounded),
        },
        "answers": {
            "citation_validity": _round(sum(r.valid_citations for r in results) / cited)
            if cited
            else None,
            "f1": _round(m.mean(r.f1 for r in results)),
            "rouge_l": _round(m.mean(r.rouge_l for r in results)),
            "fact_recall": _share(
                [r for r in results if r.facts_held is not None], lambda r: bool(r.facts_held)
            ),
        },
        "cost": {
            "neurons_per_question": _round(m.mean(r.neurons for r in results)),
            "usd_per_question": _round(m.mean(r.usd for r in results), 8),
        },
        "latency_ms": {
            "retrieve_p50": _round(m.percentile(retrieve, 50), 1),
            "retrieve_p95": _round(m.percentile(retrieve, 95), 1),
            "total_p50": _round(m.percentile(total, 50), 1),
            "total_p95": _round(m.percentile(total, 95), 1),
        },
    }


def counts(results: Sequence[QuestionResult]) -> dict[str, int]:
    """How many questions each group of figures rests on."""
    answerable = [r for r in results if r.answerable]
    return {
        "questions": len(results),
        "answerable": len(answerable),
        "unanswerable": len(results) - len(answerable),
        "labelled": sum(1 for r in results if r.labelled),
        "answerable_without_labels": sum(1 for r in answerable if not r.labelled),
        "with_reference_answer": sum(1 for r in results if r.f1 is not None),
        "with_facts": sum(1 for r in results if r.facts_held is not None),
        "refused": sum(1 for r in results if not r.grounded),
        "citations": sum(r.citations for r in results),
        "errors": sum(1 for r in results if r.error),
    }


def metric_names(metrics: Metrics) -> list[str]:
    return [f"{group}.{key}" for group, values in metrics.items() for key in values]


def lookup(metrics: Metrics, name: str) -> float | None:
    """A metric by dotted name (``reranked.recall@5``); InputError naming an unknown one."""
    group, _, key = name.partition(".")
    if group not in metrics or key not in metrics[group]:
        known = ", ".join(metric_names(metrics))
        raise InputError(f"unknown metric {name!r}; known metrics: {known}")
    return metrics[group][key]


@dataclass(frozen=True)
class Gate:
    metric: str
    bound: float
    at_most: bool = False
    """False: the metric must be >= bound (--fail-under); True: <= bound (--fail-over)."""

    def describe(self) -> str:
        return f"{self.metric} {'<=' if self.at_most else '>='} {self.bound:g}"


def parse_gate(text: str, *, at_most: bool = False) -> Gate:
    name, sep, value = text.partition("=")
    try:
        bound = float(value)
    except ValueError:
        bound = float("nan")
    if not sep or not name or bound != bound:
        raise InputError(f"{text!r}: expected METRIC=VALUE, e.g. reranked.recall@5=0.8")
    return Gate(name.strip(), bound, at_most)


def baseline_gates(path: Path) -> list[Gate]:
    """One gate per figure in a baseline file, loosened by its ``tolerance``.

    Quality figures may not fall more than the slack below the baseline, and the
    false-refusal rate may not rise more than it above. The slack is the tolerance, or
    one question's worth of the figure (1 / the questions it rests on) when that is
    larger: on 10 unanswerable questions one flip moves the refusal rate by 0.1, and a
    gate finer than its own resolution would fail on a different CPU's rounding. Cost
    and latency are left out: they depend on the machine, not on the change under test.
    """
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
        tolerance = float(baseline.get("tolerance", 0.02))
        figures: Metrics = baseline["metrics"]
        sizes: dict[str, int] = baseline.get("counts") or {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a readable baseline file ({exc})") from None
    gates = []
    for name in metric_names(figures):
        value = lookup(figures, name)
        if value is None or name.startswith(("cost.", "latency_ms.")):
            continue
        rests_on = _RESTS_ON.get(name) or _RESTS_ON.get(name.partition(".")[0], "")
        size = sizes.get(rests_on, 0)
        slack = max(tolerance, 1 / size if size else 0.0)
        if name in LOWER_IS_BETTER:
            gates.append(Gate(name, round(value + slack, 6), at_most=True))
        else:
            gates.append(Gate(name, round(value - slack, 6)))
    return gates


_RESTS_ON = {
    "retrieval": "labelled",
    "reranked": "labelled",
    "abstention.correct_refusal": "unanswerable",
    "abstention.false_refusal": "answerable",
    "answers.citation_validity": "citations",
    "answers.f1": "with_reference_answer",
    "answers.rouge_l": "with_reference_answer",
    "answers.fact_recall": "with_facts",
}
"""Which count (``counts``) each figure is a mean over."""


def baseline_document(run: RunRecord, tolerance: float) -> dict[str, Any]:
    """What ``rag eval baseline`` writes and ``baseline_gates`` reads."""
    return {
        "dataset": run.dataset,
        "run_id": run.run_id,
        "created_at": run.created_at,
        "machine": run.config.get("machine"),
        "git_commit": run.config.get("git_commit"),
        "tolerance": tolerance,
        "counts": counts(run.results),
        "metrics": run.metrics,
    }


def check(metrics: Metrics, gates: Sequence[Gate]) -> list[str]:
    """A message per gate that fails; unknown names raise before anything is judged."""
    values = [(gate, lookup(metrics, gate.metric)) for gate in gates]
    failures = []
    for gate, value in values:
        if value is None:
            failures.append(
                f"{gate.metric} is null (does not apply to this run); wanted {gate.describe()}"
            )
        elif (value > gate.bound) if gate.at_most else (value < gate.bound):
            failures.append(f"{gate.metric} = {value:g}; wanted {gate.describe()}")
    return failures


def _share(group: Sequence[QuestionResult], test: Callable[[QuestionResult], bool]) -> float | None:
    return _round(sum(1 for r in group if test(r)) / len(group)) if group else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
