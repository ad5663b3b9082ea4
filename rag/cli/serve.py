"""``rag serve``: the web app (Q&A endpoint, chat page, OpenAPI docs) on uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

from rag.cli import common
from rag.cli.keys import with_key_store
from rag.cli.progress import RichProgress
from rag.errors import JobConflict

if TYPE_CHECKING:
    from rag.service import RagService


@click.command()
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

    from rag.logs import RepeatFilter, guard_logging
    from rag.service import open_service
    from rag.web.access_log import configure_access_log
    from rag.web.app import create_app
    from rag.web.auth import access_warning
    from rag.web.origin import host_warning
    from rag.web.server import uvicorn_config

    settings = common.settings(ctx)
    bind_host = host or settings.server.host
    bind_port = port or settings.server.port
    # The app decides whether API keys are required, and which Host names it answers
    # to, from the address it is bound to.
    settings = msgspec.structs.replace(
        settings, server=msgspec.structs.replace(settings.server, host=bind_host, port=bind_port)
    )

    corpus = Path(settings.ingest.corpus)
    ingest_corpus = not no_ingest and corpus.is_dir()

    async def go() -> None:
        async with open_service(settings) as service:
            if ingest_corpus:
                await ingest_bundled_corpus(service, corpus)
            app = create_app(settings, service=service)
            keys = await with_key_store(settings, lambda store: store.active_count())
            for warning in (access_warning(settings, keys), host_warning(settings)):
                if warning:
                    common.note("WARNING:", warning, "bold red")
            configure_access_log()
            config = uvicorn_config(app, settings.server, log_level="info")
            # After uvicorn.Config, which installs the server's log handlers.
            guard_logging(RepeatFilter())
            common.say(
                f"serving on http://{bind_host}:{bind_port}  (OpenAPI: /schema)", console=common.err
            )
            await uvicorn.Server(config).serve()

    common.run(go)


async def ingest_bundled_corpus(service: RagService, corpus: Path) -> None:
    """Ingest ``corpus`` when the index is empty, in one process of all those starting.

    Decided under a database-wide lock (``rag.db.lock``): replicas starting together on
    an empty database wait for the first, find the index full and go on; a process
    killed while it holds the lock frees it, and the next start ingests again. The
    ingest is a job like any other (``rag.jobs``): one already running over the corpus
    elsewhere (a ``rag ingest corpus``) is left to finish while this process serves.
    """
    from rag.db.lock import exclusive
    from rag.jobs.worker import ingest_here

    async with exclusive(service.settings.database_url, "bundled corpus"):
        if not await common.index_is_empty(service):
            return
        common.say(f"the index is empty: ingesting {corpus}/ first", console=common.err)
        try:
            with RichProgress(common.err, enabled=True) as progress:
                report = await ingest_here(
                    service, service.settings.jobs, [corpus], role="rag serve", display=progress
                )
        except JobConflict as exc:
            common.say(f"{exc.message}; serving meanwhile", console=common.err)
            return
        click.echo(report.summary(), err=True)
