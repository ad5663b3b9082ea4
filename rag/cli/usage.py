"""``rag usage``: what the models cost, per UTC day, from the ledger in the database.

It reads the database only, so it needs no Cloudflare credentials and loads no model.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich import box
from rich.table import Table

from rag.cli import common
from rag.config import Settings


async def usage_report(settings: Settings, days: int) -> dict[str, Any]:
    from rag.db.engine import create_engine, session_factory, upgrade
    from rag.usage import Ledger

    await upgrade(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        ledger = Ledger(session_factory(engine), settings.prices, settings.budget)
        return await ledger.report(days)
    finally:
        await engine.dispose()


@click.command()
@click.option("--days", type=click.IntRange(1, 366), default=7, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def usage(ctx: click.Context, days: int, as_json: bool) -> None:
    """Show calls, tokens, neurons and dollars per UTC day, and today's budget.

    Workers AI's free allocation and the [budget] daily_neurons cap both reset at
    00:00 UTC; calls are costed from the response's usage or counted tokens. USD is
    the list price of the day's neurons, "billable" what the free allocation leaves
    to pay, "free left" the free neurons the day had left.

    \b
    Examples:
      rag usage                 # the last 7 days
      rag usage --days 30 --json
    """
    settings = common.settings(ctx)
    report = common.run(lambda: usage_report(settings, days))
    if as_json:
        common.out.out(json.dumps(report, indent=2))
        return
    common.out.print(_table(report["days"]))
    budget = report["budget"]
    if budget["daily_neurons"] > 0:
        common.say(
            f"budget today: {budget['spent_today']:,.1f} of {budget['daily_neurons']:,.0f} "
            f"neurons spent, {budget['remaining_today']:,.1f} left"
        )
    else:
        common.say(f"no daily budget; {budget['spent_today']:,.1f} neurons spent today")


def _table(days: list[dict[str, Any]]) -> Table:
    # Fits 80 columns: no borders, short headers, large figures in k and M (--json has
    # them exact); a day is never wrapped or cut.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("UTC day", no_wrap=True, min_width=10)
    for header in ("calls", "tok in", "tok out", "neurons", "USD", "billable", "free left"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in reversed(days):
        table.add_row(
            row["day"],
            _count(row["calls"]),
            _count(row["input_tokens"]),
            _count(row["output_tokens"]),
            _count(row["neurons"], "{:,.1f}"),
            f"{row['usd']:.4f}",
            f"{row['billable_usd']:.4f}",
            _count(row["free_neurons_left"]),
        )
    return table


def _count(value: float, small: str = "{:,.0f}") -> str:
    """``value`` in at most 8 characters: as it is below 100,000, else in k, M or G."""
    if value < 100_000:
        return small.format(value)
    for unit in ("k", "M"):
        value /= 1000
        if round(value, 1) < 1000:
            return f"{value:.1f}{unit}"
    return f"{value / 1000:,.1f}G"
