"""The ``rag`` command group: serve, ingest, ask, search, config, db."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table

from rag.config import Settings, effective, load_settings
from rag.domain import DeltaEvent, DoneEvent, ErrorEvent, SourcesEvent, event_payload
from rag.errors import RagError
from rag.ingest.runner import IngestReport

T = TypeVar("T")
err = Console(stderr=True)
out = Console()


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


def _run(coro: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(coro())  # type: ignore[arg-type]
    except RagError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        sys.exit(2 if exc.status_code == 400 else 1)
    except Exception as exc:
        # A bug or a broken environment: one readable line; RAG_DEBUG=1 shows the traceback.
        if os.environ.get("RAG_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        err.print(
            f"[bold red]unexpected error:[/] {type(exc).__name__}: {first}\n"
            "run again with RAG_DEBUG=1 to see where it happened",
            highlight=False,
        )
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
@click.version_option(package_name="rag")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Cited, streamed answers over your own documents.

    \b
    Examples:
      rag ingest corpus/            # index a folder (again and again: idempotent)
      rag ask "How do I change the port?"
      rag search "evidence gate" --k 5 --json
      rag serve --port 8000         # the Q&A endpoint and chat page
    """
    try:
        ctx.obj = load_settings(config_path)
    except RagError as exc:
        err.print(f"[bold red]configuration error:[/] {exc.message}", highlight=False)
        sys.exit(2)


@main.command()
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
    """Index files and folders (Markdown, text, reStructuredText, HTML, PDF).

    Unchanged files are not embedded again; files gone from a folder lose their
    document; unreadable files are recorded with a reason and the batch goes on.

    \b
    Example:
      rag ingest corpus/ ~/handbook/policies.pdf --json
      rag ingest corpus/ --wait     # cloudflare: return once queries see the new vectors
    """
    from rag.cli_progress import RichProgress
    from rag.service import open_service

    settings = _settings(ctx)
    waited = ""

    async def go() -> IngestReport:
        nonlocal waited
        async with open_service(settings) as service:
            with RichProgress(err, enabled=not as_json) as progress:
                report = await service.ingest(list(paths), progress)
            # Vectorize applies writes asynchronously; the local index already has them.
            if wait and settings.backend == "cloudflare":
                from rag.cli_cloudflare import wait_for_index

                waited = await wait_for_index(service.index, wait_timeout, err, quiet=as_json)
            return report

    report = _run(go)
    if as_json:
        out.print_json(json.dumps(_report_dict(report)))
    else:
        for problem in report.problems:
            err.print(f"[yellow]{problem['status']}[/] {problem['path']}: {problem['reason']}")
        click.echo(report.summary())
    if waited:
        err.print(f"[bold red]error:[/] {waited}", highlight=False)
        sys.exit(1)


def _report_dict(report: IngestReport) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        **report.counts(),
        "seconds": round(report.seconds, 3),
        "problems": report.problems,
    }


@main.command()
@click.argument("question")
@click.option("--top-k", type=int, default=None, help="How many sources to use.")
@click.option("--json", "as_json", is_flag=True, help="Print only the final event as JSON.")
@click.pass_context
def ask(ctx: click.Context, question: str, top_k: int | None, as_json: bool) -> None:
    """Ask a question; the answer streams, then its sources are listed.

    \b
    Example:
      rag ask "What does the evidence gate do?"
    """
    from rag.service import open_service

    settings = _settings(ctx)

    async def go() -> int:
        async with open_service(settings) as service:
            if await service.is_empty():
                err.print("[yellow]the index is empty:[/] run `rag ingest corpus/` first")
            sources: tuple[Any, ...] = ()
            async for event in service.ask(question, top_k):
                if isinstance(event, SourcesEvent):
                    sources = event.sources
                elif isinstance(event, DeltaEvent) and not as_json:
                    # Pieces carry their own spacing (model tokens split words).
                    out.out(event.text, end="", highlight=False)
                elif isinstance(event, ErrorEvent):
                    err.print(f"[bold red]error:[/] {event.message}")
                    return 1
                elif isinstance(event, DoneEvent):
                    if as_json:
                        click.echo(event_payload(event).decode())
                    else:
                        _print_sources(event, sources)
            return 0

    sys.exit(_run(go))


def _print_sources(done: DoneEvent, sources: tuple[Any, ...]) -> None:
    out.print()
    if not done.grounded:
        return
    cited = {c.n for c in done.citations}
    out.print("\n[bold]Sources[/]")
    for source in sources:
        if source.n not in cited:
            continue
        page = f", page {source.page}" if source.page else ""
        out.print(f"  [{source.n}] {source.title} — {source.document}{page}", highlight=False)
    latency = done.latency_ms
    err.print(
        f"[dim]retrieval {latency.retrieve:.0f} ms, first token {latency.first_token or 0:.0f} ms,"
        f" total {latency.total:.0f} ms[/]"
    )


@main.command()
@click.argument("query")
@click.option("--k", "k", type=int, default=10, show_default=True, help="How many hits.")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
@click.pass_context
def search(ctx: click.Context, query: str, k: int, as_json: bool) -> None:
    """Show the ranked chunks a question retrieves, with their scores.

    \b
    Example:
      rag search "pdf timeout" --k 5
    """
    from rag.service import open_service

    settings = _settings(ctx)

    async def go() -> list[Any]:
        async with open_service(settings) as service:
            return await service.search(query, k)

    hits = _run(go)
    if as_json:
        rows = [
            {
                "rank": i,
                "chunk_id": h.chunk_id,
                "document": h.source,
                "title": h.title,
                "page": h.page_start,
                "score": h.score,
                "relevance": h.relevance,
                "dense_rank": h.dense_rank,
                "keyword_rank": h.keyword_rank,
                "heading_path": list(h.heading_path),
                "snippet": h.text[:300],
            }
            for i, h in enumerate(hits, start=1)
        ]
        out.out(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table("#", "score", "cosine", "document", "page", "text")
    for i, h in enumerate(hits, start=1):
        table.add_row(
            str(i),
            f"{h.score:.4f}",
            f"{h.relevance:.3f}",
            h.source,
            str(h.page_start or ""),
            " ".join(h.text.split())[:90],
        )
    out.print(table)


@main.command()
@click.option("--host", default=None, help="Address to bind (default from config).")
@click.option("--port", type=int, default=None, help="Port (default from config).")
@click.option("--no-ingest", is_flag=True, help="Do not ingest the corpus when the index is empty.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, no_ingest: bool) -> None:
    """Serve the Q&A endpoint (SSE) and its OpenAPI docs.

    When the index is empty the configured corpus (ingest.corpus) is ingested first.

    \b
    Example:
      rag serve --port 8080
      curl -N "http://127.0.0.1:8080/v1/ask?q=how+do+I+ingest+a+folder"
    """
    import uvicorn

    from rag.cli_progress import RichProgress
    from rag.keys import KeyStore
    from rag.service import open_service
    from rag.web.access_log import configure_access_log
    from rag.web.app import create_app
    from rag.web.auth import access_warning

    settings = _settings(ctx)
    bind_host = host or settings.server.host
    bind_port = port or settings.server.port
    # The app decides whether API keys are required from the address it is bound to.
    settings = msgspec.structs.replace(
        settings, server=msgspec.structs.replace(settings.server, host=bind_host, port=bind_port)
    )

    corpus = Path(settings.ingest.corpus)
    ingest_corpus = not no_ingest and corpus.is_dir()

    async def go() -> None:
        async with open_service(settings) as service:
            if ingest_corpus and await service.is_empty():
                err.print(f"the index is empty: ingesting {corpus}/ first")
                with RichProgress(err, enabled=True) as progress:
                    report = await service.ingest([corpus], progress)
                click.echo(report.summary(), err=True)
            app = create_app(settings, service=service)
            if warning := access_warning(settings, await KeyStore(service.sessions).active_count()):
                err.print(f"[bold red]WARNING:[/] {warning}", highlight=False)
            configure_access_log()
            # Open SSE streams would hold shutdown for ever; after 5 s they are closed.
            # uvicorn's access log is off: the app logs each request itself, as JSON.
            config = uvicorn.Config(
                app,
                host=bind_host,
                port=bind_port,
                log_level="info",
                access_log=False,
                timeout_graceful_shutdown=5,
            )
            err.print(f"serving on http://{bind_host}:{bind_port}  (OpenAPI: /schema)")
            await uvicorn.Server(config).serve()

    _run(go)


@main.command("config")
@click.pass_context
def show_config(ctx: click.Context) -> None:
    """Print the effective settings (file + environment), secrets masked."""
    out.print_json(json.dumps(effective(_settings(ctx))))


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Migrate the database to the latest schema."""
    from rag.db.engine import upgrade

    settings = _settings(ctx.find_root())
    _run(lambda: upgrade(settings.database_url))
    out.print(f"database at head: {settings.database_url}", highlight=False)


# These command modules reuse this module's helpers, so they are attached last.
from rag.cli_cloudflare import audit, vectorize  # noqa: E402
from rag.cli_eval import eval_group  # noqa: E402
from rag.cli_keys import keys  # noqa: E402
from rag.cli_usage import usage  # noqa: E402

for _command in (vectorize, audit, usage, eval_group, keys):
    main.add_command(_command)
