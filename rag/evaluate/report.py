"""One self-contained HTML page per run: figures, charts and the questions that went worst."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from rag.evaluate import charts
from rag.evaluate.metrics import reciprocal_rank
from rag.evaluate.results import QuestionResult, RunRecord
from rag.evaluate.summary import RANKING_KEYS, counts, recall_curve

BEFORE, AFTER = "#8c8c8c", "#1f77b4"
ANSWERABLE, UNANSWERABLE = "#2ca02c", "#d62728"
WORST = 15

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; } .muted { color: #777; }
"""


def write_report(run: RunRecord, path: Path, *, gate: tuple[str, float] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(run, gate=gate), encoding="utf-8")


def render(run: RunRecord, *, gate: tuple[str, float] | None = None) -> str:
    results = run.results
    sections = [
        f"<h1>Evaluation run {escape(run.run_id)}</h1>",
        f"<p>{escape(run.dataset)} · {escape(run.created_at)} · {len(results)} questions</p>",
        "<h2>Summary</h2>",
        _summary(run.metrics),
        _table(["count", "questions"], [[k, v] for k, v in counts(results).items()]),
        "<h2>Charts</h2>",
        f'<div class="charts">{_recall_chart(results)}{_score_chart(results, run, gate)}'
        f"{_latency_chart(results)}</div>",
        "<h2>Worst retrievals</h2>",
        _worst_retrievals(results),
        "<h2>Answerable questions refused</h2>",
        _question_list([r for r in results if r.answerable and not r.grounded]),
        "<h2>Answers missing a fact</h2>",
        _question_list([r for r in results if r.grounded and r.facts_held is False]),
        "<h2>Unanswerable questions answered</h2>",
        _question_list([r for r in results if not r.answerable and r.grounded]),
        "<h2>Configuration</h2>",
        f"<pre>{escape(json.dumps(run.config, indent=2, sort_keys=True))}</pre>",
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>rag eval {escape(run.run_id)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )


def _summary(metrics: dict[str, Any]) -> str:
    rows = [
        [key, fmt(metrics["retrieval"].get(key)), fmt(metrics["reranked"].get(key))]
        for key in RANKING_KEYS
    ]
    retrieval = _table(["retrieval (documents)", "dense", "after reranking"], rows)
    other = [
        [f"{group}.{key}", fmt(value)]
        for group, values in metrics.items()
        if group not in ("retrieval", "reranked")
        for key, value in values.items()
    ]
    return retrieval + _table(["metric", "value"], other)


def _recall_chart(results: list[QuestionResult]) -> str:
    before = recall_curve(results, QuestionResult.dense_ranking)
    after = recall_curve(results, QuestionResult.reranked_ranking)
    return charts.line_chart(
        "recall@k, before and after reranking",
        list(range(1, 11)) if before else [],
        [("dense", BEFORE, before), ("reranked", AFTER, after)],
        x_label="k (documents)",
        y_label="recall",
    )


def _score_chart(
    results: list[QuestionResult], run: RunRecord, gate: tuple[str, float] | None
) -> str:
    def scores(answerable: bool) -> list[float]:
        return [
            r.best_relevance
            for r in results
            if r.answerable == answerable and r.best_relevance is not None
        ]

    if gate is None:
        configured = run.config.get("gate") or {}
        gate = next(iter(configured.items()), None)
    markers = [(f"{gate[0]} = {gate[1]:g}", float(gate[1]))] if gate else []
    return charts.histogram(
        "best relevance: answerable vs unanswerable",
        [("answerable", ANSWERABLE, scores(True)), ("unanswerable", UNANSWERABLE, scores(False))],
        x_label="best relevance among the top-k (the gate's figure)",
        markers=markers,
    )


def _latency_chart(results: list[QuestionResult]) -> str:
    total = [r.total_ms for r in results if r.total_ms is not None]
    retrieve = [r.retrieve_ms for r in results if r.retrieve_ms is not None]
    return charts.histogram(
        "latency per question",
        [("retrieve", BEFORE, retrieve), ("total", AFTER, total)],
        x_label="milliseconds",
    )


def _worst_retrievals(results: list[QuestionResult]) -> str:
    scored = []
    for r in results:
        if r.labelled:
            after = reciprocal_rank(r.reranked_ranking(), r.relevant, 10) or 0.0
            before = reciprocal_rank(r.dense_ranking(), r.relevant, 10) or 0.0
            scored.append((after, before, r))
    scored.sort(key=lambda row: (row[0], row[1], row[2].id))
    rows = [
        [
            escape(r.id),
            escape(r.question),
            f"{after:.3f}",
            f"{before:.3f}",
            escape(", ".join(sorted(r.relevant))),
            escape(", ".join(r.reranked_ranking()[:3])),
        ]
        for after, before, r in scored[:WORST]
        if after < 1.0
    ]
    if not rows:
        return '<p class="muted">none: every labelled question ranks a relevant source first</p>'
    headers = ["id", "question", "RR@10 reranked", "RR@10 dense", "relevant", "top 3 retrieved"]
    return _table(headers, rows, escaped=True)


def _question_list(results: list[QuestionResult]) -> str:
    if not results:
        return '<p class="muted">none</p>'
    rows = [
        [
            escape(r.id),
            escape(r.question),
            fmt(r.best_relevance),
            fmt(r.coverage),
            escape((r.error or r.answer)[:300]),
        ]
        for r in results[:WORST]
    ]
    more = f'<p class="muted">and {len(results) - WORST} more</p>' if len(results) > WORST else ""
    headers = ["id", "question", "best relevance", "coverage", "answer"]
    return _table(headers, rows, escaped=True) + more


def _table(headers: list[str], rows: list[list[Any]], *, escaped: bool = False) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(cell, escaped) for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any, escaped: bool) -> str:
    text = str(value) if escaped else escape(str(value))
    numeric = isinstance(value, int | float) or text.replace(".", "", 1).isdigit()
    return f'<td class="n">{text}</td>' if numeric else f"<td>{text}</td>"


def fmt(value: Any) -> str:
    """A figure as the report and ``rag eval``'s terminal output show it."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
