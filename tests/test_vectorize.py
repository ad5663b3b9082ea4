"""VectorizeIndex against the in-process fake: limits, batching, mutations, pagination.

The real ``CloudflareClient`` runs on ``FakeCloudflare``'s transport; every request is
checked against Cloudflare's schemas (``schema_errors`` must stay empty).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cf_fake import FakeCloudflare
from cf_fake.vectorize import VectorizeState
from fakes import Clock
from sqlalchemy import select

from rag.backends.cloudflare.vectorize import VectorizeIndex
from rag.backends.cloudflare.vectorize_mutations import MutationsPending
from rag.db.engine import create_engine, session_factory, upgrade_sync
from rag.db.tables import Chunk, Document, Vector, VectorMutation
from rag.errors import CloudflareError, IndexMismatch, InputError

DIM = 8


@dataclass
class Env:
    fake: FakeCloudflare
    vz: VectorizeState
    sessions: Any
    index: VectorizeIndex

    def make_index(self, **kwargs: Any) -> VectorizeIndex:
        options: dict[str, Any] = {"poll_s": 0.0, **kwargs}
        dimension = options.pop("dimension", DIM)
        return VectorizeIndex(self.index.client, "rag", dimension, self.sessions, **options)


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database, copied for each test: migrating every time costs ~0.5 s."""
    path = tmp_path_factory.mktemp("vectorize") / "template.db"
    upgrade_sync(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
async def env(tmp_path: Path, migrated: Path) -> AsyncIterator[Env]:
    shutil.copy(migrated, tmp_path / "v.db")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'v.db'}")
    fake = FakeCloudflare()
    fake.vectorize.delay = 2
    client = fake.client()
    sessions = session_factory(engine)
    index = VectorizeIndex(client, "rag", DIM, sessions, poll_s=0.0)
    yield Env(fake, fake.vectorize, sessions, index)
    await client.aclose()
    await engine.dispose()
    assert fake.schema_errors == []
    assert fake.fake_errors == []


def unit(rows: int, dim: int = DIM, seed: int = 0) -> np.ndarray[Any, Any]:
    block = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    normed: np.ndarray[Any, Any] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return normed


async def add_chunks(sessions: Any, doc_id: str, ids: list[str], vectors: Any, model: str) -> None:
    """A document with chunks and their vectors, as ingestion writes them."""
    async with sessions() as session, session.begin():
        if await session.get(Document, doc_id) is None:
            session.add(
                Document(
                    id=doc_id,
                    source=f"/r/{doc_id}.md",
                    root="/r",
                    path=f"{doc_id}.md",
                    sha256="x",
                    size=1,
                    status="ok",
                )
            )
            await session.flush()  # no ORM relationship orders the inserts for us
        for n, (cid, row) in enumerate(zip(ids, vectors, strict=True)):
            session.add(
                Chunk(
                    id=cid,
                    document_id=doc_id,
                    ordinal=n,
                    text=f"text {cid}",
                    char_start=0,
                    char_end=1,
                    heading_path=[],
                    token_count=1,
                    sha256=cid,
                )
            )
            await session.flush()
            session.add(
                Vector(
                    chunk_id=cid,
                    model_id=model,
                    dimension=DIM,
                    vector=np.asarray(row, "<f4").tobytes(),
                )
            )


async def test_create_makes_the_index_and_its_metadata_index_first(env: Env) -> None:
    assert await env.index.create() is True
    routes = [(s.method, s.route) for s in env.vz.requests]
    assert routes == [
        ("GET", "/rag"),
        ("POST", ""),
        ("GET", "/rag/metadata_index/list"),
        ("POST", "/rag/metadata_index/create"),
    ]
    assert (env.vz.indexes["rag"].dimensions, env.vz.indexes["rag"].metric) == (DIM, "cosine")
    assert await env.index.wait_for_mutations(5.0) == 1
    assert await env.index.metadata_indexes() == {"document_id": "string"}
    # Vectors written now are indexed for filtering on document_id.
    await env.index.upsert(["a", "b"], unit(2), [{"document_id": "d1"}, {"document_id": "d2"}])
    env.vz.process()
    hits = await env.index.matches(unit(1)[0], 5, filter={"document_id": "d2"})
    assert [m.id for m in hits] == ["b"]
    assert await env.index.create() is False  # idempotent: nothing new to create
    assert len([s for s in env.vz.requests if s.route == "/rag/metadata_index/create"]) == 1


@pytest.mark.parametrize(("dims", "metric"), [(384, "cosine"), (DIM, "euclidean")])
async def test_a_mismatched_index_is_refused_and_never_written(
    env: Env, dims: int, metric: str
) -> None:
    env.vz.add_index("rag", dims, metric)
    with pytest.raises(IndexMismatch, match=rf"is {dims}-d {metric}.*needs {DIM}-d cosine"):
        await env.index.create()
    with pytest.raises(IndexMismatch):
        await env.make_index().upsert(["a"], unit(1))
    with pytest.raises(IndexMismatch):
        await env.make_index().delete(["a"])
    assert {s.method for s in env.vz.requests} == {"GET"}


async def test_upsert_sends_ndjson_in_batches_of_1000_and_records_each_mutation(
    env: Env,
) -> None:
    ids = [f"v{i:05d}" for i in range(2345)]
    await env.index.upsert(ids, unit(len(ids)), [{"document_id": "d"}] * len(ids))
    writes = env.vz.writes()
    assert [len(w.body.splitlines()) for w in writes] == [1000, 1000, 345]
    assert {w.content_type for w in writes} == {"application/x-ndjson"}
    first = json.loads(writes[0].body.splitlines()[0])
    assert first["id"] == "v00000" and first["metadata"] == {"document_id": "d"}
    assert len(first["values"]) == DIM
    async with env.sessions() as session:
        rows = (await session.scalars(select(VectorMutation).order_by(VectorMutation.id))).all()
    expected = [("metadata", 1), ("upsert", 1000), ("upsert", 1000), ("upsert", 345)]
    assert [(r.kind, r.count) for r in rows] == expected
    env.vz.process()
    assert (await env.index.info()).vector_count == 2345


async def test_upsert_without_metadata_takes_document_id_from_sqlite(env: Env) -> None:
    await add_chunks(env.sessions, "doc1", ["c1", "c2"], unit(2), "m")
    await env.index.upsert(["c1", "c2", "stray"], unit(3))
    lines = [json.loads(line) for line in env.vz.writes()[0].body.splitlines()]
    assert [line.get("metadata") for line in lines] == [
        {"document_id": "doc1"},
        {"document_id": "doc1"},
        None,
    ]


@pytest.mark.parametrize(
    ("ids", "metadata", "message"),
    [
        (["é" * 33], None, "66 bytes; Vectorize allows 64"),  # 33 characters, 66 bytes
        ([""], None, "non-empty"),
        (["ok"], [{"blob": "x" * 10_240}], "metadata of vector 'ok' is 10251 bytes"),
        (["ok"], [{"$bad": 1}], "must not start with '\\$'"),
        (["ok"], [{"a.b": 1}], "without '.'"),
    ],
)
async def test_limits_are_enforced_before_anything_is_sent(
    env: Env, ids: list[str], metadata: list[dict[str, Any]] | None, message: str
) -> None:
    # The bad record comes last in a batch of 1,500: not even the first 1,000 go out.
    good = [f"g{i}" for i in range(1499)]
    meta = None if metadata is None else [{"document_id": "d"}] * 1499 + metadata
    with pytest.raises(InputError, match=message):
        await env.index.upsert(good + ids, unit(1500), meta)
    assert env.vz.requests == []
    assert env.fake.requests == []


async def test_delete_rejects_an_overlong_id_before_sending(env: Env) -> None:
    with pytest.raises(InputError, match=r"x{65}'.* 65 bytes"):
        await env.index.delete(["ok", "x" * 65])
    assert env.fake.requests == []


async def test_wrong_vector_shapes_are_refused_locally(env: Env) -> None:
    with pytest.raises(IndexMismatch, match="dimension 8"):
        await env.index.upsert(["a"], unit(1, dim=4))
    with pytest.raises(IndexMismatch, match="dimension 4 cannot search"):
        await env.index.query(unit(1, dim=4)[0], 5)
    with pytest.raises(InputError, match="2 ids for 3 vectors"):
        await env.index.upsert(["a", "b"], unit(3))
    assert env.fake.requests == []


async def test_top_k_limits(env: Env) -> None:
    await env.index.upsert([f"v{i}" for i in range(30)], unit(30), [{"document_id": "d"}] * 30)
    env.vz.process()
    sent = len(env.vz.requests)
    with pytest.raises(InputError, match="at most 100"):
        await env.index.query(unit(1)[0], 101)
    with pytest.raises(InputError, match="at most 20 matches with values"):
        await env.index.matches(unit(1)[0], 21, return_values=True)
    with pytest.raises(InputError, match="at most 20"):
        await env.index.matches(unit(1)[0], 21, return_metadata="all")
    assert await env.index.query(unit(1)[0], 0) == []
    assert len(env.vz.requests) == sent
    assert len(await env.index.query(unit(1)[0], 100)) == 30
    detailed = await env.index.matches(unit(1)[0], 20, return_values=True, return_metadata="all")
    assert len(detailed) == 20 and detailed[0].metadata == {"document_id": "d"}
    assert detailed[0].values is not None and detailed[0].values.shape == (DIM,)
    indexed = await env.index.matches(unit(1)[0], 50, return_metadata="indexed")
    assert indexed[0].metadata == {"document_id": "d"}


async def test_query_ranks_by_cosine_best_first(env: Env) -> None:
    vectors = unit(50, seed=3)
    ids = [f"v{i}" for i in range(50)]
    await env.index.upsert(ids, vectors, [{"document_id": "d"}] * 50)
    assert await env.index.query(vectors[7], 5) == []  # written, not yet visible
    env.vz.process()
    got = await env.index.query(vectors[7], 5)
    expected = sorted(zip((vectors @ vectors[7]).tolist(), ids, strict=True), reverse=True)[:5]
    assert [i for i, _ in got] == [i for _, i in expected]
    best, score = got[0]
    assert best == "v7" and score == pytest.approx(1.0, abs=1e-5)


async def test_wait_for_mutations_times_out_naming_the_pending_count(env: Env) -> None:
    env.vz.delay = None  # nothing becomes visible until process()
    await env.index.upsert(["a", "b"], unit(2), [{"document_id": "d"}] * 2)
    # Served until the delete lands: read back, it is still there.
    env.vz.put("rag", "zzz", unit(1)[0].tolist(), {"document_id": "old"})
    await env.index.delete(["zzz"])
    seen: list[tuple[int, int]] = []
    with pytest.raises(MutationsPending, match=r"not processed 3 of 3 writes after 0.05 s") as err:
        await env.index.wait_for_mutations(0.05, lambda done, total: seen.append((done, total)))
    assert (err.value.pending, err.value.total) == (3, 3)
    assert seen and seen[-1] == (0, 3)
    assert len(await env.index.pending_mutations()) == 3
    env.vz.process()
    assert await env.index.wait_for_mutations(1.0, lambda d, t: seen.append((d, t))) == 3
    assert seen[-1] == (3, 3)
    async with env.sessions() as session:
        marks = (await session.scalars(select(VectorMutation.processed_at))).all()
    assert all(mark is not None for mark in marks)
    assert await env.index.wait_for_mutations(0.0) == 0


async def test_wait_follows_delayed_visibility(env: Env) -> None:
    env.vz.delay = 4  # each write lands four Vectorize requests later
    for start in range(0, 30, 10):
        ids = [f"v{i}" for i in range(start, start + 10)]
        await env.index.upsert(ids, unit(10, seed=start), [{"document_id": "d"}] * 10)
    progress: list[tuple[int, int]] = []
    assert await env.index.wait_for_mutations(10.0, lambda d, t: progress.append((d, t))) == 4
    assert progress[-1] == (4, 4)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert (await env.index.info()).vector_count == 30


async def test_wait_falls_back_to_get_by_ids_when_info_names_a_foreign_write(env: Env) -> None:
    env.vz.delay = None
    await env.index.upsert(["mine"], unit(1), [{"document_id": "d"}])
    # Another database writes to the same index afterwards: processedUpToMutation will
    # name a write we never recorded, so only reading our vectors back can confirm ours.
    other = json.dumps({"id": "theirs", "values": unit(1, seed=9)[0].tolist()}).encode()
    await env.index.client.call(
        "POST",
        "/vectorize/v2/indexes/rag/upsert",
        content=other,
        headers={"Content-Type": "application/x-ndjson"},
    )
    env.vz.process()
    assert await env.index.wait_for_mutations(1.0) == 2  # metadata index + our upsert
    assert any(s.route == "/rag/get_by_ids" for s in env.vz.requests)


def clocked(env: Env, clock: Clock, jitter: float = 0.0) -> VectorizeIndex:
    """An index whose client sleeps on ``clock``: a wait's polls in simulated time."""
    client = env.fake.client(sleep=clock.sleep, clock=clock)
    client.jitter = lambda: jitter
    return VectorizeIndex(client, "rag", DIM, env.sessions)


async def test_waiting_polls_with_exponential_backoff(env: Env) -> None:
    clock = Clock()
    index = clocked(env, clock)  # jitter 0: the shortest delays, so the most polls
    env.vz.delay = None  # never lands: the wait runs its whole 100 s
    await index.upsert(["a", "b"], unit(2), [{"document_id": "d"}] * 2)
    before = len(env.vz.requests)
    with pytest.raises(MutationsPending):
        await index.wait_for_mutations(100.0)
    await index.client.aclose()
    polls = [s.route for s in env.vz.requests[before:]]
    # A fixed 1 s interval made 101 info calls (and as many get_by_ids) in these 100 s.
    counts = {route: polls.count(route) for route in set(polls)}
    # (and the metadata index, created with the first write, is now read back too).
    assert counts == {"/rag/info": 25, "/rag/get_by_ids": 25, "/rag/metadata_index/list": 25}
    assert clock.slept[:6] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0] and max(clock.slept) == 5.0
    assert clock.now == pytest.approx(1100.0)


async def test_a_delete_is_read_back_when_processed_up_to_never_names_it(env: Env) -> None:
    clock = Clock()
    index = clocked(env, clock, jitter=0.5)
    env.vz.progress_as_number = True  # never equal to a mutationId
    await index.create()
    env.vz.put("rag", "x", unit(1)[0].tolist(), {"document_id": "d"})
    await index.delete(["x"])
    recorded = [mutation for _, mutation in await index.pending_mutations()]
    assert await index.wait_for_mutations(30.0) == 2  # the metadata index and the delete
    info = await index.info()
    await index.client.aclose()
    # A number on the wire, compared as text, and never one of our ids: processedUpTo
    # Mutation alone would have waited out the 30 s, as was seen on Cloudflare.
    assert info.processed_up_to_mutation == "2" and "2" not in recorded
    assert "x" not in env.vz.indexes["rag"].vectors
    routes = {s.route for s in env.vz.requests}
    assert {"/rag/get_by_ids", "/rag/metadata_index/list"} <= routes
    assert clock.now - 1000.0 < 5  # landed after two requests: no waiting out the timeout


async def test_list_vectors_follows_the_cursor_over_a_snapshot(env: Env) -> None:
    env.vz.add_index("rag", DIM)
    for i in range(2500):
        env.vz.put("rag", f"v{i:04d}", [1.0] * DIM, {})
    first = await env.index.list_vectors()
    assert (len(first.ids), first.total) == (1000, 2500) and first.cursor
    env.vz.indexes["rag"].vectors.pop("v2499")  # the snapshot still lists it
    second = await env.index.list_vectors(first.cursor)
    third = await env.index.list_vectors(second.cursor)
    assert (len(second.ids), len(third.ids), third.cursor) == (1000, 500, None)
    assert first.ids + second.ids + third.ids == [f"v{i:04d}" for i in range(2500)]
    assert len(await env.index.all_ids()) == 2499  # a fresh listing, a fresh snapshot


async def test_get_by_ids_and_delete(env: Env) -> None:
    vectors = unit(250)
    ids = [f"v{i}" for i in range(250)]
    await env.index.upsert(ids, vectors, [{"document_id": "d"}] * 250)
    env.vz.process()
    before = len(env.vz.requests)
    got = await env.index.get_by_ids([*ids, "absent"])
    assert len(env.vz.requests) - before == 3  # 100 ids per request
    assert [v.id for v in got] == ids
    assert np.allclose(got[5].values, vectors[5]) and got[5].metadata == {"document_id": "d"}
    await env.index.delete(ids[:200] + ids[:10])
    env.vz.process()
    assert [v.id for v in await env.index.get_by_ids(ids)] == ids[200:]


async def test_fake_rejects_what_the_real_api_rejects(env: Env) -> None:
    await env.index.create()
    call = env.index.client.call
    path = "/vectorize/v2/indexes/rag"
    ndjson = {"Content-Type": "application/x-ndjson"}
    with pytest.raises(CloudflareError) as bad_line:
        await call("POST", f"{path}/upsert", content=b'{"id": "a", "values": [1,', headers=ndjson)
    assert bad_line.value.cf_code == 40023
    short = json.dumps({"id": "a", "values": [1.0, 2.0]}).encode()
    with pytest.raises(CloudflareError, match="expected 8 dimensions, and got 2") as wrong:
        await call("POST", f"{path}/upsert", content=short, headers=ndjson)
    assert wrong.value.cf_code == 40012
    with pytest.raises(CloudflareError, match="topK"):
        await call(
            "POST", f"{path}/query", json={"vector": [0.1] * DIM, "topK": 50, "returnValues": True}
        )
    with pytest.raises(CloudflareError) as missing:
        await env.make_index().client.call("GET", "/vectorize/v2/indexes/nope/info")
    assert missing.value.cf_code == 3000
    assert env.fake.schema_errors == []  # all three were valid requests, refused by rules
    with pytest.raises(CloudflareError):
        await call("POST", f"{path}/query", json={"vector": [0.1] * DIM, "topK": 500})
    assert len(env.fake.schema_errors) == 1
    env.fake.schema_errors.clear()
