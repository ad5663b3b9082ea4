"""Terminal output of ``rag eval``: run summaries, run lists, comparisons, calibration.

Dataset names, run settings and questions are data: they print literally.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from rag.cli.common import literal, out, say
from rag.db.tables import EvalRun
from rag.evaluate.calibrate import Row
from rag.evaluate.compare import Comparison
from rag.evaluate.report import fmt, write_report
from rag.evaluate.results import RunRecord
from rag.evaluate.summary import RANKING_KEYS, counts


def run_json(run: RunRecord) -> dict[str, Any]:
    """The object ``rag eval --json`` prints (the shape the issue fixes, nothing more)."""
    return {
        "run_id": run.run_id,
        "dataset": run.dataset,
        "config": run.config,
        "questions": len(run.results),
        "metrics": run.metrics,
    }


def show(
    run: RunRecord, as_json: bool, report: Path | None, gate: tuple[str, float] | None = None
) -> None:
    """A run as JSON or as text, and its HTML report when asked for."""
    if report is not None:
        write_report(run, report, gate=gate)
    if as_json:
        out.out(json.dumps(run_json(run), indent=2))
    else:
        print_run(run)
        if report is not None:
            say(f"report: {report}")


def print_run(run: RunRecord) -> None:
    n = counts(run.results)
    m = run.metrics
    heading = Text.assemble(
        (f"run {run.run_id}", "bold"),
        f"  {run.dataset}  {n['questions']} questions "
        f"({n['answerable']} answerable, {n['unanswerable']} unanswerable; "
        f"{n['labelled']} with relevance labels, {n['answerable_without_labels']} answerable "
        f"without)",
    )
    out.print(heading, soft_wrap=True)
    table = Table("documents", "dense", "reranked", title="retrieval", title_justify="left")
    for key in RANKING_KEYS:
        table.add_row(key, fmt(m["retrieval"][key]), fmt(m["reranked"][key]))
    out.print(table)
    ab, an, cost, lat = m["abstention"], m["answers"], m["cost"], m["latency_ms"]
    lines = [
        f"abstention  correct refusal {fmt(ab['correct_refusal'])} of {n['unanswerable']}"
        f" unanswerable; false refusal {fmt(ab['false_refusal'])} of {n['answerable']} answerable",
        f"answers     citation validity {fmt(an['citation_validity'])}"
        f" ({n['citations']} citations); F1 {fmt(an['f1'])}, ROUGE-L {fmt(an['rouge_l'])}"
        f" ({n['with_reference_answer']} with a reference answer);"
        f" fact recall {fmt(an.get('fact_recall'))} ({n['with_facts']} with facts)",
        f"cost        {fmt(cost['neurons_per_question'])} neurons, "
        f"${fmt(cost['usd_per_question'])} per question",
        f"latency ms  retrieve p50 {fmt(lat['retrieve_p50'])} p95 {fmt(lat['retrieve_p95'])};"
        f" total p50 {fmt(lat['total_p50'])} p95 {fmt(lat['total_p95'])}"
        f"  ({run.config.get('machine', 'machine unknown')})",
    ]
    cached = run.config.get("query_vectors") or {}
    if cached.get("cached"):
        lines.append(
            f"            query vectors: {cached['cached']} from the cache, "
            f"{cached.get('embedded', 0)} embedded (a cached one's embedding time is not in "
            "the latency; --fresh-embeddings measures it)"
        )
    for line in lines:
        say(line)
    if n["errors"]:
        out.print(
            literal(f"errors      {n['errors']} questions did not finish (see show)", "yellow")
        )


def print_runs(runs: Sequence[EvalRun]) -> None:
    """Plain aligned lines rather than a table: run ids stay whole in a pipe and grep."""
    out.print(
        f"{'run':<22} {'created (UTC)':<17} {'questions':>9} {'recall@5':>9} {'MRR@10':>7} "
        f"{'refused':>8}  dataset",
        style="bold",
        soft_wrap=True,
    )
    for run in runs:
        metrics: Any = run.metrics
        reranked, abstention = metrics.get("reranked", {}), metrics.get("abstention", {})
        say(
            f"{run.id:<22} {run.created_at:%Y-%m-%d %H:%M} {run.questions:>9} "
            f"{fmt(reranked.get('recall@5')):>9} {fmt(reranked.get('mrr@10')):>7} "
            f"{fmt(abstention.get('correct_refusal')):>8}  {run.dataset}"
        )


def print_comparison(c: Comparison, limit: int = 20) -> None:
    sides = Text.assemble(
        ("A", "bold"),
        f" {c.a.run_id} ({c.a.dataset})  ",
        ("B", "bold"),
        f" {c.b.run_id} ({c.b.dataset})",
    )
    out.print(sides, soft_wrap=True)
    if c.a.dataset_sha256 != c.b.dataset_sha256:
        out.print("[yellow]the datasets differ: compare with care[/]")
    table = Table("metric", "A", "B", "B - A")
    for d in c.deltas:
        colour = {True: "green", False: "red", None: ""}[d.better]
        change = "n/a" if d.change is None else f"{d.change:+.4g}"
        table.add_row(d.metric, fmt(d.a), fmt(d.b), f"[{colour}]{change}[/]" if colour else change)
    out.print(table)
    for key, a, b in c.config:
        say(f"config {key}: {a!r} -> {b!r}")
    say(f"{c.common} questions in both runs: {len(c.won)} changes won, {len(c.lost)} lost")
    for side, changes in (("won", c.won), ("lost", c.lost)):
        for moved in changes[:limit]:
            q = moved.question
            line = Text.assemble(f"  {side:4} {q.id}: {moved.what}  ", (q.question, "dim"))
            out.print(line, soft_wrap=True)
        if len(changes) > limit:
            say(f"  ... and {len(changes) - limit} more {side}")


def print_calibration(
    rows: Sequence[Row],
    chosen: Row | None,
    current: Row | None,
    gate: tuple[str, float],
    coverage: float,
) -> None:
    table = Table("threshold", "answerable kept", "unanswerable refused", "balanced accuracy")
    marked = [*rows, *(r for r in (chosen, current) if r is not None and r not in rows)]
    for row in sorted(marked, key=lambda r: r.threshold):
        note = " (best)" if row is chosen else " (current)" if row is current else ""
        table.add_row(
            f"{row.threshold:.4f}{note}",
            f"{row.kept}/{row.answerable} ({row.kept_share:.0%})",
            f"{row.refused}/{row.unanswerable} ({row.refused_share:.0%})",
            f"{row.balanced_accuracy:.3f}",
        )
    out.print(table)
    if coverage:
        out.print(f"term-coverage check held at retrieval.min_term_coverage = {coverage:g}")
    if chosen is None:
        out.print("[yellow]no question retrieved anything: nothing to calibrate[/]")
        return
    say(
        f"best threshold {chosen.threshold:.4f}: keeps {chosen.kept_share:.0%} of answerable, "
        f"refuses {chosen.refused_share:.0%} of unanswerable (balanced accuracy "
        f"{chosen.balanced_accuracy:.3f}, Youden's J {2 * chosen.balanced_accuracy - 1:.3f})"
    )
    if rows and chosen.threshold <= rows[0].threshold:
        say(
            "that is the lowest best relevance observed: the threshold refuses nothing here,"
            " the other gate checks do all the refusing"
        )
    say(f"set {gate[0]} = {chosen.threshold:.4f} (now {gate[1]:g})")
