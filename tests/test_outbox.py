"""The transactional outbox: ingestion's Vectorize writes, batched, and never lost.

The whole service runs on ``backend = "cloudflare"`` over the in-process fake (the real
client and ``VectorizeIndex``), with the hashed bag-of-words embedder instead of Workers
AI so a thousand documents ingest in seconds. Every request is checked against
Cloudflare's schemas (``fake.violations()`` stays empty).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
from cf_fake import FakeCloudflare
from conftest import make_settings
from fakes import FakeEmbedder

from rag.backends.cloudflare import vectorize
from rag.backends.cloudflare.audit import audit
from rag.backends.cloudflare.vectorize import VectorizeIndex
from rag.ingest import runner
from rag.registry import Overrides
from rag.service import RagService, open_service

MODEL = "fake-bow-32"


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no ``except Exception`` catches it."""


@pytest.fixture
def fake() -> FakeCloudflare:
    return FakeCloudflare()


@asynccontextmanager
async def cloudflare(fake: FakeCloudflare, tmp_path: Path) -> AsyncIterator[RagService]:
    raw = msgspec.to_builtins(fake.settings())
    raw.update(data_dir=str(tmp_path / "data"))
    settings = msgspec.convert(raw, type(fake.settings()))
    async with open_service(
        settings,
        Overrides(
            embedder=FakeEmbedder(32, MODEL),
            environ={"CLOUDFLARE_API_TOKEN": fake.token},
            cloudflare_transport=fake.transport,
            answer_embedder=FakeEmbedder(),
        ),
    ) as service:
        yield service
    assert fake.violations() == []


def write_docs(folder: Path, count: int, version: int = 0) -> None:
    """``count`` one-chunk documents; another ``version`` changes every one of them."""
    folder.mkdir(exist_ok=True)
    for i in range(count):
        text = f"# Note {i}\n\nNote {i} (revision {version}) is about topic {i * 7 % 101}.\n"
        (folder / f"n{i:05d}.md").write_text(text, encoding="utf-8")


def routes(fake: FakeCloudflare) -> list[str]:
    return [s.route for s in fake.vectorize.requests]


def writes(fake: FakeCloudflare) -> dict[str, int]:
    """Vectorize write requests by kind."""
    seen = routes(fake)
    return {
        "upsert": sum(r.endswith("/upsert") for r in seen),
        "delete": sum(r.endswith("/delete_by_ids") for r in seen),
    }


def queued(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT model_id, chunk_id, op FROM index_outbox ORDER BY id")
        found = [(str(m), str(c), str(o)) for m, c, o in rows]
    connection.close()
    return found


async def assert_clean(service: RagService, fake: FakeCloudflare, vectors: int) -> None:
    fake.vectorize.process()
    assert isinstance(service.index, VectorizeIndex)
    report = await audit(service.sessions, service.index, MODEL, sample=-1)
    assert report.clean, report.summary()
    assert (report.in_sqlite, report.in_vectorize) == (vectors, vectors)


@pytest.fixture
def batch_of_10(monkeypatch: pytest.MonkeyPatch) -> int:
    """Batches of 10 instead of 1,000: the same arithmetic, 100 times fewer documents.

    (At the real size, 2 x 2,500 documents gave 3 upsert, then 3 upsert + 3 delete
    requests, but took two minutes here: ingestion, not the outbox, costs ~20 ms a file.)
    """
    monkeypatch.setattr(runner, "FLUSH_AT", 10)
    monkeypatch.setattr(vectorize, "MAX_BATCH", 10)
    monkeypatch.setattr(vectorize, "ID_BATCH", 10)
    return 10


async def test_writes_are_batched_across_documents(
    fake: FakeCloudflare, tmp_path: Path, batch_of_10: int
) -> None:
    folder, db = tmp_path / "docs", tmp_path / "data" / "rag.db"
    write_docs(folder, 25)
    async with cloudflare(fake, tmp_path) as service:
        report = await service.ingest([folder])
        assert (report.new, report.chunks) == (25, 25)
        # Per document, as before the outbox, this was 25 upsert requests.
        assert writes(fake) == {"upsert": 3, "delete": 0}
        bodies = [s.body for s in fake.vectorize.writes()]
        assert [len(b.splitlines()) for b in bodies] == [10, 10, 5]
        assert queued(db) == []
        await assert_clean(service, fake, 25)

        # Every document changed: 25 deletes and 25 upserts, in 6 requests (was 50).
        write_docs(folder, 25, version=1)
        before = writes(fake)
        report = await service.ingest([folder])
        assert report.updated == 25
        after = writes(fake)
        assert (after["upsert"] - before["upsert"], after["delete"] - before["delete"]) == (3, 3)
        assert queued(db) == []
        await assert_clean(service, fake, 25)


async def test_a_flush_goes_out_before_a_document_would_overflow_the_batch(
    fake: FakeCloudflare, tmp_path: Path, batch_of_10: int
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(7):  # 4 chunks each: 28 vectors
        parts = [f"Part {p} of file {i} covers subject {i * 3 + p}. " * 20 for p in range(3)]
        (folder / f"d{i}.md").write_text("\n\n".join(parts), encoding="utf-8")
    async with cloudflare(fake, tmp_path) as service:
        report = await service.ingest([folder])
        assert (report.chunks, report.embedded) == (28, 28)
        bodies = [s.body for s in fake.vectorize.writes()]
        # 8 and flush: never 12, sent as 10 + a request of 2.
        assert [len(b.splitlines()) for b in bodies] == [8, 8, 8, 4]
        await assert_clean(service, fake, 28)


@pytest.mark.parametrize("killed_at", [1, 2])
async def test_a_run_killed_before_its_flush_is_drained_at_the_next_start(
    fake: FakeCloudflare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_at: int
) -> None:
    monkeypatch.setattr(runner, "FLUSH_AT", 4)
    folder, db = tmp_path / "docs", tmp_path / "data" / "rag.db"
    write_docs(folder, 10)
    calls = 0
    real_flush = vectorize.VectorizeIndex.flush

    async def dying_flush(self: vectorize.VectorizeIndex) -> int:
        nonlocal calls
        calls += 1
        if calls == killed_at + 1:  # the first call is open_service's drain
            raise Killed
        return await real_flush(self)

    monkeypatch.setattr(vectorize.VectorizeIndex, "flush", dying_flush)
    async with cloudflare(fake, tmp_path) as service:
        with pytest.raises(Killed):
            await service.ingest([folder])
    # SQLite committed every document up to the kill, and the writes they owe with them.
    committed = 4 * killed_at
    sent = 4 * (killed_at - 1)
    assert len(queued(db)) == committed - sent
    assert {(m, op) for m, _, op in queued(db)} == {(MODEL, "upsert")}
    assert writes(fake)["upsert"] == (1 if sent else 0)

    monkeypatch.setattr(vectorize.VectorizeIndex, "flush", real_flush)
    async with cloudflare(fake, tmp_path) as service:
        assert queued(db) == []  # drained by open_service, before any ingest
        await assert_clean(service, fake, committed)
        report = await service.ingest([folder])  # the rest, as after any interruption
        assert report.unchanged == committed and report.new == 10 - committed
        await assert_clean(service, fake, 10)


async def test_a_delete_queued_after_an_upsert_wins_and_the_reverse(
    fake: FakeCloudflare, tmp_path: Path
) -> None:
    folder, db = tmp_path / "docs", tmp_path / "data" / "rag.db"
    write_docs(folder, 2)
    note = folder / "n00000.md"
    text = note.read_text()

    async def unflushed(service: RagService) -> None:
        """An ingest whose writes stay queued (``flush`` does nothing)."""

        async def idle() -> int:
            return 0

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(service.index, "flush", idle)
            await service.ingest([folder])

    async with cloudflare(fake, tmp_path) as service:
        # Upsert, then delete, of the same id before any flush: only the delete goes out.
        await unflushed(service)
        note.unlink()
        await unflushed(service)
        assert [op for _, _, op in queued(db)] == ["upsert", "upsert", "delete"]
        gone = queued(db)[-1][1]
        assert queued(db)[0][1] == gone
        assert await service.index.flush() == 2
        fake.vectorize.process()
        seen = fake.vectorize.requests
        sent = [s for s in seen if s.route.endswith(("/upsert", "/delete_by_ids"))]
        assert [s.route.rsplit("/", 1)[1] for s in sent] == ["delete_by_ids", "upsert"]
        assert gone.encode() in sent[0].body and gone.encode() not in sent[1].body
        assert gone not in fake.vectorize.indexes["rag"].vectors
        await assert_clean(service, fake, 1)

        # Sent and served; then deleted and written back before the next flush: upserted.
        note.write_text(text)
        await service.ingest([folder])
        fake.vectorize.process()
        assert gone in fake.vectorize.indexes["rag"].vectors
        note.unlink()
        await unflushed(service)
        note.write_text(text)
        await unflushed(service)
        assert [op for _, cid, op in queued(db) if cid == gone] == ["delete", "upsert"]
        before = writes(fake)
        await service.index.flush()
        assert writes(fake)["delete"] == before["delete"]  # nothing to delete
        await assert_clean(service, fake, 2)

        # And a plain delete after it was served.
        note.unlink()
        await service.ingest([folder])
        assert queued(db) == []
        await assert_clean(service, fake, 1)
        assert gone not in fake.vectorize.indexes["rag"].vectors


async def test_rows_stay_queued_until_vectorize_accepts_the_write(
    fake: FakeCloudflare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectorize, "OUTBOX_PAGE", 7)  # several rounds per flush
    folder, db = tmp_path / "docs", tmp_path / "data" / "rag.db"
    write_docs(folder, 20)
    async with cloudflare(fake, tmp_path) as service:
        assert isinstance(service.index, VectorizeIndex)
        fake.fail_next("/upsert", 400, 40000, message="vectorize.invalid_request")
        with pytest.raises(Exception, match="invalid_request"):
            await service.ingest([folder])
        assert len(queued(db)) == 20  # refused: nothing was removed
        assert await service.index.queued() == 20
        assert await service.index.flush() == 20
        assert queued(db) == [] and await service.index.queued() == 0
        assert len(fake.calls("/upsert")) == 1 + 3  # the refused one, then 7 + 7 + 6
        assert writes(fake)["upsert"] == 3  # the refused one never reached the index
        await assert_clean(service, fake, 20)


async def test_open_service_starts_when_the_drain_fails(
    fake: FakeCloudflare,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, db = tmp_path / "docs", tmp_path / "data" / "rag.db"
    write_docs(folder, 3)
    async with cloudflare(fake, tmp_path) as service:

        async def idle() -> int:
            return 0

        monkeypatch.setattr(service.index, "flush", idle)
        await service.ingest([folder])
    assert len(queued(db)) == 3
    fake.fail_next("/upsert", 400, 40000, message="vectorize.invalid_request")
    async with cloudflare(fake, tmp_path) as service:
        assert "stay queued" in caplog.text
        assert len(queued(db)) == 3
        await service.ingest([folder])  # nothing changed, but the run's flush drains
        assert queued(db) == []
        await assert_clean(service, fake, 3)


async def test_the_local_backend_queues_nothing(tmp_path: Path) -> None:
    folder, db = tmp_path / "docs", tmp_path / "data" / "rag.db"
    write_docs(folder, 30)
    async with open_service(make_settings(tmp_path), Overrides(embedder=FakeEmbedder())) as service:
        await service.ingest([folder])
        write_docs(folder, 30, version=1)
        (folder / "n00000.md").unlink()
        report = await service.ingest([folder])
        assert (report.updated, report.deleted) == (29, 1)
        assert service.index.loaded() == 29  # the in-memory index was updated directly
    assert queued(db) == []
