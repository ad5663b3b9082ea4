"""``rag eval [run] DATASET`` and ``rag eval calibrate``: the commands that run the
pipeline over a labelled dataset; what they share with the stored-run commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from rag.cli import common
from rag.cli.eval_output import print_calibration, show
from rag.cli.progress import EvalProgress
from rag.config import Settings
from rag.errors import RagError
from rag.evaluate import calibrate as cal
from rag.evaluate import summary
from rag.evaluate.results import RunRecord
from rag.ports import Embedder


@dataclass
class EvalEnv:
    """What the commands run with; tests pass one as ``obj`` to inject a fake embedder."""

    settings: Settings
    embedder: Embedder | None = None


def env_of(ctx: click.Context) -> EvalEnv:
    obj = ctx.find_root().obj
    if isinstance(obj, EvalEnv):
        return obj
    return EvalEnv(common.settings(ctx))


def gates(
    fail_under: Sequence[str], fail_over: Sequence[str], baseline: Path | None
) -> list[summary.Gate]:
    """Every gate, checked against the known metric names before anything runs."""
    gates = [summary.parse_gate(g) for g in fail_under]
    gates += [summary.parse_gate(g, at_most=True) for g in fail_over]
    if baseline is not None:
        gates += summary.baseline_gates(baseline)
    known = summary.summarise([])
    for gate in gates:
        summary.lookup(known, gate.metric)
    return gates


def judge(run: RunRecord, gates: Sequence[summary.Gate]) -> None:
    """Exit 1 when a figure misses its gate."""
    failures = summary.check(run.metrics, gates)
    for failure in failures:
        common.error(failure, "below the bar:")
    if failures:
        sys.exit(common.FAILURE)
    if gates:
        common.say(f"all {len(gates)} metric gates passed", console=common.err)


@click.command("run")
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

        run = common.run(lambda: replay_run(env.settings, replay, dataset, corpus))
        show(run, as_json, report)
        judge(run, metric_gates)
        return
    if dataset is None:
        raise click.UsageError("give a DATASET (a .jsonl file or a BEIR folder), or --replay RUN")
    options = runner.Options(
        corpus=corpus, limit=limit, top_k=top_k, fresh_embeddings=fresh_embeddings
    )

    async def go() -> runner.Outcome:
        with EvalProgress(common.err, enabled=True) as bar:
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

    outcome = common.run(go)
    for warning in outcome.warnings:
        common.note("warning:", warning)
    show(outcome.record, as_json, report, outcome.gate)
    judge(outcome.record, metric_gates)


@click.command("calibrate")
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
        with EvalProgress(common.err, enabled=True) as bar:
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

    outcome = common.run(go)
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
        common.out.out(json.dumps(data, indent=2))
        return
    print_calibration(cal.table(rows), chosen, current, outcome.gate, outcome.coverage_gate)
