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

from rag.db.tables import IndexLog, Meta

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


async def since(session: AsyncSession, generation: int, limit: int) -> list[tuple[int, str, str]]:
    """Up to ``limit`` (generation, chunk id, op) rows past ``generation``, oldest first."""
    result = await session.execute(
        select(IndexLog.generation, IndexLog.chunk_id, IndexLog.op)
        .where(IndexLog.generation > generation)
        .order_by(IndexLog.generation, IndexLog.id)
        .limit(limit)
    )
    return [(int(g), str(c), str(o)) for g, c, o in result]


async def pruned_through(session: AsyncSession) -> int:
    """The newest generation whose rows may have been pruned (0: none ever were)."""
    value = await session.scalar(select(Meta.value).where(Meta.key == PRUNED_KEY))
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
    await session.execute(_RAISE_MARK, {"key": PRUNED_KEY, "value": str(cut)})
    result = await session.execute(delete(IndexLog).where(IndexLog.generation <= cut))
    return int(getattr(result, "rowcount", 0) or 0)
