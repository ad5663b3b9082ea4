"""Uploads as documents: recorded before they are named, ingested by a job, settled after.

An upload goes through four steps, and a crash after any of them leaves a state that
``recover`` settles when the web app starts again:

1. The bytes go to a hidden ``.upload-<random>.part`` file and are checked
   (``rag.web.uploads.receive``). A crash leaves a stray ``.part`` and no record: the
   client never got an answer, so the file is removed.
2. A ``pending`` document is recorded under the file's final name, in one step with the
   same-bytes lookup and the quota check. A crash leaves a pending record whose file is
   missing (and a stray ``.part``): both go, for the same reason.
3. The ``.part`` is linked under the final name, and the client gets its 202. A crash
   leaves a pending record with its file and no job: it is queued.
4. A job row is queued (``rag.jobs``) and the client gets its 202; a worker ingests the
   file: ``ok``, or ``failed``/``skipped`` with the reason, and a file that failed is
   removed (its record keeps the reason, which is all the client can use). A crash
   mid-ingest leaves the job's row: still queued, or running with a heartbeat that goes
   stale, after which a worker takes it up again; a crash before the removal leaves a
   failed record with a file (removed).

Files in the folder that no record names (copied in by hand, or stored by an older
version, which wrote the file before any record) are recorded as the anonymous
client's and queued: whatever they are, the API can then see and delete them, and a
file is only ever removed by the service when its record says why.

The same bytes uploaded again, under any name, are the same upload: the existing
record answers, and nothing is stored twice. That includes a failed upload, which
keeps failing the same way; deleting its record allows a new try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag.config import Settings
from rag.db.tables import Document, Job
from rag.errors import JobConflict, RagError
from rag.ingest import store
from rag.jobs.queue import JobQueue
from rag.jobs.work import FAILED, unlink
from rag.ports import QAService
from rag.web import uploads

log = logging.getLogger(__name__)

MB = 1024 * 1024


class QuotaExceeded(RagError):
    status_code = 413
    code = "quota_exceeded"


@dataclass(frozen=True, slots=True)
class Admitted:
    document: Document
    created: bool
    """False when the same bytes were already uploaded: nothing new was stored."""


@dataclass
class Recovered:
    """What ``recover`` found at start, for its log line and the tests."""

    queued: int = 0
    forgotten: int = 0
    """Pending records whose file never got its name (the client had no answer)."""
    adopted: int = 0
    """Files no record named, recorded now."""
    removed: int = 0
    """Files of failed uploads, and temporary files of interrupted ones."""


class UploadStore:
    """The upload folder and the documents recorded for it; one per web app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.upload_folder.expanduser().resolve()
        # Held for the lookup, the quota check and the record together (milliseconds),
        # never for the transfer or the ingestion.
        self._lock = asyncio.Lock()

    async def admit(
        self,
        sessions: async_sessionmaker[AsyncSession],
        received: uploads.Received,
        name: str,
        owner: int | None,
    ) -> Admitted:
        """Record the received file as a pending document and give it its name."""
        try:
            async with self._lock:
                async with sessions() as session:
                    same = await session.scalar(
                        select(Document)
                        .where(self._uploaded(), Document.sha256 == received.sha256)
                        .order_by(Document.created_at)
                        .limit(1)
                    )
                    if same is not None:
                        return Admitted(same, created=False)
                    await self._check_quota(session, owner, received.size)
                for target in uploads.candidates(self.folder, name):
                    if await asyncio.to_thread(os.path.lexists, target):
                        continue
                    doc = await _record(
                        sessions, self.folder, target, received.sha256, received.size, owner
                    )
                    if doc is None:
                        continue  # a record names it (its file is gone): never reuse a name
                    if await asyncio.to_thread(uploads.link, received.part, target):
                        return Admitted(doc, created=True)
                    await _forget(sessions, doc.id)  # someone else's file took the name
                raise AssertionError("unreachable: candidates raises when it runs out")
        finally:
            await asyncio.to_thread(received.discard)

    async def _check_quota(self, session: AsyncSession, owner: int | None, size: int) -> None:
        limit = self.settings.uploads.max_total_mb
        if limit <= 0:
            return
        owned = Document.owner_key_id.is_(None) if owner is None else Document.owner_key_id == owner
        kept = await session.scalar(
            select(func.coalesce(func.sum(Document.size), 0)).where(
                self._uploaded(), owned, Document.status.not_in(FAILED)
            )
        )
        total = int(kept or 0) + size
        if total > limit * MB:
            who = "this API key" if owner is not None else "uploads made without an API key"
            raise QuotaExceeded(
                f"this upload ({size / MB:.2f} MB) would bring the files kept for {who} to "
                f"{total / MB:.2f} MB, over the {limit:g} MB limit ([uploads] max_total_mb): "
                "delete documents to make room"
            )

    def _uploaded(self) -> ColumnElement[bool]:
        return Document.root == str(self.folder)

    async def queue(self, jobs: JobQueue, doc_id: str, path: Path) -> Job:
        """The job that ingests an uploaded file: a new one, or the live one it has."""
        try:
            return await jobs.enqueue("upload", [path], document_id=doc_id)
        except JobConflict as exc:
            live = await jobs.get(exc.job_id)
            if live is None or live.document_id != doc_id:
                raise
            return live

    async def recover(self, service: QAService, jobs: JobQueue) -> Recovered:
        """Settle what a killed process left in the folder and the database (module doc)."""
        found = Recovered()
        sessions = service.sessions
        if sessions is None:
            return found
        parts, files = await asyncio.to_thread(_entries, self.folder)
        for part in parts:
            await asyncio.to_thread(unlink, part)
            found.removed += 1
        async with sessions() as session:
            docs = list(await session.scalars(select(Document).where(self._uploaded())))
        named = {doc.source for doc in docs}
        for doc in docs:
            path = Path(doc.source)
            present = path in files
            if doc.status == "pending" and present:
                # Most have their job row still (queued, or running with a heartbeat that
                # goes stale); one killed before its job was written gets one now.
                if await jobs.live_for(doc.id) is None:
                    await self.queue(jobs, doc.id, path)
                    found.queued += 1
            elif doc.status == "pending":
                await _forget(sessions, doc.id)
                found.forgotten += 1
            elif doc.status in FAILED and present:
                await asyncio.to_thread(unlink, path)
                found.removed += 1
        for path in sorted(files):
            if str(path) in named:
                continue
            sha, size = await asyncio.to_thread(_facts, path)
            if await _record(sessions, self.folder, path, sha, size, None) is not None:
                await self.queue(jobs, store.document_id(str(path)), path)
                found.adopted += 1
        return found


async def _record(
    sessions: async_sessionmaker[AsyncSession],
    folder: Path,
    target: Path,
    sha256: str,
    size: int,
    owner: int | None,
) -> Document | None:
    """A pending document for ``target``; None when a record already has that source."""
    doc = Document(
        id=store.document_id(str(target)),
        source=str(target),
        root=str(folder),
        path=target.name,
        title=target.name,
        media_type="",
        sha256=sha256,
        size=size,
        mtime_ns=0,
        pages=None,
        status="pending",
        reason=None,
        # No fingerprint: the ingest runner never takes a pending record for "unchanged".
        chunker="",
        owner_key_id=owner,
    )
    try:
        async with sessions() as session, session.begin():
            session.add(doc)
    except IntegrityError:
        return None
    return doc


async def _forget(sessions: async_sessionmaker[AsyncSession], doc_id: str) -> None:
    """Delete a pending record (it has no chunks, so no index holds anything of it)."""
    async with sessions() as session, session.begin():
        await session.execute(delete(Document).where(Document.id == doc_id))


def _entries(folder: Path) -> tuple[list[Path], set[Path]]:
    """The temporary files of interrupted uploads, and the stored files, of ``folder``."""
    parts: list[Path] = []
    files: set[Path] = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            if not entry.is_file() or entry.is_symlink():
                continue
            if uploads.is_part(entry):
                parts.append(entry)
            elif not entry.name.startswith("."):
                files.add(entry)
    return parts, files


def _facts(path: Path) -> tuple[str, int]:
    return uploads.sha256_of(path), path.stat().st_size
