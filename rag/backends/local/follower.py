"""Keeps a process's ``NumpyIndex`` equal to the stored vectors, by following ``index_log``.

Every process that holds the vectors in memory (each ``rag serve`` replica, a CLI
ingest, a worker) learns of every write the same way, its own included: the rows of
``index_log`` past the generation it holds (``rag.db.index_log`` says why that order
never skips a late commit). A row names a chunk, not a vector: applying it reads the
stored vector, or its absence, in the same statement. So a row applied twice, or after a later
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
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from rag.db import index_log
from rag.db.engine import session_factory, sqlite_path
from rag.ingest import store

if TYPE_CHECKING:
    from rag.backends.local.vector_index import NumpyIndex

log = logging.getLogger(__name__)

RELOAD_SHARE = 4
"""A delta of more than 1/4 of the index (and at least ``MIN_DELTA`` rows) is applied
by a full reload: fetching rows by id costs several times a sequential read."""
MIN_DELTA = 10_000


class Follower:
    """Applies the change log to one index; ``catch_up`` is safe to call from every request."""

    def __init__(self, index: NumpyIndex, engine: AsyncEngine, position: int) -> None:
        self.index = index
        self.position = position
        """The generation whose writes the index holds (and perhaps some later ones)."""
        self.reloads = 0
        self.deltas = 0
        """Passes that applied rows; with ``reloads``, what tests and benchmarks count."""
        self.model_id = index.model_id
        self._sessions = session_factory(engine)
        self._engine = engine
        self._path = sqlite_path(engine.url.render_as_string(hide_password=False))
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
            # A finished pass whose done callback has not run yet counts as none.
            if self._running is None or self._running.done():
                self._serves = self._asked
                self._running = asyncio.ensure_future(self._pass())
                self._running.add_done_callback(self._finished)
            running, serves = self._running, self._serves
            # Shielded: a request that goes away must not cancel the pass others await.
            await asyncio.shield(running)
            if serves >= mine:
                return self.position

    async def reload(self) -> None:
        """Read every vector again, now: for a caller that wants it whole (``NumpyIndex.reload``);
        requests never call this, they ``catch_up``."""
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
            if self._path is not None:
                rows, pruned = await asyncio.to_thread(self._changes_from_file, limit + 1)
            else:
                rows = await index_log.since(session, self.position, self.model_id, limit + 1)
                # Read after the rows: a prune that committed before them shows here.
                pruned = await index_log.pruned_through(session)
        if pruned > self.position or len(rows) > limit or current < self.position:
            await self._reload(current)
            return
        if rows:
            await self._apply(rows)
            self.deltas += 1
        self.position = max(current, rows[-1][0] if rows else current)

    def _changes_from_file(self, limit: int) -> tuple[list[index_log.Change], int]:
        """``index_log.since`` and then ``pruned_through``, on the SQLite file.

        sqlite3 in a worker thread, as the bulk load does: through aiosqlite and
        SQLAlchemy rows, 1,000 changes measured several times slower.
        """
        assert self._path is not None
        connection = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            params = {"after": self.position, "model_id": self.model_id, "limit": limit}
            rows = connection.execute(index_log.CHANGES, params).fetchall()
            mark = connection.execute(index_log.PRUNED, {"key": index_log.PRUNED_KEY}).fetchone()
            return rows, 0 if mark is None else int(mark[0])
        finally:
            connection.close()

    async def _reload(self, current: int) -> None:
        log.info("reading the whole vector index again (at generation %d)", current)
        fresh = type(self.index)(self.index.dimension, self.index.model_id)
        await fresh.fill(self._engine)
        await self.index.replace_with(fresh)
        self.position = current
        self.reloads += 1

    async def _apply(self, rows: Sequence[index_log.Change]) -> None:
        # The vector read with the row is the chunk's state now, whatever the row said
        # then: present means upsert, absent means delete. The last row of a chunk wins.
        latest: dict[str, bytes | None] = {}
        for _, chunk_id, vector in rows:
            latest[chunk_id] = vector
        found = {cid: blob for cid, blob in latest.items() if blob is not None}
        await self.index.apply(found, [cid for cid, blob in latest.items() if blob is None])
