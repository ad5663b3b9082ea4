"""The ledger of Vectorize writes (``vector_mutations``) and waiting for them to land.

Vectorize answers a write with a ``mutationId`` and applies it later, in order, from a
write-ahead log (docs/cloudflare.md#asynchronous-writes). The ids are opaque: nothing
about two of them says which came first. So the order is our own: the row id under
which each write was recorded. Once ``info.processedUpToMutation`` names one of our
writes, every write we recorded before it is processed too. When it names a write we do
not know (another database wrote last), sampled vectors of our own upserts are fetched
by id instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag.db.tables import VectorMutation
from rag.errors import UpstreamTimeout
from rag.ports import Vectors

Progress = Callable[[int, int], None]
"""Called with (processed, total) writes while waiting."""
ProcessedUpTo = Callable[[], Awaitable[str | None]]
Fetch = Callable[[list[str]], Awaitable[dict[str, Vectors]]]
Probe = tuple[str, Vectors]
"""A vector id and the float32 values one upsert sent for it."""


class MutationsPending(UpstreamTimeout):
    """Vectorize has not processed our writes within the time we were given."""

    code = "vectorize_pending"

    def __init__(self, message: str, *, pending: int, total: int) -> None:
        super().__init__(message)
        self.pending, self.total = pending, total


class MutationLog:
    """The recorded writes to one index, and which of them Vectorize has processed."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], index_name: str) -> None:
        self.sessions = sessions
        self.index_name = index_name
        # Probes of upserts sent by this process only; a later process has processed
        # UpToMutation to go on.
        self._probes: dict[str, list[Probe]] = {}

    async def record(
        self, kind: str, count: int, mutation_id: str, probes: Sequence[Probe] = ()
    ) -> None:
        async with self.sessions() as session, session.begin():
            session.add(
                VectorMutation(
                    index_name=self.index_name,
                    mutation_id=mutation_id,
                    kind=kind,
                    count=count,
                    created_at=_utcnow(),
                )
            )
        if probes:
            self._probes[mutation_id] = list(probes)

    async def pending(self) -> list[tuple[int, str]]:
        """(row id, mutation id) of writes not yet known processed, oldest first."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(VectorMutation.id, VectorMutation.mutation_id)
                .where(
                    VectorMutation.index_name == self.index_name,
                    VectorMutation.processed_at.is_(None),
                )
                .order_by(VectorMutation.id)
            )
            return [(int(row), str(mutation)) for row, mutation in rows]

    async def wait(
        self,
        processed_up_to: ProcessedUpTo,
        fetch: Fetch,
        timeout_s: float,
        progress: Progress | None = None,
        poll_s: float = 1.0,
    ) -> int:
        """Poll until every recorded write is processed; returns how many there were."""
        pending = await self.pending()
        total = len(pending)
        deadline = time.monotonic() + timeout_s
        while pending:
            done_row = await self._row_of(await processed_up_to()) or 0
            if done_row < pending[-1][0]:
                done_row = max(done_row, await self._probe(pending, fetch) or 0)
            if done_row >= pending[0][0]:
                await self._mark_processed(done_row)
                pending = [p for p in pending if p[0] > done_row]
            if progress is not None:
                progress(total - len(pending), total)
            left = deadline - time.monotonic()
            if not pending:
                break
            if left <= 0:
                raise MutationsPending(
                    f"Vectorize index {self.index_name!r} has not processed {len(pending)} of "
                    f"{total} writes after {timeout_s:g} s; they stay queued on Cloudflare's "
                    "side and usually land within minutes: wait again or run `rag audit`",
                    pending=len(pending),
                    total=total,
                )
            await asyncio.sleep(min(poll_s, left))
        return total

    async def _row_of(self, mutation_id: str | None) -> int | None:
        if not mutation_id:
            return None
        async with self.sessions() as session:
            row = await session.scalar(
                select(VectorMutation.id)
                .where(
                    VectorMutation.index_name == self.index_name,
                    VectorMutation.mutation_id == mutation_id,
                )
                .order_by(VectorMutation.id.desc())
                .limit(1)
            )
        return None if row is None else int(row)

    async def _probe(self, pending: list[tuple[int, str]], fetch: Fetch) -> int | None:
        """The newest pending upsert whose sampled vectors are served as sent.

        Deletes are never confirmed this way: an id that is absent may simply never have
        been there. They are covered by a later upsert or by processedUpToMutation.
        """
        probed = [(row, self._probes[m]) for row, m in pending if m in self._probes]
        if not probed:
            return None
        served = await fetch(list(dict.fromkeys(vid for _, probes in probed for vid, _ in probes)))
        for row, probes in reversed(probed):
            if all(
                vid in served
                and served[vid].shape == sent.shape
                and np.allclose(served[vid], sent, atol=1e-6)
                for vid, sent in probes
            ):
                return row
        return None

    async def _mark_processed(self, upto_row: int) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(VectorMutation)
                .where(
                    VectorMutation.index_name == self.index_name,
                    VectorMutation.processed_at.is_(None),
                    VectorMutation.id <= upto_row,
                )
                .values(processed_at=_utcnow())
            )
        keep = {mutation for _, mutation in await self.pending()}
        self._probes = {m: p for m, p in self._probes.items() if m in keep}


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
