"""What a job does, whichever process runs it: ingest its paths; for an upload, settle after.

An upload that failed (or was skipped) loses its file: its record keeps the reason,
which is all the client can use, and the same bytes uploaded again are answered from
that record (``rag.web.upload_store``).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from sqlalchemy import select

from rag.db.tables import Document, Job
from rag.domain import IngestReport
from rag.ports import Progress, QAService

FAILED = ("failed", "skipped")
"""Upload outcomes whose file is removed: the record and its reason are what is kept."""


async def perform(service: QAService, job: Job, progress: Progress) -> IngestReport:
    paths = [Path(p) for p in job.paths]
    report = await service.ingest(paths, progress)
    if job.kind == "upload" and job.document_id is not None:
        await settle_upload(service, job.document_id, paths[0])
    return report


async def settle_upload(service: QAService, doc_id: str, path: Path) -> None:
    """Remove the file of an upload that failed: its record says why, the bytes are no use."""
    sessions = service.sessions
    assert sessions is not None  # only a service with a database runs jobs
    async with sessions() as session:
        status = await session.scalar(select(Document.status).where(Document.id == doc_id))
    if status in FAILED:
        await asyncio.to_thread(unlink, path)


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
