"""``rag serve``: the web app (Q&A endpoint, chat page, OpenAPI docs) on uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

from rag.cli import common
from rag.cli.forget import count_under, resolved
from rag.cli.keys import with_key_store
from rag.cli.progress import RichProgress
from rag.errors import JobConflict

if TYPE_CHECKING:
    from rag.config import Settings
    from rag.service import RagService


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--host", default=None, help="Address to bind (default from config).")
@click.option("--port", type=int, default=None, help="Port (default from config).")
@click.option("--no-ingest", is_flag=True, help="Ingest nothing before serving.")
@click.pass_context
def serve(
    ctx: click.Context,
    paths: tuple[Path, ...],
    host: str | None,
    port: int | None,
    no_ingest: bool,
) -> None:
    """Serve the Q&A endpoint (SSE), the chat page and the OpenAPI docs.

    With PATHs, those files and folders are ingested first (unchanged files cost
    nothing) and the bundled handbook is left out. Without, the configured corpus
    (ingest.corpus) is ingested first when the index is empty.

    \b
    Examples:
      rag serve ~/handbook          # answer from your own documents only
      rag serve --port 8080
      curl -N "http://127.0.0.1:8080/v1/ask?q=how+do+I+ingest+a+folder"
    """
    import uvicorn

    from rag.jobs.worker import ingest_here
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
    has_corpus, corpus_at = corpus.is_dir(), resolved(corpus)
    served = [resolved(p) for p in paths]
    # Only when the handbook is not among what was asked for (`rag serve corpus/` is fine).
    mixed = bool(paths) and not any(p == corpus_at or p in corpus_at.parents for p in served)
    if paths:
        with common.failures():
            settings = own_folder(settings, paths)

    async def first_ingest(service: RagService) -> None:
        if not paths:
            if has_corpus:
                await ingest_bundled_corpus(service, corpus)
            return
        common.say(f"ingesting {', '.join(map(str, paths))} first", console=common.err)
        try:
            with RichProgress(common.err, enabled=True) as progress:
                report = await ingest_here(
                    service, settings.jobs, list(paths), role="rag serve", display=progress
                )
            click.echo(report.summary(), err=True)
        except JobConflict as exc:
            # Another replica starting at the same moment: it ingests, this one serves.
            common.say(f"{exc.message}; serving meanwhile", console=common.err)

    async def go() -> None:
        async with open_service(settings) as service:
            if not no_ingest:
                await first_ingest(service)
            if mixed and (left := await count_under(service, corpus_at)):
                # An earlier `rag serve` put the handbook in this index: say how to drop it
                # rather than deleting what the user may have wanted.
                common.note(
                    "note:",
                    f"the index also holds {left} documents of the bundled handbook "
                    f"({corpus}/); `rag forget {corpus}` removes them",
                )
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


def own_folder(settings: Settings, paths: tuple[Path, ...]) -> Settings:
    """Point ``POST /v1/ingest`` at the one folder served, unless configured: its default,
    the bundled handbook, would mix into an index of the user's own documents."""
    from rag.config import check_ranges

    folders = [p for p in paths if p.is_dir()]
    if settings.web.ingest_folder or len(folders) != 1:
        return settings
    web = msgspec.structs.replace(settings.web, ingest_folder=str(folders[0]))
    changed = msgspec.structs.replace(settings, web=web)
    check_ranges(changed)  # the folder must not overlap the uploads'
    return changed
