"""The ledger of Vectorize writes (``vector_mutations``) and waiting for them to land.

Vectorize answers a write with a ``mutationId`` and applies it later, in order, from a
write-ahead log (docs/cloudflare.md#asynchronous-writes). The ids are opaque: nothing
about two of them says which came first. So the order is our own: the row id under
which each write was recorded. Once ``info.processedUpToMutation`` names one of our
writes, every write we recorded before it is processed too. When it names a write we do
not know (another database wrote last, or the id is in a form that never equals one we
were given), our own writes are read back instead: sampled vectors of an upsert must be
served as sent, the ids of a delete must be absent, a metadata index must be listed.

Polling backs off: the first look comes after ``poll_s`` (0.5 s), each later one twice as
late up to 10 s, jittered, so a long wait costs a few dozen calls of the API's budget of
1,200 per 5 minutes rather than one a second (docs/cloudflare.md#rate-limits).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag.backends.cloudflare.client import jittered
from rag.backends.cloudflare.ratelimit import Clock, Sleep
from rag.db.tables import VectorMutation
from rag.errors import UpstreamTimeout
from rag.ports import Vectors

Progress = Callable[[int, int], None]
"""Called with (processed, total) writes while waiting."""
ProcessedUpTo = Callable[[], Awaitable[str | None]]
Fetch = Callable[[list[str]], Awaitable[dict[str, Vectors]]]
Listed = Callable[[], Awaitable[set[str]]]
"""The metadata properties the index has an index on."""
Probe = tuple[str, Vectors | None]
"""A vector id and the float32 values one upsert sent for it, or None for an id a
delete removed."""
POLL_FIRST_S = 0.5
POLL_MAX_S = 10.0


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
        self._properties: dict[str, str] = {}
        """Mutation id of a metadata-index write -> its property."""

    async def record(
        self,
        kind: str,
        count: int,
        mutation_id: str,
        probes: Sequence[Probe] = (),
        prop: str | None = None,
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
        if prop is not None:
            self._properties[mutation_id] = prop

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
        listed: Listed,
        timeout_s: float,
        progress: Progress | None = None,
        *,
        poll_s: float = POLL_FIRST_S,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> int:
        """Poll until every recorded write is processed; returns how many there were."""
        pending = await self.pending()
        total = len(pending)
        deadline = clock() + timeout_s
        delay = poll_s
        while pending:
            done_row = await self._row_of(await processed_up_to()) or 0
            seen: set[int] = set()
            if done_row < pending[-1][0]:
                upto, seen = await self._read_back(pending, fetch, listed)
                done_row = max(done_row, upto)
            if done_row >= pending[0][0] or seen:
                await self._mark_processed(done_row, seen)
                pending = [p for p in pending if p[0] > done_row and p[0] not in seen]
            if progress is not None:
                progress(total - len(pending), total)
            left = deadline - clock()
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
            await sleep(min(jittered(delay, POLL_MAX_S, jitter()), left))
            delay *= 2
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

    async def _read_back(
        self, pending: list[tuple[int, str]], fetch: Fetch, listed: Listed
    ) -> tuple[int, set[int]]:
        """What reading our own writes back shows landed: the newest upsert served as
        sent (so every write before it, applied in order, landed too), and single deletes
        and metadata-index writes whose effect is visible.

        A delete or a metadata index confirms only itself: an id absent may never have
        been there, and an index may have been made by someone else, so neither says
        anything about the writes before it.
        """
        probed = [(row, self._probes[m]) for row, m in pending if m in self._probes]
        props = [(row, self._properties[m]) for row, m in pending if m in self._properties]
        served: dict[str, Vectors] = {}
        if probed:
            served = await fetch(list(dict.fromkeys(v for _, probes in probed for v, _ in probes)))
        upto, seen = 0, set()
        for row, probes in reversed(probed):
            sent_values = [sent for _, sent in probes if sent is not None]
            if not sent_values and all(vid not in served for vid, _ in probes):
                seen.add(row)
            elif sent_values and all(_served_as(served.get(vid), sent) for vid, sent in probes):
                upto = max(upto, row)
        if props:
            indexed = await listed()
            seen.update(row for row, prop in props if prop in indexed)
        return upto, seen

    async def _mark_processed(self, upto_row: int, rows: set[int]) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(VectorMutation)
                .where(
                    VectorMutation.index_name == self.index_name,
                    VectorMutation.processed_at.is_(None),
                    (VectorMutation.id <= upto_row) | VectorMutation.id.in_(rows),
                )
                .values(processed_at=_utcnow())
            )
        keep = {mutation for _, mutation in await self.pending()}
        self._probes = {m: p for m, p in self._probes.items() if m in keep}
        self._properties = {m: p for m, p in self._properties.items() if m in keep}


def _served_as(got: Vectors | None, sent: Vectors | None) -> bool:
    if sent is None:
        return got is None
    return got is not None and got.shape == sent.shape and bool(np.allclose(got, sent, atol=1e-6))


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
