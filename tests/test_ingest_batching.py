"""Embedding across documents: full batches, shared texts embedded once, exact counts."""

from __future__ import annotations

import asyncio
import itertools
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import pytest
from conftest import make_settings
from fakes import FakeEmbedder

from rag.domain import ChunkDraft, LoadedDocument
from rag.ingest import store
from rag.ingest.batching import Prepared, Ready, Window
from rag.ingest.discover import Found
from rag.ports import EmbedKind, Progress, Vectors
from rag.registry import Overrides
from rag.service import open_service


class Recorder(Progress):
    def __init__(self) -> None:
        self.files: list[tuple[str, str, int]] = []
        self.embedded_total = 0
        self.embedded_at_file: list[int] = []
        """``embedded_total`` as each file was reported."""

    def file_done(self, path: str, outcome: str, chunks: int) -> None:
        self.files.append((path, outcome, chunks))
        self.embedded_at_file.append(self.embedded_total)

    def embedded(self, count: int) -> None:
        self.embedded_total += count


class FailingEmbedder(FakeEmbedder):
    """Raises on its ``fail_on``-th call (1-based), and works on every other."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.fail_on = fail_on

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        if len(self.calls) + 1 == self.fail_on:
            self.calls.append((len(texts), kind))
            raise RuntimeError("embedding service down")
        return await super().embed(texts, kind)


def paragraphs(folder: Path, count: int, *, parts: int = 1) -> None:
    """``count`` files of distinct text, ``parts`` chunks each."""
    folder.mkdir(exist_ok=True)
    for i in range(count):
        text = "\n\n".join(
            f"Part {p} of note {i} explains subject {i * 11 + p} in plain words. " * 12
            for p in range(parts)
        )
        (folder / f"n{i:03}.md").write_text(text + "\n", encoding="utf-8")


# The extractive answerer's units are embedded at ingestion too; on an embedder of their
# own here, so the calls counted are the chunks' alone.
UNITS = FakeEmbedder()


class Snapshot(TypedDict):
    docs: list[tuple[object, ...]]
    chunks: list[tuple[object, ...]]
    vectors: list[tuple[object, ...]]
    fts: int


def snapshot(db_path: Path) -> Snapshot:
    with sqlite3.connect(db_path) as db:
        state: Snapshot = {
            "docs": sorted(db.execute("SELECT id, path, status, sha256 FROM documents")),
            "chunks": sorted(db.execute("SELECT id, document_id, ordinal, sha256 FROM chunks")),
            "vectors": sorted(db.execute("SELECT chunk_id, model_id, vector FROM vectors")),
            "fts": db.execute("SELECT count(*) FROM chunks_fts").fetchone()[0],
        }
    db.close()
    return state


@pytest.mark.parametrize(("batch_size", "calls"), [(8, 5), (32, 2), (100, 1)])
async def test_forty_one_paragraph_files_make_few_embedding_calls(
    tmp_path: Path, batch_size: int, calls: int
) -> None:
    folder = tmp_path / "docs"
    paragraphs(folder, 40)
    embedder = FakeEmbedder()
    settings = make_settings(tmp_path, ingest={"batch_size": batch_size})
    progress = Recorder()
    async with open_service(
        settings, Overrides(embedder=embedder, answer_embedder=UNITS)
    ) as service:
        embedder.calls.clear()
        report = await service.ingest([folder], progress)
        assert service.index.loaded() == 40
    assert calls == math.ceil(40 / batch_size)  # one call per file before
    assert [size for size, _ in embedder.calls] == [batch_size] * (calls - 1) + [
        40 - batch_size * (calls - 1)
    ]
    assert (report.new, report.chunks, report.embedded, report.reused) == (40, 40, 40, 0)
    assert progress.embedded_total == 40
    # Written, and reported, in reading order.
    assert [path for path, _, _ in progress.files] == [f"n{i:03}.md" for i in range(40)]


async def test_a_text_two_files_share_is_embedded_once(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    shared = "The release train leaves every Tuesday at noon, whatever the weather. " * 10
    (folder / "a.md").write_text(shared, encoding="utf-8")
    (folder / "b.md").write_text(shared, encoding="utf-8")
    (folder / "c.md").write_text("Something else entirely: the cafeteria menu.", encoding="utf-8")
    embedder = FakeEmbedder()
    async with open_service(
        make_settings(tmp_path), Overrides(embedder=embedder, answer_embedder=UNITS)
    ) as service:
        embedder.calls.clear()
        report = await service.ingest([folder])
        assert service.index.loaded() == 3
    assert [size for size, _ in embedder.calls] == [2]
    assert (report.new, report.chunks, report.embedded, report.reused) == (3, 3, 2, 1)
    state = snapshot(tmp_path / "data" / "rag.db")
    assert len(state["chunks"]) == len(state["vectors"]) == state["fts"] == 3


async def test_counts_stay_exact_across_runs_and_outcomes(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    paragraphs(folder, 6, parts=3)
    embedder = FakeEmbedder()
    settings = make_settings(tmp_path, ingest={"batch_size": 4})
    async with open_service(
        settings, Overrides(embedder=embedder, answer_embedder=UNITS)
    ) as service:
        first = await service.ingest([folder])
        assert first.embedded == first.chunks == sum(size for size, _ in embedder.calls)

        # A copy of a stored file (vectors known), a changed file, a new one, a bad one.
        (folder / "copy.md").write_bytes((folder / "n000.md").read_bytes())
        changed = folder / "n001.md"
        changed.write_text(changed.read_text() + "\nA closing remark on the weather.\n")
        paragraphs(folder / "more", 2, parts=2)
        (folder / "empty.md").write_text("", encoding="utf-8")
        embedder.calls.clear()
        progress = Recorder()
        report = await service.ingest([folder], progress)
        indexed = service.index.loaded()

    counts = report.counts()
    assert (counts["new"], counts["updated"], counts["unchanged"]) == (3, 1, 5)
    assert counts["skipped"] + counts["failed"] == 1
    embedded = sum(size for size, _ in embedder.calls)
    assert report.embedded == embedded == progress.embedded_total
    assert report.chunks == report.embedded + report.reused
    assert report.chunks == sum(chunks for _, _, chunks in progress.files)
    assert len(progress.files) == report.files == 10
    # The copy and the changed file's untouched chunks cost nothing.
    copy_chunks = next(c for path, _, c in progress.files if path == "copy.md")
    assert report.reused >= copy_chunks + 2
    state = snapshot(tmp_path / "data" / "rag.db")
    assert len(state["chunks"]) == len(state["vectors"]) == state["fts"] == indexed


async def test_embedded_texts_are_reported_with_their_document(tmp_path: Path) -> None:
    # Batches of 4 texts span files of 3 chunks: a batch comes back before the second
    # file it serves is written, yet its texts count only when that file is reported.
    folder = tmp_path / "docs"
    paragraphs(folder, 6, parts=3)
    progress = Recorder()
    settings = make_settings(tmp_path, ingest={"batch_size": 4})
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        report = await service.ingest([folder], progress)
    chunks_at_file = list(itertools.accumulate(chunks for _, _, chunks in progress.files))
    assert chunks_at_file == [3, 6, 9, 12, 15, 18]
    assert progress.embedded_at_file == chunks_at_file  # every text new: one vector a chunk
    assert progress.embedded_total == report.embedded == 18


async def test_an_embedding_failure_keeps_what_was_written_and_the_rerun_completes(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "docs"
    paragraphs(folder, 6, parts=3)  # 3 chunks a file
    failed_dir, clean_dir = tmp_path / "failed", tmp_path / "clean"
    settings = make_settings(failed_dir, ingest={"batch_size": 4})

    # Call 1 embeds n000's 3 texts and one of n001's; call 2 fails: n000 alone is written,
    # n001's vector computed but not written is simply redone by the next run.
    async with open_service(
        settings, Overrides(embedder=FailingEmbedder(fail_on=2), answer_embedder=UNITS)
    ) as service:
        with pytest.raises(RuntimeError, match="service down"):
            await service.ingest([folder])
    partial = snapshot(failed_dir / "data" / "rag.db")
    assert [path for _, path, _, _ in partial["docs"]] == ["n000.md"]
    assert len(partial["chunks"]) == len(partial["vectors"]) == partial["fts"] == 3

    embedder = FakeEmbedder()
    async with open_service(
        settings, Overrides(embedder=embedder, answer_embedder=UNITS)
    ) as service:
        resumed = await service.ingest([folder])
        assert service.index.loaded() == 18
    assert (resumed.unchanged, resumed.new, resumed.embedded) == (1, 5, 15)
    assert sum(size for size, _ in embedder.calls) == 15

    async with open_service(
        make_settings(clean_dir), Overrides(embedder=FakeEmbedder())
    ) as service:
        await service.ingest([folder])
    assert snapshot(failed_dir / "data" / "rag.db") == snapshot(clean_dir / "data" / "rag.db")


def prepared(name: str, texts: list[str], known: dict[str, bytes] | None = None) -> Prepared:
    drafts = [
        ChunkDraft(i, text, token_count=1, sha256=f"sha-{text}", char_start=0, char_end=1)
        for i, text in enumerate(texts)
    ]
    facts = store.DocumentFacts(name, "root", name, name, 1, 1)
    item = Found(Path("/root") / name, Path("/root"))
    loaded = LoadedDocument(title=name, media_type="text/plain", sections=())
    return Prepared(item, facts, "new", loaded, drafts, [name] * len(drafts), known or {})


async def test_the_window_pauses_reading_at_its_text_cap_and_serves_in_order() -> None:
    window = Window(batch_size=2)  # room for 4 x 2 texts waiting
    await window.add(prepared("a", ["1", "2", "3"]))
    await window.add(prepared("b", ["3", "4", "5", "6"], known={"sha-4": b"k"}))
    assert window.max_texts == 8
    await window.add(prepared("c", ["7", "8", "10"]))  # 7 waiting: room; now 8, full
    blocked = asyncio.ensure_future(window.add(prepared("d", ["9"])))
    await asyncio.sleep(0.01)
    assert not blocked.done()

    batch = await window.next()
    assert batch == {"sha-1": "1", "sha-2": "2"}
    await window.store(list(batch), [b"v1", b"v2"])
    batch = await window.next()
    assert batch == {"sha-3": "3", "sha-5": "5"}  # "3" once for a and b; "4" is known
    await window.store(list(batch), [b"v3", b"v5"])
    first = await window.next()
    assert isinstance(first, Ready)
    assert (first.prepared.item.relpath, first.embedded) == ("a", 3)
    assert first.vectors == {"sha-1": b"v1", "sha-2": b"v2", "sha-3": b"v3"}
    await asyncio.sleep(0.01)
    assert blocked.done()  # a left: room again
    await window.close()

    batch = await window.next()
    assert batch == {"sha-6": "6", "sha-7": "7"}
    await window.store(list(batch), [b"v6", b"v7"])
    second = await window.next()
    assert isinstance(second, Ready) and second.prepared.item.relpath == "b"
    assert second.embedded == 2  # "5" and "6"; "3" counted for a, "4" was known
    assert second.vectors == {"sha-3": b"v3", "sha-4": b"k", "sha-5": b"v5", "sha-6": b"v6"}
    batch = await window.next()
    assert batch == {"sha-8": "8", "sha-10": "10"}
    await window.store(list(batch), [b"v8", b"v10"])
    third = await window.next()
    assert isinstance(third, Ready) and third.prepared.item.relpath == "c"
    assert await window.next() == {"sha-9": "9"}  # closed: the rest goes out short
    await window.store(["sha-9"], [b"v9"])
    last = await window.next()
    assert isinstance(last, Ready) and last.vectors == {"sha-9": b"v9"}
    assert await window.next() is None
