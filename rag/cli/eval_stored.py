"""``rag eval list | show | compare | baseline``: the runs stored in ``eval.data_dir``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import msgspec

from rag.cli import common
from rag.cli.eval_dataset import env_of
from rag.cli.eval_output import print_comparison, print_runs, show
from rag.config import Settings
from rag.evaluate import summary
from rag.evaluate.results import RunRecord


async def load(settings: Settings, run_id: str) -> RunRecord:
    from rag.evaluate.store import open_store  # sqlalchemy: only when a command needs it

    async with open_store(settings.eval.data_dir) as store:
        return await store.load(run_id)


@click.command("list")
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

    print_runs(common.run(go))


@click.command("show")
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
    run = common.run(lambda: load(env_of(ctx).settings, run_id))
    show(run, as_json, report)
    if questions:
        for result in run.results:
            common.out.out(msgspec.json.encode(result).decode())


@click.command("compare")
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option("--limit", type=int, default=20, show_default=True, help="Questions listed per side.")
@click.pass_context
def compare_command(ctx: click.Context, run_a: str, run_b: str, limit: int) -> None:
    """Metric deltas (B - A), fingerprint changes, and questions won and lost."""
    from rag.evaluate.compare import compare

    settings = env_of(ctx).settings

    async def go() -> tuple[RunRecord, RunRecord]:
        return await load(settings, run_a), await load(settings, run_b)

    print_comparison(compare(*common.run(go)), limit)


@click.command("baseline")
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
    data = summary.baseline_document(common.run(lambda: load(settings, run_id)), tolerance)
    target = output or Path(settings.eval.baseline)
    with common.failures():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    common.say(f"baseline written to {target}")
