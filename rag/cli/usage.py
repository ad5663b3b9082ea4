"""``rag usage``: what the models cost, per UTC day, from the ledger in the database.

It reads the database only, so it needs no Cloudflare credentials and loads no model.
"""

from __future__ import annotations

import json
from typing import Any

import click
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
    """Show neurons, dollars and tokens per UTC day, and today's budget.

    Workers AI's free allocation and the [budget] daily_neurons cap both reset at
    00:00 UTC; calls are costed from the response's usage or counted tokens.

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
    table = Table(
        "day (UTC)",
        "calls",
        "tokens in",
        "tokens out",
        "neurons",
        "USD (list)",
        "billable",
        "free left",
    )
    for row in reversed(report["days"]):
        table.add_row(
            row["day"],
            str(row["calls"]),
            f"{row['input_tokens']:,}",
            f"{row['output_tokens']:,}",
            f"{row['neurons']:,.1f}",
            f"{row['usd']:.4f}",
            f"{row['billable_usd']:.4f}",
            f"{row['free_neurons_left']:,.0f}",
        )
    common.out.print(table)
    budget = report["budget"]
    if budget["daily_neurons"] > 0:
        common.say(
            f"budget today: {budget['spent_today']:,.1f} of {budget['daily_neurons']:,.0f} "
            f"neurons spent, {budget['remaining_today']:,.1f} left"
        )
    else:
        common.say(f"no daily budget; {budget['spent_today']:,.1f} neurons spent today")
