"""Exact cosine search over an in-memory float32 matrix mirrored from the ``vectors`` table.

Brute force on purpose: at a million 768-d vectors a query scans 3 GB and stays within
about 1.5x of the memory-bandwidth floor, with recall 1.0 and no index to rebuild. The
matrix holds normalised vectors, so cosine is a dot product.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from rag.db.engine import sqlite_path
from rag.errors import IndexMismatch
from rag.ports import VectorIndex, Vectors

if TYPE_CHECKING:
    from rag.backends.local.follower import Follower

_COUNTS = "SELECT dimension, count(*) FROM vectors WHERE model_id = ? GROUP BY dimension"
_ROWS = "SELECT chunk_id, vector FROM vectors WHERE model_id = ?"

# Below this many matrix cells a query takes under ~0.5 ms: cheaper inline than the
# ~0.1 ms thread hop. Above it (100k x 384 is ~5 ms) the event loop must stay free.
THREAD_MIN_CELLS = 1 << 20
_MIN_CAPACITY = 1024
_FETCH_ROWS = 8192


class NumpyIndex(VectorIndex):
    """A ``VectorIndex`` for one model id; ties rank by chunk id, so results are deterministic."""

    def __init__(self, dimension: int, model_id: str = "", capacity: int = 0) -> None:
        if dimension < 1:
            raise ValueError("dimension must be positive")
        self.dimension = dimension
        self.model_id: str = model_id
        self._matrix = np.empty((max(capacity, _MIN_CAPACITY), dimension), dtype=np.float32)
        self._count = 0
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        # Queries in worker threads read the matrix while the loop goes on; updates wait
        # until none is running, so a row never moves under a query.
        self._readers = 0
        self._idle: asyncio.Event | None = None
        self.follower: Follower | None = None

    @classmethod
    async def load(cls, engine: AsyncEngine, model_id: str, dimension: int) -> NumpyIndex:
        """Every vector stored for ``model_id``, kept in step with the database from then on
        (``catch_up``, ``rag.backends.local.follower``)."""
        from rag.backends.local.follower import Follower

        index = cls(dimension, model_id)
        index.follower = await Follower.start(index, engine)
        return index

    async def fill(self, engine: AsyncEngine) -> None:
        """Read every vector stored for the model, in bulk (100k x 768 in under a second)."""
        path = sqlite_path(engine.url.render_as_string(hide_password=False))
        if path is not None:
            # A plain sqlite3 connection in a worker thread: through aiosqlite and
            # SQLAlchemy rows the same read measured twice as slow, and it would hold
            # all 300 MB of blobs at once where this streams them in blocks.
            await asyncio.to_thread(self._fill_from_file, path)
        else:
            async with engine.connect() as conn:
                await conn.run_sync(self._fill_from_connection)

    async def catch_up(self) -> int | None:
        """Apply every vector written since (by any process); the generation now held."""
        return None if self.follower is None else await self.follower.catch_up()

    async def reload(self) -> None:
        """Read the table again, whole."""
        if self.follower is None:
            raise RuntimeError("reload() needs an index made by NumpyIndex.load()")
        await self.follower.reload()

    async def replace_with(self, fresh: NumpyIndex) -> None:
        """Take ``fresh``'s vectors once no query reads the current ones."""
        await self._no_readers()
        self._matrix, self._count = fresh._matrix, fresh._count
        self._ids, self._rows = fresh._ids, fresh._rows

    async def apply(self, vectors: dict[str, bytes], gone: Sequence[str]) -> None:
        """Upsert stored blobs and delete ``gone``, in one step between queries."""
        size = self.dimension * 4
        if any(len(blob) != size for blob in vectors.values()):
            raise IndexMismatch(
                f"a stored vector for {self.model_id} is not {self.dimension} float32 values"
            )
        block = np.frombuffer(b"".join(vectors.values()), dtype="<f4")
        count, needed = self._count, self._count + len(vectors)
        grown = None
        if needed > len(self._matrix):
            # Growing copies the whole matrix (150 MB at 100k x 384, seconds on a busy
            # machine): in a thread, while queries read the current one. Only the follower
            # calls this, one pass at a time, so nothing moves rows meanwhile.
            grown = await asyncio.to_thread(self._grown, needed)
        await self._no_readers()
        if grown is not None and self._count == count:
            self._matrix = grown
        self.delete_sync(gone)
        if vectors:
            self.upsert_sync(list(vectors), block.reshape(len(vectors), self.dimension))

    def _fill_from_file(self, path: Path) -> None:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            # One transaction, so the dimension check and the rows see the same snapshot.
            connection.execute("BEGIN")
            counts = connection.execute(_COUNTS, (self.model_id,)).fetchall()
            self._check_counts(counts)
            cursor = connection.execute(_ROWS, (self.model_id,))
            while rows := cursor.fetchmany(_FETCH_ROWS):
                self._append_new(rows)
        finally:
            connection.close()

    def _fill_from_connection(self, conn: Connection) -> None:
        params = {"model_id": self.model_id}
        counts = conn.execute(text(_COUNTS.replace("?", ":model_id")), params).all()
        self._check_counts([tuple(row) for row in counts])
        result = conn.execute(text(_ROWS.replace("?", ":model_id")), params)
        while rows := result.fetchmany(_FETCH_ROWS):
            self._append_new([tuple(row) for row in rows])

    def _check_counts(self, counts: Sequence[tuple[Any, ...]]) -> None:
        wrong = sorted(int(d) for d, _ in counts if int(d) != self.dimension)
        if wrong:
            raise IndexMismatch(
                f"vectors stored for {self.model_id} have dimension(s) {wrong}, but the "
                f"model produces {self.dimension}: re-embed or configure their model"
            )
        total = sum(int(n) for _, n in counts)
        # Room for the deltas that follow (``apply``): growing a 100k x 384 matrix copies
        # 150 MB, a few times the cost of applying 1,000 vectors.
        self._reserve(total + total // 16)

    def _append_new(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Append rows whose ids the index does not hold yet (the table's key guarantees it)."""
        size = self.dimension * 4
        if any(len(r[1]) != size for r in rows):
            raise IndexMismatch(
                f"a stored vector for {self.model_id} is not {self.dimension} float32 values"
            )
        block = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4")
        start, end = self._count, self._count + len(rows)
        self._reserve(end)
        self._matrix[start:end] = block.reshape(len(rows), self.dimension)
        self._ids.extend(str(r[0]) for r in rows)
        self._rows.update(zip(self._ids[start:end], range(start, end), strict=True))
        self._count = end

    def __len__(self) -> int:
        return self._count

    def loaded(self) -> int:
        return self._count

    def ids(self) -> list[str]:
        """The chunk ids held, in no particular order."""
        return self._ids[: self._count]

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._rows

    async def upsert(self, ids: Sequence[str], vectors: Vectors) -> None:
        await self._no_readers()
        self.upsert_sync(ids, vectors)

    async def delete(self, ids: Sequence[str]) -> None:
        await self._no_readers()
        self.delete_sync(ids)

    async def query(self, vector: Vectors, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, cosine) pairs, best first."""
        q = self._as_query(vector)
        if self._count * self.dimension < THREAD_MIN_CELLS:
            return self._top_k(q, k)
        loop = asyncio.get_running_loop()
        self._readers += 1

        def run() -> list[tuple[str, float]]:
            try:
                return self._top_k(q, k)
            finally:
                # Released when the thread is done, not when the caller is: a cancelled
                # request must not let an update move rows under a running scan.
                loop.call_soon_threadsafe(self._release)

        return await asyncio.to_thread(run)

    def similarities(self, vector: Vectors, ids: Sequence[str]) -> list[float | None]:
        """Cosine of ``vector`` with each id's stored vector (None where the id is absent).

        For candidates that only keyword search found: the evidence gate needs their cosine.
        """
        q = self._as_query(vector)
        rows = [self._rows.get(i) for i in ids]
        present = [r for r in rows if r is not None]
        scores = iter(_row_scores(self._matrix[present], q))
        return [None if r is None else float(next(scores)) for r in rows]

    def query_sync(self, vector: Vectors, k: int) -> list[tuple[str, float]]:
        """``query`` inline, for benchmarks and scripts."""
        return self._top_k(self._as_query(vector), k)

    def upsert_sync(self, ids: Sequence[str], vectors: Vectors) -> None:
        block = np.asarray(vectors, dtype=np.float32)
        if block.ndim == 1:
            block = block.reshape(1, -1)
        if block.ndim != 2 or block.shape[1] != self.dimension:
            raise IndexMismatch(
                f"vectors of shape {block.shape} do not fit an index of dimension {self.dimension}"
            )
        if block.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids for {block.shape[0]} vectors")
        self._reserve(self._count + len(ids))
        targets = np.empty(len(ids), dtype=np.intp)
        for j, chunk_id in enumerate(ids):
            at = self._rows.get(chunk_id)
            if at is None:
                at = self._rows[chunk_id] = self._count
                self._ids.append(chunk_id)
                self._count += 1
            targets[j] = at
        if len(set(ids)) < len(ids):
            # The same id twice in one call: the last vector wins, as in a SQL upsert.
            _, first_from_end = np.unique(targets[::-1], return_index=True)
            keep = len(targets) - 1 - first_from_end
            targets, block = targets[keep], block[keep]
        # One scatter instead of a row-by-row copy: loading 100k rows is this call.
        self._matrix[targets] = block

    def delete_sync(self, ids: Sequence[str]) -> None:
        for chunk_id in ids:
            at = self._rows.pop(chunk_id, None)
            if at is None:
                continue
            last = self._count - 1
            if at != last:
                # Fill the hole with the last row: O(d) instead of shifting everything.
                moved = self._ids[last]
                self._matrix[at] = self._matrix[last]
                self._ids[at] = moved
                self._rows[moved] = at
            self._ids.pop()
            self._count = last

    def _reserve(self, rows: int) -> None:
        if rows > len(self._matrix):
            self._matrix = self._grown(rows)

    def _grown(self, rows: int) -> Vectors:
        # Grow by half again, so a long run of small upserts copies the matrix O(log n) times.
        capacity = max(rows, len(self._matrix) + len(self._matrix) // 2)
        grown = np.empty((capacity, self.dimension), dtype=np.float32)
        grown[: self._count] = self._matrix[: self._count]
        return grown

    def _as_query(self, vector: Vectors) -> Vectors:
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dimension:
            raise IndexMismatch(
                f"a query vector of dimension {q.shape[0]} cannot search an index of "
                f"dimension {self.dimension} ({self.model_id or 'unnamed model'})"
            )
        norm = float(np.linalg.norm(q))
        return q / norm if norm > 0 else q

    def _top_k(self, q: Vectors, k: int) -> list[tuple[str, float]]:
        n = self._count
        if k <= 0 or n == 0:
            return []
        scores = self._matrix[:n] @ q
        if k < n:
            # argpartition finds the k-th best in O(n). The float32 product is only a first
            # pass: BLAS sums rows in different orders depending on where they sit in the
            # matrix (two identical rows scored -0.3413929045 and -0.3413928747 with numpy
            # 2.4), so every row within the product's error bound of the k-th is kept and
            # scored again below.
            kth = scores[np.argpartition(scores, n - k)[n - k]]
            rows = np.flatnonzero(scores >= kth - _error_bound(self.dimension))
        else:
            rows = np.arange(n)
        exact = _row_scores(self._matrix[rows], q)
        ranked = sorted(range(len(rows)), key=lambda j: (-exact[j], self._ids[rows[j]]))[:k]
        return [(self._ids[rows[j]], exact[j]) for j in ranked]

    async def _no_readers(self) -> None:
        while self._readers:
            if self._idle is None:
                self._idle = asyncio.Event()
            self._idle.clear()
            await self._idle.wait()

    def _release(self) -> None:
        self._readers -= 1
        if self._readers == 0 and self._idle is not None:
            self._idle.set()


def _error_bound(dimension: int) -> float:
    """How far a float32 dot product of two unit vectors can be from the true cosine.

    The classic bound for a d-term sum is d * u * sum(|x_i * q_i|) with u = 2**-24, and the
    sum is at most 1 for unit vectors (Cauchy-Schwarz). Twice that covers the k-th score's
    own error as well as the candidate's: 4.6e-5 at 384 dimensions.
    """
    return 2.0 * dimension * 2.0**-24


def _row_scores(rows: Vectors, q: Vectors) -> list[float]:
    """Dot products that depend only on each row's values, never on its position.

    The product of two float32 values is exact in float64, and numpy reduces every row of a
    contiguous block with the same pairwise summation, so identical rows get bit-identical
    scores: ties are real ties, and the id decides them.
    """
    if len(rows) == 0:
        return []
    products = rows.astype(np.float64) * q.astype(np.float64)
    return [float(s) for s in products.sum(axis=1)]
