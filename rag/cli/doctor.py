"""``rag doctor``: is this Cloudflare account ready for the service? A short report.

Exit codes follow ``rag.cli.common``: 0 when every check passes, 1 when any fails, 2
when the settings or credentials are missing before anything can be asked.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import httpx
from rich import box
from rich.table import Table

from rag.cli import common
from rag.config import Settings


async def diagnose(settings: Settings) -> dict[str, Any]:
    """Every check, today's neurons from the ledger, and the rate-limit headers seen."""
    from rag.backends.cloudflare import doctor
    from rag.backends.cloudflare.client import CloudflareClient
    from rag.cli import cloudflare
    from rag.cli.usage import usage_report

    headers = doctor.HeaderLog(cloudflare.TRANSPORT or httpx.AsyncHTTPTransport())
    client = CloudflareClient.from_settings(settings, transport=headers)
    async with client:
        checks = await doctor.run_checks(client, settings)
    budget = (await usage_report(settings, 1))["budget"]
    return {
        "ok": all(check.ok for check in checks),
        "checks": [{f: getattr(c, f) for f in c.__struct_fields__} for c in checks],
        "neurons_today": budget,
        "rate_limit_headers": headers.seen,
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check the Cloudflare token, the Vectorize index and every configured model.

    One tiny call each (a few neurons in all): the token's status, the index's
    dimension and metric against the embedder's, one embedding, the reranker's raw
    scores on a relevant and an irrelevant pair (and the scale they show), a chat
    stream of 8 tokens (whether it reports usage). Then today's neurons from the
    ledger and the rate-limit headers Cloudflare sent. Nothing is written to Vectorize.
    Exits 1 when any check fails.

    \b
    Examples:
      rag doctor
      rag doctor --json
    """
    settings = common.settings(ctx)
    report = common.run(lambda: diagnose(settings))
    if as_json:
        common.out.out(json.dumps(report, indent=2))
    else:
        _print(report)
    if not report["ok"]:
        sys.exit(common.FAILURE)


def _print(report: dict[str, Any]) -> None:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("check", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("detail")
    for check in report["checks"]:
        mark = common.literal("ok", "green") if check["ok"] else common.literal("FAIL", "bold red")
        table.add_row(common.literal(check["name"]), mark, common.literal(check["detail"]))
    common.out.print(table)
    budget = report["neurons_today"]
    common.say(f"neurons today (ledger): {budget['spent_today']:,.1f}")
    seen = report["rate_limit_headers"]
    limits = ", ".join(f"{name}: {value}" for name, value in sorted(seen.items()))
    common.say(f"rate-limit headers: {limits or 'none seen'}")
