"""Uploads as documents: recorded before they are named, ingested by a job, settled after.

The bytes are kept in the blob store ``[storage] url`` names (``rag.storage``): the
upload folder by default, or a bucket every replica and worker reads. An upload goes
through four steps, and a crash after any of them leaves a state that ``recover``
settles when the web app starts again:

1. The bytes go to a hidden ``.upload-<random>.part`` file of this machine's upload
   folder and are checked (``rag.web.uploads.receive``). A crash leaves a stray
   ``.part`` and no record: the client never got an answer, so the file is removed.
2. A ``pending`` document is recorded under the file's final name, in one step with the
   same-bytes lookup and the quota check. A crash leaves a pending record whose bytes
   are missing from the store (and a stray ``.part``): both go, for the same reason,
   once the record is older than ``STRAY_AFTER`` (until then it may be another
   replica's upload, between its record and its put).
3. The bytes are put in the store under that name (never replacing anything), and the
   client gets its 202. A crash leaves a pending record with its bytes: queued again.
4. A job row is queued (``rag.jobs``); a worker on any machine ingests a local copy of
   the bytes (the file itself in a folder store): ``ok``, or ``failed``/``skipped`` with
   the reason, and the bytes of a failed upload are removed (its record keeps the
   reason, which is all the client can use). A crash mid-ingest leaves the job's row:
   still queued, or running with a heartbeat that goes stale, after which a worker takes
   it up again; a crash before the removal leaves a failed record with its bytes
   (removed).

Bytes in the store that no record names (copied in by hand, or stored by an older
version, which wrote the file before any record) are recorded as the anonymous
client's and queued: whatever they are, the API can then see and delete them, and
bytes are only ever removed by the service when a record says why
(``rag.storage.cleanup``, which also retries deletions the store refused).

The same bytes uploaded again, under any name, are the same upload: the existing
record answers, and nothing is stored twice. That includes a failed upload, which
keeps failing the same way; deleting its record allows a new try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag.config import Settings
from rag.db.tables import Document, Job
from rag.errors import JobConflict, RagError
from rag.ingest import store
from rag.jobs.queue import JobQueue
from rag.jobs.work import FAILED
from rag.ports import BlobStore, QAService
from rag.storage import cleanup
from rag.storage.folder import unlink
from rag.web import uploads

log = logging.getLogger(__name__)

MB = 1024 * 1024


STRAY_AFTER = timedelta(minutes=10)
"""Age after which a pending record whose bytes never reached the store is forgotten at
start. A put takes seconds ([uploads] max_mb, [storage] timeout_s); a younger record may be
an upload in flight on another replica sharing the store, and must not be pulled from
under it."""


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
    """The uploads' blob store and the documents recorded for it; one per web app."""

    def __init__(self, settings: Settings, blobs: BlobStore) -> None:
        self.settings = settings
        self.blobs = blobs
        # Where bytes are received and checked: a folder store's own folder, so that a
        # hard link names them there; with a bucket, this machine's upload folder.
        self.folder = (settings.storage_folder or settings.upload_folder).expanduser().resolve()
        # Held for the lookup, the quota check, the record and the put together, so that
        # the same bytes sent twice at once are one upload; never for receiving the bytes
        # from the client or for the ingestion. The put is a hard link in a folder
        # (milliseconds); to a bucket it is the transfer, so a replica stores one upload
        # at a time (0.3 to 1 s for 20 MB to a loopback server, benchmarks/blob_store_bench.py).
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
                for key in uploads.candidates(name):
                    if await self.blobs.exists(key):
                        continue
                    location = self.blobs.location(key)
                    doc = await _record(
                        sessions,
                        self.blobs.root,
                        location,
                        key,
                        received.sha256,
                        received.size,
                        owner,
                    )
                    if doc is None:
                        continue  # a record names it (its file is gone): never reuse a name
                    if await self._put(sessions, doc, received.part):
                        return Admitted(doc, created=True)
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
        return Document.root == self.blobs.root

    async def _put(
        self, sessions: async_sessionmaker[AsyncSession], doc: Document, part: Path
    ) -> bool:
        """Store the recorded upload's bytes under its name; False when the name is taken.

        Whatever stops the put (the name taken, the store out of reach), the record goes:
        it would name bytes that are not there.
        """
        key = self.blobs.key_of(doc.source)
        assert key is not None  # recorded at this store's location a moment ago
        try:
            stored = await self.blobs.put(key, part)
        except Exception:
            await _forget(sessions, doc.id)
            raise
        if not stored:
            await _forget(sessions, doc.id)  # someone else's bytes took the name
        return stored

    async def queue(self, jobs: JobQueue, doc_id: str, location: str) -> Job:
        """The job that ingests an uploaded file: a new one, or the live one it has.
        Whichever worker runs it reads the bytes from the store (``rag.jobs.work``)."""
        try:
            return await jobs.enqueue("upload", [location], document_id=doc_id)
        except JobConflict as exc:
            live = await jobs.get(exc.job_id)
            if live is None or live.document_id != doc_id:
                raise
            return live

    async def remove_garbage(
        self, sessions: async_sessionmaker[AsyncSession], first: str | None = None
    ) -> set[str]:
        """Delete the bytes recorded as garbage (deleted documents, failed uploads), ``first``
        first, and retry those the store refused before; the locations that are gone now."""
        return await cleanup.drain(sessions, self.blobs, first)

    async def recover(self, service: QAService, jobs: JobQueue) -> Recovered:
        """Settle what a killed process left in the store and the database (module doc)."""
        found = Recovered()
        sessions = service.sessions
        if sessions is None:
            return found
        for part in await asyncio.to_thread(_parts, self.folder):
            await asyncio.to_thread(unlink, part)
            found.removed += 1
        await self._remember_locations(sessions)
        found.removed += len(await self.remove_garbage(sessions))
        async with sessions() as session:
            docs = list(await session.scalars(select(Document).where(self._uploaded())))
        keys = set(await self.blobs.keys())
        named = {doc.source for doc in docs} | await cleanup.pending(sessions)
        garbage = False
        for doc in docs:
            present = self.blobs.key_of(doc.source) in keys
            if doc.status == "pending" and present:
                # Most have their job row still (queued, or running with a heartbeat that
                # goes stale); one killed before its job was written gets one now.
                if await jobs.live_for(doc.id) is None:
                    await self.queue(jobs, doc.id, doc.source)
                    found.queued += 1
            elif doc.status == "pending" and _older(doc.created_at, STRAY_AFTER):
                await _forget(sessions, doc.id)
                found.forgotten += 1
            elif doc.status in FAILED and present:
                async with sessions() as session, session.begin():
                    await cleanup.schedule(session, doc.source)
                garbage = True
        if garbage:
            found.removed += len(await self.remove_garbage(sessions))
        for key in sorted(keys):
            location = self.blobs.location(key)
            if location in named:
                continue
            async with self.blobs.fetched(key) as copy:
                sha, size = await asyncio.to_thread(_facts, copy)
            adopted = await _record(sessions, self.blobs.root, location, key, sha, size, None)
            if adopted is not None:
                await self.queue(jobs, store.document_id(location), location)
                found.adopted += 1
        return found

    async def _remember_locations(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Give uploads recorded before there was a blob store their location: the path
        they were stored at is it (only the web app knows which folder held uploads)."""
        async with sessions() as session, session.begin():
            await session.execute(
                update(Document)
                .where(self._uploaded(), Document.blob_uri.is_(None))
                .values(blob_uri=Document.source)
            )


async def _record(
    sessions: async_sessionmaker[AsyncSession],
    root: str,
    location: str,
    name: str,
    sha256: str,
    size: int,
    owner: int | None,
) -> Document | None:
    """A pending document for the bytes at ``location``; None when a record already has it."""
    doc = Document(
        id=store.document_id(location),
        source=location,
        root=root,
        path=name,
        title=name,
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
        blob_uri=location,
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


def _parts(folder: Path) -> list[Path]:
    """The temporary files of interrupted uploads in ``folder``."""
    parts: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            if entry.is_file() and not entry.is_symlink() and uploads.is_part(entry):
                parts.append(entry)
    return parts


def _older(moment: datetime, age: timedelta) -> bool:
    # The database keeps naive UTC (CURRENT_TIMESTAMP).
    return moment < datetime.now(UTC).replace(tzinfo=None) - age


def _facts(path: Path) -> tuple[str, int]:
    return uploads.sha256_of(path), path.stat().st_size
