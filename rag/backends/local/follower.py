"""Keeps a process's ``NumpyIndex`` equal to the stored vectors, by following ``index_log``.

Every process that holds the vectors in memory (each ``rag serve`` replica, a CLI
ingest, a worker) learns of every write the same way, its own included: the rows of
``index_log`` past the generation it holds (``rag.db.index_log`` says why that order
never skips a late commit). A row names a chunk, not a vector: applying it reads the
stored vector, or its absence, at that moment. So a row applied twice, or after a later
one, changes nothing, and reading the generation before the rows is always safe.

Single flight: at most one pass runs at a time, however many requests arrive. A caller
waits for the pass that started after it asked (the one running may have read the
generation before the caller's write committed), so a burst costs at most two passes,
the second usually one read that finds nothing new.

A full reload is the fallback: when the rows the index needs were pruned, or when there
are so many that reading the table whole is cheaper.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from rag.db import index_log
from rag.db.engine import session_factory
from rag.db.tables import Vector
from rag.ingest import store

if TYPE_CHECKING:
    from rag.backends.local.vector_index import NumpyIndex

log = logging.getLogger(__name__)

RELOAD_SHARE = 4
"""A delta of more than 1/4 of the index (and at least ``MIN_DELTA`` rows) is applied
by a full reload: fetching rows by id costs several times a sequential read."""
MIN_DELTA = 10_000
_FETCH_IDS = 500  # within SQLite's bound-parameter limit


class Follower:
    """Applies the change log to one index; ``catch_up`` is safe to call from every request."""

    def __init__(self, index: NumpyIndex, engine: AsyncEngine, position: int) -> None:
        self.index = index
        self.position = position
        """The generation whose writes the index holds (and perhaps some later ones)."""
        self.reloads = 0
        self.deltas = 0
        """Passes that applied rows; with ``reloads``, what a test or ``/healthz`` counts."""
        self._sessions = session_factory(engine)
        self._engine = engine
        self._running: asyncio.Future[None] | None = None
        self._asked = 0
        self._serves = 0  # the callers the running (or last) pass answers for

    @classmethod
    async def start(cls, index: NumpyIndex, engine: AsyncEngine) -> Follower:
        """Fill ``index`` with every stored vector and follow the log from there."""
        # Read before the vectors: the rows in between are applied again, harmlessly.
        async with session_factory(engine)() as session:
            position = await store.generation(session)
        await index.fill(engine)
        return cls(index, engine, position)

    async def catch_up(self) -> int:
        """Apply what was written until now; the generation held afterwards."""
        self._asked += 1
        mine = self._asked
        while True:
            if self._running is None:
                self._serves = self._asked
                self._running = asyncio.ensure_future(self._pass())
                self._running.add_done_callback(self._finished)
            running, serves = self._running, self._serves
            # Shielded: a request that goes away must not cancel the pass others await.
            await asyncio.shield(running)
            if serves >= mine:
                return self.position

    async def reload(self) -> None:
        """Read every vector again (through the single flight, like a delta)."""
        async with self._sessions() as session:
            current = await store.generation(session)
        await self._reload(current)

    def _finished(self, done: asyncio.Future[None]) -> None:
        if self._running is done:
            self._running = None

    async def _pass(self) -> None:
        limit = max(len(self.index) // RELOAD_SHARE, MIN_DELTA)
        async with self._sessions() as session:
            current = await store.generation(session)
            if current == self.position:
                return
            rows = await index_log.since(session, self.position, limit + 1)
            # Read after the rows: a prune that committed before them shows here.
            pruned = await index_log.pruned_through(session)
        if pruned > self.position or len(rows) > limit or current < self.position:
            await self._reload(current)
            return
        await self._apply(rows)
        self.position = max(current, rows[-1][0] if rows else current)
        self.deltas += 1

    async def _reload(self, current: int) -> None:
        log.info("reading the whole vector index again (at generation %d)", current)
        fresh = type(self.index)(self.index.dimension, self.index.model_id)
        await fresh.fill(self._engine)
        await self.index.replace_with(fresh)
        self.position = current
        self.reloads += 1

    async def _apply(self, rows: Sequence[tuple[int, str, str]]) -> None:
        latest: dict[str, str] = {}
        for _, chunk_id, op in rows:
            latest[chunk_id] = op
        added = [cid for cid, op in latest.items() if op == index_log.ADD]
        found = await self._stored(added)
        gone = [cid for cid, op in latest.items() if cid not in found]
        await self.index.apply(found, gone)

    async def _stored(self, ids: Sequence[str]) -> dict[str, bytes]:
        """The stored vectors of ``ids`` for the index's model; an id removed since is absent."""
        found: dict[str, bytes] = {}
        async with self._sessions() as session:
            for start in range(0, len(ids), _FETCH_IDS):
                result = await session.execute(
                    select(Vector.chunk_id, Vector.vector).where(
                        Vector.model_id == self.index.model_id,
                        Vector.chunk_id.in_(ids[start : start + _FETCH_IDS]),
                    )
                )
                found.update((str(cid), bytes(blob)) for cid, blob in result)
        return found
