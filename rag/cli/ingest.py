"""``rag ingest``: index files and folders, with a progress bar and a one-line summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rag.cli import common
from rag.cli.cloudflare import wait_for_index
from rag.cli.progress import RichProgress
from rag.domain import IngestReport


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--wait", is_flag=True, help="cloudflare: block until Vectorize serves the writes.")
@click.option(
    "--wait-timeout", type=float, default=600.0, show_default=True, help="Seconds --wait may block."
)
@click.pass_context
def ingest(
    ctx: click.Context, paths: tuple[Path, ...], as_json: bool, wait: bool, wait_timeout: float
) -> None:
    """Index files and folders (Markdown, text, reStructuredText, HTML, PDF, images).

    Unchanged files are not embedded again; files gone from a folder lose their
    document; unreadable files are recorded with a reason and the batch goes on.
    While another run, upload job or worker ingests the same paths, this one refuses
    (exit 1) and names it.

    \b
    Example:
      rag ingest corpus/ ~/handbook/policies.pdf --json
      rag ingest corpus/ --wait     # cloudflare: return once queries see the new vectors
    """
    from rag.jobs.worker import ingest_here
    from rag.service import open_service

    settings = common.settings(ctx)

    async def go() -> tuple[IngestReport, str]:
        async with open_service(settings) as service:
            with RichProgress(common.err, enabled=not as_json) as progress:
                # A job row like any other, run here: a second run over the same paths
                # (here, on a replica, in a worker) is refused by name instead of
                # embedding it all again.
                report = await ingest_here(
                    service, settings.jobs, list(paths), role="rag ingest", display=progress
                )
            # Vectorize applies writes asynchronously; the local index already has them.
            waited = ""
            if wait and settings.backend == "cloudflare":
                waited = await wait_for_index(service.index, wait_timeout, quiet=as_json)
            return report, waited

    report, waited = common.run(go)
    if as_json:
        common.out.print_json(json.dumps(_report_dict(report)))
    else:
        for problem in report.problems:
            common.note(problem["status"], f"{problem['path']}: {problem['reason']}")
        click.echo(report.summary())
    if waited:
        common.fail(waited)


def _report_dict(report: IngestReport) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        **report.counts(),
        "seconds": round(report.seconds, 3),
        "problems": report.problems,
    }
