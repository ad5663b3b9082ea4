"""What the ``rag eval`` commands share: consoles, the environment they run in, the
async bridge, metric gates and how a run is shown."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click
from rich.console import Console

from rag.config import Settings
from rag.errors import RagError
from rag.evaluate import printing, summary
from rag.evaluate.results import RunRecord
from rag.ports import Embedder

T = TypeVar("T")
err = Console(stderr=True)
out = Console()


@dataclass
class EvalEnv:
    """What the commands run with; tests pass one as ``obj`` to inject a fake embedder."""

    settings: Settings
    embedder: Embedder | None = None


def env_of(ctx: click.Context) -> EvalEnv:
    obj = ctx.find_root().obj
    if isinstance(obj, EvalEnv):
        return obj
    assert isinstance(obj, Settings)
    return EvalEnv(obj)


def run_async(coro: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(coro())  # type: ignore[arg-type]
    except RagError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(2 if exc.status_code in (400, 404) else 1)


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


def show(
    run: RunRecord, as_json: bool, report: Path | None, gate: tuple[str, float] | None = None
) -> None:
    if report is not None:
        from rag.evaluate.report import write_report

        write_report(run, report, gate=gate)
    if as_json:
        out.out(json.dumps(printing.run_json(run), indent=2))
    else:
        printing.print_run(out, run)
        if report is not None:
            out.print(f"report: {report}", highlight=False, soft_wrap=True)


def judge(run: RunRecord, gates: Sequence[summary.Gate]) -> None:
    failures = summary.check(run.metrics, gates)
    for failure in failures:
        err.print(f"[bold red]below the bar:[/] {failure}", highlight=False, soft_wrap=True)
    if failures:
        sys.exit(1)
    if gates:
        err.print(f"all {len(gates)} metric gates passed", highlight=False, soft_wrap=True)


async def load(settings: Settings, run_id: str) -> RunRecord:
    from rag.evaluate.store import open_store  # sqlalchemy: only when a command needs it

    async with open_store(settings.eval.data_dir) as store:
        return await store.load(run_id)
