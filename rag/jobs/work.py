"""What a job does, whichever process runs it: ingest its paths; for an upload, settle after.

An upload's job names where its bytes are kept (``[storage] url``: a file of the upload
folder, or an object of a bucket every machine reaches); the worker ingests a local copy
(the file itself in a folder store) recorded as that location. An upload that failed (or
was skipped) loses its bytes: its record keeps the reason, which is all the client can
use, and the same bytes uploaded again are answered from that record
(``rag.web.upload_store``).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from rag.db.tables import Document, Job
from rag.domain import IngestReport, Staged
from rag.errors import NotFound
from rag.ports import BlobStore, Progress, QAService
from rag.storage import cleanup

FAILED = ("failed", "skipped")
"""Upload outcomes whose bytes are removed: the record and its reason are what is kept."""


async def perform(
    service: QAService, job: Job, progress: Progress, blobs: BlobStore | None = None
) -> IngestReport:
    if job.kind == "upload" and job.document_id is not None:
        if blobs is None:
            raise NotFound("this process has no blob store to read uploads from")
        return await ingest_upload(service, blobs, job.document_id, job.paths[0], progress)
    return await service.ingest([Path(p) for p in job.paths], progress)


async def ingest_upload(
    service: QAService, blobs: BlobStore, doc_id: str, location: str, progress: Progress
) -> IngestReport:
    """Ingest the upload's bytes from the store, then remove them if it failed."""
    key = blobs.key_of(location)
    if key is None:
        raise NotFound(f"{location} is not in the configured store ([storage] url)")
    async with blobs.fetched(key) as copy:
        staged = Staged(copy=copy, source=location, root=blobs.root, name=key)
        report = await service.ingest([staged], progress)
    await settle_upload(service, blobs, doc_id, location)
    return report


async def settle_upload(service: QAService, blobs: BlobStore, doc_id: str, location: str) -> None:
    """Remove the bytes of an upload that failed: its record says why, they are no use."""
    sessions = service.sessions
    assert sessions is not None  # only a service with a database runs jobs
    async with sessions() as session, session.begin():
        status = await session.scalar(select(Document.status).where(Document.id == doc_id))
        if status in FAILED:
            await cleanup.schedule(session, location)
    if status in FAILED:
        await cleanup.drain(sessions, blobs, location)
