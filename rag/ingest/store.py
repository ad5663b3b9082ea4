"""Database writes of an ingest run. Each document is written in one transaction.

The transactional outbox: when the serving index is remote (Vectorize), the index writes
a change owes are queued in ``index_outbox`` in the same transaction as the chunk rows
(``outbox=<model id>`` on ``write_document``, ``record_problem`` and
``delete_document``), so a crash can never commit one without the other; the index
drains the queue in batches (``VectorizeIndex.flush``). A local in-memory index follows
``index_log`` instead (below), so it queues nothing (``outbox=None``, the default): the
table never grows on the local backend.

Every transaction that adds or removes vectors also appends them to ``index_log``
after bumping the generation, whatever the backend: that is how every process's
in-memory index learns of every write, its own included (``rag.db.index_log``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Text, cast, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from rag.db import index_log, upsert
from rag.db.tables import (
    Chunk,
    ChunkUnits,
    Document,
    IndexOutbox,
    IngestRun,
    Meta,
    Vector,
    utcnow,
)
from rag.domain import ChunkDraft
from rag.ports import Vectors

GENERATION_KEY = "index_generation"


def document_id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:32]


def chunk_ids(doc_id: str, drafts: Sequence[ChunkDraft]) -> list[str]:
    """Ids from the document and the chunk's text, not its position.

    An unchanged paragraph keeps its id when text is inserted above it, so neither its
    vector nor (on Vectorize) its upsert is redone. Identical texts in one document are
    told apart by their occurrence count.
    """
    seen: dict[str, int] = {}
    ids = []
    for draft in drafts:
        occurrence = seen.get(draft.sha256, 0)
        seen[draft.sha256] = occurrence + 1
        key = f"{doc_id}\x00{draft.sha256}\x00{occurrence}".encode()
        ids.append(hashlib.sha256(key).hexdigest()[:32])
    return ids


@dataclass(frozen=True, slots=True)
class UnitRows:
    """Answer units to store with a document's chunks: (spans, vector blob) per chunk id."""

    version: str
    rows: dict[str, tuple[list[list[Any]], bytes]]


@dataclass(frozen=True, slots=True)
class DocumentFacts:
    source: str
    root: str
    path: str
    sha256: str
    size: int
    mtime_ns: int


async def find_document(session: AsyncSession, source: str) -> Document | None:
    return await session.scalar(select(Document).where(Document.source == source))


async def chunk_ids_of(session: AsyncSession, doc_id: str) -> list[str]:
    rows = await session.scalars(select(Chunk.id).where(Chunk.document_id == doc_id))
    return list(rows)


async def has_all_vectors(session: AsyncSession, doc_id: str, model_id: str) -> bool:
    chunks = await session.scalar(
        select(func.count()).select_from(Chunk).where(Chunk.document_id == doc_id)
    )
    vectors = await session.scalar(
        select(func.count())
        .select_from(Vector)
        .join(Chunk, Chunk.id == Vector.chunk_id)
        .where(Chunk.document_id == doc_id, Vector.model_id == model_id)
    )
    return chunks == vectors


async def has_all_units(session: AsyncSession, doc_id: str, version: str) -> bool:
    """Whether every chunk of the document has its answer units of ``version``."""
    missing = await session.scalar(
        select(func.count())
        .select_from(Chunk)
        .outerjoin(ChunkUnits, (ChunkUnits.chunk_id == Chunk.id) & (ChunkUnits.version == version))
        .where(Chunk.document_id == doc_id, ChunkUnits.chunk_id.is_(None))
    )
    return not missing


async def with_units(session: AsyncSession, ids: Sequence[str], version: str) -> set[str]:
    """The chunk ids among ``ids`` that already have answer units of ``version``."""
    have: set[str] = set()
    wanted = list(ids)
    for start in range(0, len(wanted), 500):
        rows = await session.scalars(
            select(ChunkUnits.chunk_id).where(
                ChunkUnits.version == version, ChunkUnits.chunk_id.in_(wanted[start : start + 500])
            )
        )
        have.update(rows)
    return have


async def known_vectors(
    session: AsyncSession, shas: Sequence[str], model_id: str
) -> dict[str, bytes]:
    """Stored vectors by chunk text hash: text that was embedded once is never embedded again."""
    found: dict[str, bytes] = {}
    wanted = list(dict.fromkeys(shas))
    for start in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
        rows = await session.execute(
            select(Chunk.sha256, Vector.vector)
            .join(Vector, Vector.chunk_id == Chunk.id)
            .where(Chunk.sha256.in_(wanted[start : start + 500]), Vector.model_id == model_id)
        )
        for sha, blob in rows:
            found.setdefault(sha, blob)
    return found


async def without_vector(
    session: AsyncSession, vectors: dict[str, bytes], model_id: str
) -> dict[str, bytes]:
    """The entries of ``vectors`` whose chunk has no stored vector for ``model_id`` yet."""
    ids = list(vectors)
    have: set[str] = set()
    for start in range(0, len(ids), 500):
        rows = await session.scalars(
            select(Vector.chunk_id).where(
                Vector.model_id == model_id, Vector.chunk_id.in_(ids[start : start + 500])
            )
        )
        have.update(rows)
    return {cid: blob for cid, blob in vectors.items() if cid not in have}


async def enqueue(session: AsyncSession, model_id: str, op: str, chunk_ids: Sequence[str]) -> None:
    """Queue index writes (``op`` is upsert or delete) in the caller's transaction."""
    if chunk_ids:
        rows = [{"model_id": model_id, "chunk_id": cid, "op": op} for cid in chunk_ids]
        await session.execute(insert(IndexOutbox), rows)


async def record_problem(
    session: AsyncSession,
    facts: DocumentFacts,
    status: str,
    reason: str,
    fingerprint: str,
    *,
    outbox: str | None = None,
) -> list[str]:
    """Mark a file skipped or failed; it keeps no chunks. Returns the chunk ids it lost.

    ``outbox``: the model id to queue the index deletes under (see the module doc).
    """
    doc_id = document_id(facts.source)
    # The document's row first, as ``write_document`` does: on PostgreSQL its row lock
    # makes a second run over the same file wait, always in the same order (no deadlock).
    await _upsert_document(
        session, facts, doc_id, status=status, reason=reason, fingerprint=fingerprint
    )
    lost = await chunk_ids_of(session, doc_id)
    await session.execute(delete(Chunk).where(Chunk.document_id == doc_id))
    if outbox is not None:
        await enqueue(session, outbox, "delete", lost)
    generation = await bump_generation(session)
    await index_log.append(session, generation, added=(), removed=lost)
    return lost


async def write_document(
    session: AsyncSession,
    facts: DocumentFacts,
    *,
    title: str,
    media_type: str,
    pages: int | None,
    fingerprint: str,
    drafts: Sequence[ChunkDraft],
    ids: Sequence[str],
    new_vectors: dict[str, bytes],
    model_id: str,
    dimension: int,
    outbox: str | None = None,
    units: UnitRows | None = None,
) -> list[str]:
    """Replace a document's chunks with ``drafts``; returns the chunk ids that went away.

    ``outbox``: the model id to queue the index writes under (see the module doc): a
    delete for each id that went away, an upsert for each of ``new_vectors``.
    ``units``: answer units to store (or replace) per chunk id, under their version.
    """
    doc_id = document_id(facts.source)
    await _upsert_document(
        session,
        facts,
        doc_id,
        status="ok",
        reason=None,
        fingerprint=fingerprint,
        title=title,
        media_type=media_type,
        pages=pages,
    )
    old = set(await chunk_ids_of(session, doc_id))
    gone = sorted(old - set(ids))
    for start in range(0, len(gone), 500):
        await session.execute(delete(Chunk).where(Chunk.id.in_(gone[start : start + 500])))
    added = []
    for chunk_id, draft in zip(ids, drafts, strict=True):
        values = {
            "ordinal": draft.ordinal,
            "page_start": draft.page_start,
            "page_end": draft.page_end,
            "char_start": draft.char_start,
            "char_end": draft.char_end,
            "heading_path": list(draft.heading_path),
            "token_count": draft.token_count,
            "recognised": draft.confidence is not None,
            "confidence": draft.confidence,
        }
        if chunk_id in old:
            # Same id means same text: only its place in the document (or, read again by
            # OCR, the confidence in it) can have moved.
            await session.execute(update(Chunk).where(Chunk.id == chunk_id).values(**values))
        else:
            added.append(
                {"id": chunk_id, "document_id": doc_id, "text": draft.text, "sha256": draft.sha256}
                | values
            )
    # ON CONFLICT DO NOTHING: another run over the same file may have written the same
    # chunk (same id, same text) or vector since this one looked.
    if added:
        await session.execute(upsert.insert(session, Chunk).on_conflict_do_nothing(), added)
    if new_vectors:
        rows = [
            {"chunk_id": cid, "model_id": model_id, "dimension": dimension, "vector": blob}
            for cid, blob in new_vectors.items()
        ]
        await session.execute(upsert.insert(session, Vector).on_conflict_do_nothing(), rows)
    if units is not None and units.rows:
        replaced = list(units.rows)
        for start in range(0, len(replaced), 500):
            await session.execute(
                delete(ChunkUnits).where(ChunkUnits.chunk_id.in_(replaced[start : start + 500]))
            )
        for chunk_id, (spans, blob) in units.rows.items():
            session.add(
                ChunkUnits(chunk_id=chunk_id, version=units.version, spans=spans, vectors=blob)
            )
    if outbox is not None:
        await enqueue(session, outbox, "delete", gone)
        await enqueue(session, outbox, "upsert", list(new_vectors))
    generation = await bump_generation(session)
    await index_log.append(session, generation, added=list(new_vectors), removed=gone)
    return gone


async def _upsert_document(
    session: AsyncSession,
    facts: DocumentFacts,
    doc_id: str,
    *,
    status: str,
    reason: str | None,
    fingerprint: str,
    title: str | None = None,
    media_type: str | None = None,
    pages: int | None = None,
) -> None:
    # One statement, not a lookup and then an insert: two runs meeting on one file (two
    # `rag ingest` over one folder) both write it, the second over the first.
    now = datetime.now(UTC).replace(tzinfo=None)
    values = {
        "root": facts.root,
        "path": facts.path,
        "sha256": facts.sha256,
        "size": facts.size,
        "mtime_ns": facts.mtime_ns,
        "status": status,
        "reason": reason,
        "chunker": fingerprint,
        "pages": pages,
        "updated_at": now,
    }
    statement = upsert.insert(session, Document).values(
        id=doc_id,
        source=facts.source,
        title=title if title is not None else facts.path,
        media_type=media_type or "",
        **values,
    )
    # No new title or media type keeps the stored ones (a failed re-read knows neither).
    kept_title = func.coalesce(func.nullif(Document.title, ""), facts.path)
    await upsert.execute_racing(
        session,
        statement.on_conflict_do_update(
            index_elements=[Document.id],
            set_={
                **values,
                "title": title if title is not None else kept_title,
                "media_type": media_type or func.coalesce(Document.media_type, ""),
            },
        ),
    )


async def vanished(session: AsyncSession, root: str, present: set[str]) -> list[Document]:
    """Documents recorded under ``root`` whose file was not found this time."""
    docs = await session.scalars(select(Document).where(Document.root == root))
    return [d for d in docs if d.source not in present]


async def documents_under(session: AsyncSession, path: Path) -> list[str]:
    """Ids of the documents whose file is ``path`` or lies below it (``rag forget``)."""
    source = path.as_posix()
    below = Document.source.startswith(source.rstrip("/") + "/", autoescape=True)
    found = await session.scalars(
        select(Document.id).where((Document.source == source) | below).order_by(Document.source)
    )
    return list(found)


async def delete_document(
    session: AsyncSession, doc: Document, *, outbox: str | None = None
) -> list[str]:
    """Delete a document and its chunks; returns the chunk ids it lost.

    ``outbox``: the model id to queue the index deletes under (see the module doc).
    """
    lost = await chunk_ids_of(session, doc.id)
    # Chunks go explicitly (not only by cascade) so the FTS trigger sees each row.
    await session.execute(delete(Chunk).where(Chunk.document_id == doc.id))
    if outbox is not None:
        await enqueue(session, outbox, "delete", lost)
    await session.delete(doc)
    generation = await bump_generation(session)
    await index_log.append(session, generation, added=(), removed=lost)
    return lost


async def bump_generation(session: AsyncSession) -> int:
    """Add one to the index generation; returns the new value (``index_log`` rows carry it).

    One atomic statement (an upsert with RETURNING): a read and then a write would let
    two processes read the same value and both write its successor, one bump lost.
    """
    statement = upsert.insert(session, Meta).values(key=GENERATION_KEY, value="1")
    bumped = cast(cast(Meta.value, BigInteger) + 1, Text)
    value = await session.scalar(
        statement.on_conflict_do_update(
            index_elements=[Meta.key], set_={"value": bumped}
        ).returning(Meta.value)
    )
    return int(value or 0)


async def generation(session: AsyncSession) -> int:
    row = await session.get(Meta, GENERATION_KEY)
    return 0 if row is None else int(row.value)


async def start_run(
    session: AsyncSession, roots: list[str], now: datetime, stale_before: datetime
) -> int:
    """Record a new run. Runs still marked running whose heartbeat stopped before
    ``stale_before`` died with their process: they are marked interrupted now, while a
    run that still beats (another process, another machine) is left alone."""
    await session.execute(
        update(IngestRun)
        .where(
            IngestRun.status == "running",
            func.coalesce(IngestRun.heartbeat_at, IngestRun.started_at) < stale_before,
        )
        .values(status="interrupted")
    )
    run = IngestRun(roots=roots, status="running", counts={}, errors=[], heartbeat_at=now)
    session.add(run)
    await session.flush()
    return run.id


async def beat_run(session: AsyncSession, run_id: int, now: datetime) -> None:
    await session.execute(update(IngestRun).where(IngestRun.id == run_id).values(heartbeat_at=now))


async def finish_run(
    session: AsyncSession,
    run_id: int,
    counts: dict[str, int],
    errors: list[dict[str, str]],
    seconds: float,
) -> None:
    await session.execute(
        update(IngestRun)
        .where(IngestRun.id == run_id)
        .values(
            status="finished",
            counts=counts,
            errors=errors,
            seconds=seconds,
            finished_at=utcnow(),
        )
    )


def to_blobs(vectors: Vectors) -> list[bytes]:
    array = np.ascontiguousarray(vectors, dtype="<f4")
    return [row.tobytes() for row in array]
