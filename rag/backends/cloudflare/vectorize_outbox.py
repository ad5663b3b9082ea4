"""The SQLite side of Vectorize writes: the ``index_outbox`` queue and what it points at.

``VectorizeIndex.flush`` reads the queue, looks up what SQLite holds now for each id and
removes rows once Cloudflare accepted them; these are those reads and writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag.db.tables import Chunk, IndexOutbox, Vector

BOUND = 500
"""Ids per statement: SQLite limits bound parameters."""

Sessions = async_sessionmaker[AsyncSession]


async def oldest(sessions: Sessions, model_id: str, limit: int) -> list[tuple[int, str]]:
    """The oldest queued (row id, chunk id) pairs of ``model_id``."""
    async with sessions() as session:
        rows = await session.execute(
            select(IndexOutbox.id, IndexOutbox.chunk_id)
            .where(IndexOutbox.model_id == model_id)
            .order_by(IndexOutbox.id)
            .limit(limit)
        )
        return [(int(row), str(cid)) for row, cid in rows]


async def stored(
    sessions: Sessions, model_id: str, ids: Sequence[str]
) -> dict[str, tuple[bytes, str]]:
    """SQLite's vector blob and document id for each of ``ids`` it still holds."""
    found: dict[str, tuple[bytes, str]] = {}
    async with sessions() as session:
        for start in range(0, len(ids), BOUND):
            rows = await session.execute(
                select(Vector.chunk_id, Vector.vector, Chunk.document_id)
                .join(Chunk, Chunk.id == Vector.chunk_id)
                .where(
                    Vector.model_id == model_id,
                    Vector.chunk_id.in_(list(ids[start : start + BOUND])),
                )
            )
            found.update((str(c), (bytes(v), str(d))) for c, v, d in rows)
    return found


async def dequeue(sessions: Sessions, rows: Sequence[int]) -> None:
    async with sessions() as session, session.begin():
        for start in range(0, len(rows), BOUND):
            await session.execute(
                delete(IndexOutbox).where(IndexOutbox.id.in_(list(rows[start : start + BOUND])))
            )


async def chunk_metadata(sessions: Sessions, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The metadata Vectorize keeps per vector: the owning document, for filters."""
    owners: dict[str, str] = {}
    async with sessions() as session:
        for start in range(0, len(ids), BOUND):
            rows = await session.execute(
                select(Chunk.id, Chunk.document_id).where(
                    Chunk.id.in_(list(ids[start : start + BOUND]))
                )
            )
            owners.update((str(c), str(d)) for c, d in rows)
    return [{"document_id": owners[i]} if i in owners else {} for i in ids]
