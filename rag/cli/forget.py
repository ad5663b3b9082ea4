"""``rag forget``: remove the documents of a file or folder from the index."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from rag.cli import common
from rag.errors import NotFound

if TYPE_CHECKING:
    from rag.service import RagService


async def _under(service: RagService, resolved: Path) -> list[str]:
    from rag.ingest.store import documents_under

    async with service.sessions() as session:
        return await documents_under(session, resolved)


def resolved(path: Path) -> Path:
    # Ingestion records resolved paths; the folder itself may be gone by now.
    return path.expanduser().resolve()


async def count_under(service: RagService, resolved: Path) -> int:
    return len(await _under(service, resolved))


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def forget(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Remove every document under PATHs (files or folders) from the index.

    Each goes the way DELETE /v1/documents/{id} goes: its chunks and vectors leave the
    database and the serving index (Vectorize included). The files themselves are not
    touched; `rag ingest PATH` brings them back. A PATH with no document is an error
    (exit 2), so a typo is not taken for success.

    \b
    Example:
      rag forget corpus/            # the bundled handbook, after `rag serve` put it in
    """
    from rag.jobs.queue import JobQueue
    from rag.jobs.worker import cancel_job
    from rag.service import open_service

    settings = common.settings(ctx)

    async def go() -> list[tuple[Path, int, int]]:
        done = []
        async with open_service(settings) as service:
            queue = JobQueue(service.sessions, settings.jobs)
            for path in paths:
                ids = await _under(service, resolved(path))
                if not ids:
                    raise NotFound(f"no document in the index under {path}")
                chunks = 0
                for doc_id in ids:
                    # An upload's job would write its document back after the delete.
                    if (live := await queue.live_for(doc_id)) is not None:
                        await cancel_job(queue, None, live.id, "the document was forgotten")
                    deleted = await service.delete_document(doc_id)
                    chunks += len(deleted[1]) if deleted is not None else 0
                done.append((path, len(ids), chunks))
        return done

    for path, documents, chunks in common.run(go):
        click.echo(f"{path}: {documents} documents and {chunks} chunks removed from the index")
