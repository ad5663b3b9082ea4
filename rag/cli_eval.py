"""``rag eval``: evaluate a labelled dataset, and list, show, compare and calibrate runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import msgspec

from rag.errors import RagError
from rag.evaluate import calibrate as cal
from rag.evaluate import printing, summary
from rag.evaluate.commands import (
    EvalEnv,
    env_of,
    err,
    gates,
    judge,
    load,
    out,
    run_async,
    show,
)
from rag.evaluate.progress import EvalProgress

__all__ = ["EvalEnv", "eval_group"]


class _DatasetOrCommand(click.Group):
    """``rag eval DATASET`` and ``rag eval list``: a first word that is no subcommand is
    a dataset (or an option of ``run``), and goes to ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("eval", cls=_DatasetOrCommand)
def eval_group() -> None:
    """Evaluate retrieval, abstention, answers, cost and latency on a labelled dataset.

    A dataset is the project's JSONL (corpus/qa.jsonl; documents in its folder unless
    --corpus says otherwise) or a BEIR folder (corpus.jsonl, queries.jsonl, qrels/*.tsv,
    optional answers.jsonl). Its documents are ingested into a database of their own
    under eval.data_dir, reused while they and the ingestion settings are unchanged.
    Every run is stored in eval.data_dir/runs.db with a fingerprint of what produced it.

    \b
    Examples:
      rag eval corpus/qa.jsonl                      # same as: rag eval run corpus/qa.jsonl
      rag eval ../shared/evaldata/clapnq --limit 50 --report clapnq.html
      rag eval corpus/qa.jsonl --fail-under reranked.recall@5=0.9
      rag eval corpus/qa.jsonl --baseline eval/baseline.json    # the CI gate
      rag eval --replay 20261127-0112-ab12cd        # re-score a stored run, no model calls
      rag eval list
      rag eval compare 20261127-0112 20261127-0140  # id prefixes work
      rag eval calibrate corpus/qa.jsonl            # pick the evidence-gate threshold
    """


@eval_group.command("run")
@click.argument("dataset", required=False, type=click.Path(path_type=Path))
@click.option(
    "--corpus",
    type=click.Path(file_okay=False, path_type=Path),
    help="Documents folder for a JSONL dataset (default: the file's folder).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run as one JSON object.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions.")
@click.option("--top-k", type=int, help="Sources per answer (default retrieval.top_k).")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a self-contained HTML report.",
)
@click.option(
    "--replay",
    metavar="RUN",
    help="Re-score a stored run (labels from DATASET if given); no model calls.",
)
@click.option(
    "--fail-under",
    multiple=True,
    metavar="METRIC=VALUE",
    help="Exit 1 when METRIC < VALUE (e.g. reranked.recall@5=0.9).",
)
@click.option(
    "--fail-over",
    multiple=True,
    metavar="METRIC=VALUE",
    help="Exit 1 when METRIC > VALUE (e.g. abstention.false_refusal=0.1).",
)
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Gate on a baseline file: each figure may drop by its tolerance at most.",
)
@click.option(
    "--fresh-embeddings", is_flag=True, help="Embed questions again instead of using the cache."
)
@click.pass_context
def run_command(
    ctx: click.Context,
    dataset: Path | None,
    corpus: Path | None,
    as_json: bool,
    limit: int | None,
    top_k: int | None,
    report: Path | None,
    replay: str | None,
    fail_under: tuple[str, ...],
    fail_over: tuple[str, ...],
    baseline: Path | None,
    fresh_embeddings: bool,
) -> None:
    """Evaluate DATASET (or re-score a stored run with --replay) and store the run."""
    from rag.evaluate import runner
    from rag.evaluate.store import open_store

    env = env_of(ctx)
    try:
        metric_gates = gates(fail_under, fail_over, baseline)
    except RagError as exc:
        raise click.UsageError(exc.message) from None
    if replay is not None:
        from rag.evaluate.relabel import replay_run

        run = run_async(lambda: replay_run(env.settings, replay, dataset, corpus))
        show(run, as_json, report)
        judge(run, metric_gates)
        return
    if dataset is None:
        raise click.UsageError("give a DATASET (a .jsonl file or a BEIR folder), or --replay RUN")
    options = runner.Options(
        corpus=corpus, limit=limit, top_k=top_k, fresh_embeddings=fresh_embeddings
    )

    async def go() -> runner.Outcome:
        with EvalProgress(err, enabled=True) as bar:
            outcome = await runner.run(
                env.settings,
                dataset,
                options,
                embedder=env.embedder,
                ingest_progress=bar,
                start=bar.begin_questions,
                tick=bar.tick,
            )
        async with open_store(env.settings.eval.data_dir) as store:
            await store.save(outcome.record)
        return outcome

    outcome = run_async(go)
    for warning in outcome.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    show(outcome.record, as_json, report, outcome.gate)
    judge(outcome.record, metric_gates)


@eval_group.command("list")
@click.option(
    "--limit", type=int, default=30, show_default=True, help="How many runs, newest first."
)
@click.pass_context
def list_command(ctx: click.Context, limit: int) -> None:
    """List stored runs, newest first."""
    from rag.evaluate.store import open_store

    async def go() -> list[Any]:
        async with open_store(env_of(ctx).settings.eval.data_dir) as store:
            return await store.runs(limit)

    printing.print_runs(out, run_async(go))


@eval_group.command("show")
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the run as one JSON object.")
@click.option("--questions", is_flag=True, help="Also print every question's result as JSON lines.")
@click.option(
    "--report", type=click.Path(dir_okay=False, path_type=Path), help="Write the HTML report."
)
@click.pass_context
def show_command(
    ctx: click.Context, run_id: str, as_json: bool, questions: bool, report: Path | None
) -> None:
    """Show a stored run (an unambiguous id prefix will do)."""
    run = run_async(lambda: load(env_of(ctx).settings, run_id))
    show(run, as_json, report)
    if questions:
        for result in run.results:
            out.out(msgspec.json.encode(result).decode())


@eval_group.command("compare")
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option("--limit", type=int, default=20, show_default=True, help="Questions listed per side.")
@click.pass_context
def compare_command(ctx: click.Context, run_a: str, run_b: str, limit: int) -> None:
    """Metric deltas (B - A), fingerprint changes, and questions won and lost."""
    from rag.evaluate.compare import compare

    settings = env_of(ctx).settings
    a = run_async(lambda: load(settings, run_a))
    b = run_async(lambda: load(settings, run_b))
    printing.print_comparison(out, compare(a, b), limit)


@eval_group.command("calibrate")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--corpus",
    type=click.Path(file_okay=False, path_type=Path),
    help="Documents folder for a JSONL dataset.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions.")
@click.option("--json", "as_json", is_flag=True, help="Print the sweep as JSON.")
@click.pass_context
def calibrate_command(
    ctx: click.Context, dataset: Path, corpus: Path | None, limit: int | None, as_json: bool
) -> None:
    """Sweep the evidence-gate threshold and print the one that best separates
    answerable from unanswerable questions (retrieval only; nothing is stored)."""
    from rag.evaluate import runner

    env = env_of(ctx)

    async def go() -> runner.Outcome:
        with EvalProgress(err, enabled=True) as bar:
            return await runner.run(
                env.settings,
                dataset,
                runner.Options(corpus=corpus, limit=limit),
                embedder=env.embedder,
                ingest_progress=bar,
                start=bar.begin_questions,
                tick=bar.tick,
                answer=False,
            )

    outcome = run_async(go)
    results = outcome.record.results
    rows = cal.sweep(results, outcome.coverage_gate)
    chosen = cal.best(rows)
    current = cal.row_at(results, outcome.gate[1], outcome.coverage_gate)
    if as_json:
        data = {
            "dataset": outcome.dataset.name,
            "setting": outcome.gate[0],
            "current": outcome.gate[1],
            "best": None if chosen is None else chosen.as_dict(),
            "sweep": [r.as_dict() for r in rows],
        }
        out.out(json.dumps(data, indent=2))
        return
    printing.print_calibration(
        out, cal.table(rows), chosen, current, outcome.gate, outcome.coverage_gate
    )


@eval_group.command("baseline")
@click.argument("run_id", metavar="RUN")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: eval.baseline."
)
@click.option(
    "--tolerance",
    type=float,
    default=0.02,
    show_default=True,
    help="Allowed absolute drop per figure.",
)
@click.pass_context
def baseline_command(
    ctx: click.Context, run_id: str, output: Path | None, tolerance: float
) -> None:
    """Write a stored run's figures as the baseline that --baseline gates on."""
    settings = env_of(ctx).settings
    run = run_async(lambda: load(settings, run_id))
    target = output or Path(settings.eval.baseline)
    data = summary.baseline_document(run, tolerance)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    out.print(f"baseline written to {target}", highlight=False, soft_wrap=True)
