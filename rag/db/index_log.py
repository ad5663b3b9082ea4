"""The change log of the stored vectors, which every in-memory index follows.

Each transaction that adds or removes vectors appends one row per chunk, tagged with the
index generation that same transaction bumped to (``rag.ingest.store``). A reader holds
the generation it has applied and asks for the rows past it.

Why the generation orders the log and not the rows' own id: on PostgreSQL an identity
value is handed out when the row is inserted, not when it commits, so id 41 may become
visible after id 42, and a reader that had moved past 42 would never see 41. The
generation is bumped by an ``UPDATE`` of one row, whose lock is held until commit: the
next writer cannot take generation g + 1 before g has committed or rolled back. So once
a reader sees a row of generation g, every row of every generation below g is visible
too, and "everything past g" never skips a late commit. SQLite has one writer at a
time, which gives the same order.

Pruning deletes whole generations and raises ``index_log_pruned`` in ``meta`` in the
same transaction; a reader that is behind the mark reloads instead of applying.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from rag.db.tables import IndexLog

PRUNED_KEY = "index_log_pruned"
ADD, REMOVE = "add", "remove"

# One statement, so two prunes at once can only raise the mark, never lower it.
_RAISE_MARK = text(
    "INSERT INTO meta (key, value) VALUES (:key, :value) ON CONFLICT (key) DO UPDATE SET"
    " value = CASE WHEN CAST(meta.value AS BIGINT) < CAST(excluded.value AS BIGINT)"
    " THEN excluded.value ELSE meta.value END"
)


async def append(
    session: AsyncSession, generation: int, added: Sequence[str], removed: Sequence[str]
) -> None:
    """Log vectors added and removed, in the caller's transaction (after its bump)."""
    rows = [{"generation": generation, "chunk_id": cid, "op": REMOVE} for cid in removed]
    rows += [{"generation": generation, "chunk_id": cid, "op": ADD} for cid in added]
    if rows:
        await session.execute(insert(IndexLog), rows)


CHANGES = (
    "SELECT l.generation, l.chunk_id, v.vector FROM index_log l"
    " LEFT JOIN vectors v ON v.chunk_id = l.chunk_id AND v.model_id = :model_id"
    " WHERE l.generation > :after ORDER BY l.generation, l.id LIMIT :limit"
)
"""The rows past ``:after`` with each chunk's stored vector as it is now (NULL: none). In
one statement, so the log and the vectors are read from one snapshot. Plain SQL with
named parameters, which both SQLAlchemy and ``sqlite3`` take."""

Change = tuple[int, str, bytes | None]
"""(generation, chunk id, the chunk's stored vector or None)."""


async def since(session: AsyncSession, after: int, model_id: str, limit: int) -> list[Change]:
    """Up to ``limit`` changes past generation ``after``, oldest first (``CHANGES``)."""
    params = {"after": after, "model_id": model_id, "limit": limit}
    result = await session.execute(text(CHANGES), params)
    return [(int(g), str(c), None if v is None else bytes(v)) for g, c, v in result]


PRUNED = "SELECT value FROM meta WHERE key = :key"


async def pruned_through(session: AsyncSession) -> int:
    """The newest generation whose rows may have been pruned (0: none ever were)."""
    value = await session.scalar(text(PRUNED), {"key": PRUNED_KEY})
    return 0 if value is None else int(value)


async def prune(session: AsyncSession, keep_rows: int) -> int:
    """Delete the oldest generations, keeping at least the newest ``keep_rows`` rows."""
    cut = await session.scalar(
        select(IndexLog.generation)
        .order_by(IndexLog.generation.desc(), IndexLog.id.desc())
        .offset(keep_rows)
        .limit(1)
    )
    if cut is None:
        return 0
    # The generation of the row just past the newest ``keep_rows`` stays whole.
    await session.execute(_RAISE_MARK, {"key": PRUNED_KEY, "value": str(cut - 1)})
    result = await session.execute(delete(IndexLog).where(IndexLog.generation < cut))
    return int(getattr(result, "rowcount", 0) or 0)
