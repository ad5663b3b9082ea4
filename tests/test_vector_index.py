"""The numpy index: exact top-K against a full sort, updates, and loading from SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.backends.local import vector_index
from rag.backends.local.vector_index import NumpyIndex
from rag.db.engine import create_engine, upgrade_sync
from rag.errors import IndexMismatch


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    m = rng.standard_normal((n, d)).astype(np.float32)
    unit: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return unit


def reference(ids: list[str], matrix: np.ndarray, q: np.ndarray, k: int) -> list[tuple[str, float]]:
    """Full sort by (-cosine, id): what the index must return, ties included."""
    scores = matrix @ (q / np.linalg.norm(q))
    ranked = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
    return [(ids[i], float(scores[i])) for i in ranked]


def assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-6)


def filled(ids: list[str], matrix: np.ndarray) -> NumpyIndex:
    index = NumpyIndex(matrix.shape[1], "m")
    index.upsert_sync(ids, matrix)
    return index


@pytest.mark.parametrize("k", [1, 5, 50, 299, 300, 301, 1000])
def test_top_k_equals_full_sort(k: int) -> None:
    rng = np.random.default_rng(k)
    ids = [f"c{i:04d}" for i in range(300)]
    matrix = unit_rows(rng, 300, 16)
    index = filled(ids, matrix)
    for _ in range(5):
        q = rng.standard_normal(16).astype(np.float32)
        assert_same(index.query_sync(q, k), reference(ids, matrix, q, k))


def test_ties_break_by_id_whatever_the_insertion_order() -> None:
    rng = np.random.default_rng(7)
    # Ten distinct directions, each stored under 5 ids: every score is a 5-way tie.
    base = unit_rows(rng, 10, 8)
    ids = [f"id{j}-{i}" for i in range(10) for j in range(5)]
    matrix = np.repeat(base, 5, axis=0)
    order = rng.permutation(len(ids))
    index = filled([ids[i] for i in order], matrix[order])
    for k in (1, 3, 7, 12, 50, 60):
        q = base[3] + 0.3 * base[5]
        assert_same(index.query_sync(q, k), reference(ids, matrix, q, k))


def test_upsert_and_delete_stay_consistent_with_a_rebuild() -> None:
    rng = np.random.default_rng(1)
    d = 12
    truth: dict[str, np.ndarray] = {}
    index = NumpyIndex(d, "m", capacity=4)  # small capacity: growth happens many times
    for step in range(40):
        new_ids = [f"c{int(i)}" for i in rng.integers(0, 400, size=int(rng.integers(1, 60)))]
        vectors = unit_rows(rng, len(new_ids), d)
        index.upsert_sync(new_ids, vectors)
        for i, v in zip(new_ids, vectors, strict=True):
            truth[i] = v  # duplicates in one call: the last one wins
        gone = [f"c{int(i)}" for i in rng.integers(0, 400, size=int(rng.integers(0, 40)))]
        index.delete_sync(gone)
        for i in gone:
            truth.pop(i, None)
        assert len(index) == len(truth)
        if step % 5 == 0:
            ids = sorted(truth)
            matrix = np.vstack([truth[i] for i in ids])
            q = rng.standard_normal(d).astype(np.float32)
            assert_same(index.query_sync(q, 25), reference(ids, matrix, q, 25))
    assert set(index.similarities(np.ones(d, np.float32), ["nope"])) == {None}


async def test_async_api_and_wrong_dimensions() -> None:
    index = NumpyIndex(4, "m")
    assert await index.query(np.ones(4, np.float32), 3) == []
    eye = np.eye(4, dtype=np.float32)
    await index.upsert(["a", "b", "c", "d"], eye)
    assert [i for i, _ in await index.query(np.array([0, 0, 1, 0.5], np.float32), 2)] == ["c", "d"]
    await index.delete(["c", "zzz"])
    assert len(index) == 3 and "c" not in index
    assert await index.query(eye[0], 0) == []
    cosines = index.similarities(np.array([1, 1, 0, 0], np.float32), ["b", "c", "a"])
    assert cosines == [pytest.approx(0.7071, abs=1e-4), None, pytest.approx(0.7071, abs=1e-4)]
    with pytest.raises(IndexMismatch):
        await index.upsert(["e"], np.ones((1, 5), np.float32))
    with pytest.raises(IndexMismatch):
        await index.query(np.ones(3, np.float32), 1)


async def test_threaded_queries_hold_back_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_index, "THREAD_MIN_CELLS", 0)  # every query goes to a thread
    rng = np.random.default_rng(3)
    ids = [f"c{i}" for i in range(2000)]
    matrix = unit_rows(rng, 2000, 32)
    index = filled(ids, matrix)
    queries = [rng.standard_normal(32).astype(np.float32) for _ in range(8)]
    # The scans' tasks are created first (the inner gather), the delete's after them.
    results, _ = await asyncio.gather(
        asyncio.gather(*(index.query(q, 10) for q in queries)),
        index.delete(ids[:1000]),
    )
    # The delete waited for the scans already running: they saw every row.
    for q, got in zip(queries, results, strict=True):
        assert_same(got, reference(ids, matrix, q, 10))
    after = await index.query(queries[0], 10)
    assert_same(after, reference(ids[1000:], matrix[1000:], queries[0], 10))


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "rag.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade_sync(url)
    yield url, path


def insert_vectors(path: Path, rows: list[tuple[str, str, int, bytes]]) -> None:
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT OR IGNORE INTO documents (id, source, root, path, title, media_type, sha256,"
            " size, mtime_ns, status, chunker) VALUES ('d', 's', 'r', 'p', '', '', 'x', 1, 0,"
            " 'ok', '')"
        )
        for chunk_id, model_id, dimension, blob in rows:
            con.execute(
                "INSERT OR IGNORE INTO chunks (id, document_id, ordinal, text, char_start,"
                " char_end, heading_path, token_count, sha256) VALUES (?, 'd', 0, 't', 0, 1,"
                " '[]', 1, 'h')",
                (chunk_id,),
            )
            con.execute(
                "INSERT INTO vectors VALUES (?, ?, ?, ?)", (chunk_id, model_id, dimension, blob)
            )


async def test_load_from_a_migrated_database(database: tuple[str, Path]) -> None:
    url, path = database
    rng = np.random.default_rng(5)
    ids = [f"chunk-{i}" for i in range(10_000)]  # more than one fetch block
    matrix = unit_rows(rng, len(ids), 24)
    other = unit_rows(rng, 3, 8)
    insert_vectors(
        path, [(i, "m", 24, v.astype("<f4").tobytes()) for i, v in zip(ids, matrix, strict=True)]
    )
    insert_vectors(path, [(ids[i], "other", 8, other[i].tobytes()) for i in range(3)])
    engine = create_engine(url)
    try:
        index = await NumpyIndex.load(engine, "m", 24)
        assert len(index) == len(ids)
        q = rng.standard_normal(24).astype(np.float32)
        assert_same(await index.query(q, 20), reference(ids, matrix, q, 20))
        assert len(await NumpyIndex.load(engine, "other", 8)) == 3
        assert len(await NumpyIndex.load(engine, "unknown", 8)) == 0
        with pytest.raises(IndexMismatch, match="dimension"):
            await NumpyIndex.load(engine, "other", 24)
        # Another process writes: reload() picks it up.
        insert_vectors(path, [("late", "m", 24, matrix[0].tobytes())])
        await index.reload()
        assert len(index) == len(ids) + 1 and "late" in index
    finally:
        await engine.dispose()


async def test_load_refuses_blobs_of_the_wrong_size(database: tuple[str, Path]) -> None:
    url, path = database
    insert_vectors(path, [("a", "m", 4, b"\x00" * 12)])
    engine = create_engine(url)
    try:
        with pytest.raises(IndexMismatch, match="float32"):
            await NumpyIndex.load(engine, "m", 4)
    finally:
        await engine.dispose()


async def test_load_through_sqlalchemy_when_there_is_no_file() -> None:
    # In-memory SQLite (and PostgreSQL) take the portable path instead of sqlite3.
    from rag.db.tables import Base

    engine = create_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            vectors = unit_rows(np.random.default_rng(9), 3, 4)
            for i, v in enumerate(vectors):
                await conn.exec_driver_sql(
                    "INSERT INTO vectors VALUES (?, 'm', 4, ?)", (f"c{i}", v.tobytes())
                )
        index = await NumpyIndex.load(engine, "m", 4)
        assert_same(
            index.query_sync(vectors[1], 3), reference(["c0", "c1", "c2"], vectors, vectors[1], 3)
        )
    finally:
        await engine.dispose()
