"""Compare Vectorize with SQLite, the source of truth, and repair the difference.

Three kinds of drift: *missing* (SQLite has a vector the index lacks: a write that failed
or never happened), *orphaned* (the index serves an id SQLite no longer has: a lost
delete) and *stale* (both have it, but the index holds other values or another
``document_id``). Ids come from a full listing; values from a random sample fetched by
id, since reading every vector back would cost as much as rebuilding the index.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag.backends.cloudflare.vectorize import VectorizeIndex
from rag.db.tables import Chunk, Vector

TOLERANCE = 1e-4
"""Largest per-component difference that still counts as the same float32 vector."""
_PARAMS = 500  # ids per IN (...) query: SQLite's bound-parameter limit


@dataclass
class AuditReport:
    index_name: str
    model_id: str
    in_sqlite: int = 0
    in_vectorize: int = 0
    sampled: int = 0
    pending_mutations: int = 0
    """Recorded writes Vectorize had not processed yet: drift they explain is not real."""
    missing: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.orphaned or self.stale)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}

    def summary(self) -> str:
        head = (
            f"Vectorize index {self.index_name!r} vs SQLite ({self.model_id}): "
            f"{self.in_sqlite} vectors in SQLite, {self.in_vectorize} listed in Vectorize, "
            f"{self.sampled} compared by value"
        )
        if self.clean:
            return head + "; clean"
        drift = (
            f"{len(self.missing)} missing, {len(self.orphaned)} orphaned, {len(self.stale)} stale"
        )
        note = ""
        if self.pending_mutations:
            note = f" ({self.pending_mutations} writes still queued: some drift may be lag)"
        return f"{head}; {drift}{note}"


async def audit(
    sessions: async_sessionmaker[AsyncSession],
    index: VectorizeIndex,
    model_id: str,
    sample: int = 200,
    *,
    rng: random.Random | None = None,
) -> AuditReport:
    """Find missing, orphaned and stale vectors; ``sample`` < 0 compares every shared id."""
    report = AuditReport(index.name, model_id)
    async with sessions() as session:
        local = set(
            await session.scalars(select(Vector.chunk_id).where(Vector.model_id == model_id))
        )
    report.pending_mutations = len(await index.pending_mutations())
    remote = set(await index.all_ids())
    report.in_sqlite, report.in_vectorize = len(local), len(remote)
    report.missing = sorted(local - remote)
    report.orphaned = sorted(remote - local)
    shared = sorted(local & remote)
    size = len(shared) if sample < 0 else min(sample, len(shared))
    picked = sorted((rng or random.Random()).sample(shared, size))
    report.sampled = len(picked)
    if not picked:
        return report
    expected = await _stored(sessions, model_id, picked)
    served = {v.id: v for v in await index.get_by_ids(picked)}
    for vid in picked:
        got = served.get(vid)
        if got is None:
            # Listed a moment ago, gone now: a delete landed meanwhile (or the listing's
            # snapshot was old). Either way the index lacks what SQLite has.
            report.missing.append(vid)
            continue
        values, document_id = expected[vid]
        same = got.values.shape == values.shape and bool(
            np.all(np.abs(got.values - values) <= TOLERANCE)
        )
        if not same or got.metadata.get("document_id") != document_id:
            report.stale.append(vid)
    report.missing.sort()
    return report


async def repair(
    sessions: async_sessionmaker[AsyncSession], index: VectorizeIndex, report: AuditReport
) -> int:
    """Upsert missing and stale vectors from SQLite, delete orphans; returns ids written.

    Writes are asynchronous like any other: wait for the index's mutations before
    auditing again.
    """
    rewrite = sorted(set(report.missing) | set(report.stale))
    written = 0
    for start in range(0, len(rewrite), 1000):
        batch = await _stored(sessions, report.model_id, rewrite[start : start + 1000])
        if batch:
            ids = list(batch)
            matrix = np.stack([batch[i][0] for i in ids])
            await index.upsert(ids, matrix, [{"document_id": batch[i][1]} for i in ids])
            written += len(ids)
    # Orphans are re-checked against SQLite: an ingest that ran since the audit may have
    # written them back, and deleting them then would open a hole.
    async with sessions() as session:
        still = set(report.orphaned) - await _have(session, report.model_id, report.orphaned)
    await index.delete(sorted(still))
    return written + len(still)


async def _stored(
    sessions: async_sessionmaker[AsyncSession], model_id: str, ids: Sequence[str]
) -> dict[str, tuple[np.ndarray[Any, np.dtype[np.float32]], str]]:
    """SQLite's vector and document id for each of ``ids`` that it still holds."""
    found: dict[str, tuple[np.ndarray[Any, np.dtype[np.float32]], str]] = {}
    async with sessions() as session:
        for start in range(0, len(ids), _PARAMS):
            rows = await session.execute(
                select(Vector.chunk_id, Vector.vector, Chunk.document_id)
                .join(Chunk, Chunk.id == Vector.chunk_id)
                .where(
                    Vector.model_id == model_id,
                    Vector.chunk_id.in_(list(ids[start : start + _PARAMS])),
                )
            )
            for chunk_id, blob, document_id in rows:
                found[str(chunk_id)] = (np.frombuffer(blob, dtype="<f4"), str(document_id))
    return found


async def _have(session: AsyncSession, model_id: str, ids: Sequence[str]) -> set[str]:
    have: set[str] = set()
    for start in range(0, len(ids), _PARAMS):
        rows = await session.scalars(
            select(Vector.chunk_id).where(
                Vector.model_id == model_id, Vector.chunk_id.in_(list(ids[start : start + _PARAMS]))
            )
        )
        have.update(rows)
    return have
