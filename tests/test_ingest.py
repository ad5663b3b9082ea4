"""The ingestion job: idempotent, incremental, deletes what vanished, survives bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeEmbedder
from sqlalchemy import text

from rag.config import IngestSettings, Settings
from rag.domain import LoadedDocument
from rag.errors import InputError
from rag.ingest.loaders import load
from rag.registry import Overrides
from rag.service import RagService, open_service

DOCS = {
    "guide.md": "# Guide\n\n## Install\n\nRun the installer with pip. "
    + "It takes a minute on a fresh machine. " * 30
    + "\n\n## Configure\n\nEdit config.toml to change the port and the model. "
    + "Every key has an environment override. " * 30,
    "notes.txt": "Plain notes about the weekly release train. " * 40,
    "page.html": "<html><head><title>Status page</title></head><body><h1>Status</h1>"
    "<p>The service answers questions with citations.</p><h2>Uptime</h2>"
    "<p>Ninety nine point nine percent of requests succeed.</p></body></html>",
}


def write_docs(folder: Path, docs: dict[str, str | bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in docs.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


async def table_counts(service: RagService) -> dict[str, int]:
    # The keyword index's entries: FTS5's table on SQLite, the tsvector column on PostgreSQL.
    keyword = (
        "SELECT count(*) FROM chunks_fts"
        if service.engine.dialect.name == "sqlite"
        else "SELECT count(search_vector) FROM chunks"
    )
    async with service.sessions() as session:
        counts = {
            name: int(await session.scalar(text(f"SELECT count(*) FROM {name}")) or 0)
            for name in ("documents", "chunks", "vectors")
        }
        counts["fts"] = int(await session.scalar(text(keyword)) or 0)
    return counts


async def test_second_run_embeds_nothing(service: RagService, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_docs(folder, dict(DOCS))
    first = await service.ingest([folder])
    assert (first.new, first.failed, first.skipped) == (3, 0, 0)
    assert first.embedded == first.chunks > 3
    second = await service.ingest([folder])
    assert (second.new, second.updated, second.unchanged, second.embedded) == (0, 0, 3, 0)
    assert "3 unchanged" in second.summary()
    counts = await table_counts(service)
    assert counts["chunks"] == counts["vectors"] == first.chunks == service.index.loaded()


async def test_changed_file_reembeds_only_changed_chunks(
    service: RagService, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    write_docs(folder, dict(DOCS))
    first = await service.ingest([folder])
    guide = folder / "guide.md"
    guide.write_text(guide.read_text() + "\n\n## Upgrade\n\nRun rag db upgrade after pulling.\n")
    again = await service.ingest([folder])
    assert (again.updated, again.unchanged) == (1, 2)
    assert 1 <= again.embedded < first.chunks // 2
    counts = await table_counts(service)
    assert counts["chunks"] == counts["vectors"] == counts["fts"] == service.index.loaded()
    hits = await service.search("rag db upgrade after pulling", 3)
    assert hits[0].source == "guide.md"
    assert hits[0].heading_path[-1] == "Upgrade"


async def test_a_new_loader_or_chunker_version_rechunks_stored_documents(
    service: RagService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "docs"
    write_docs(folder, dict(DOCS))
    await service.ingest([folder])
    # Files unchanged, but loaders or chunker now cut them differently: every stored
    # document is read and chunked again (text that kept its chunks keeps its vectors).
    monkeypatch.setattr("rag.ingest.chunker.CHUNKER_VERSION", "chunker-next")
    again = await service.ingest([folder])
    assert (again.updated, again.unchanged, again.embedded) == (3, 0, 0)
    assert (await service.ingest([folder])).unchanged == 3


async def test_vanished_file_loses_document_chunks_and_vectors(
    service: RagService, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    write_docs(folder, dict(DOCS))
    await service.ingest([folder])
    before = await table_counts(service)
    (folder / "notes.txt").unlink()
    report = await service.ingest([folder])
    assert report.deleted == 1
    after = await table_counts(service)
    assert after["documents"] == before["documents"] - 1
    assert after["chunks"] == after["vectors"] == after["fts"] == service.index.loaded()
    assert after["chunks"] < before["chunks"]
    hits = await service.search("weekly release train", 10)
    assert all(hit.source != "notes.txt" for hit in hits)


async def test_bad_files_are_recorded_and_the_batch_goes_on(
    service: RagService, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    docs: dict[str, str | bytes] = dict(DOCS)
    docs["empty.md"] = ""
    docs["binary.txt"] = bytes(range(256)) * 20
    docs["broken.pdf"] = b"%PDF-1.7\n1 0 obj <<\n"  # truncated right after the header
    docs["ignored.xyz"] = "not a format we read"
    write_docs(folder, docs)
    report = await service.ingest([folder])
    assert report.new == 3
    assert report.ignored == 1
    assert report.skipped + report.failed == 3
    reasons = {p["path"]: p["reason"] for p in report.problems}
    assert set(reasons) == {"empty.md", "binary.txt", "broken.pdf"}
    assert all(len(reason) > 5 for reason in reasons.values())
    again = await service.ingest([folder])
    assert again.unchanged == 6 and again.embedded == 0


async def test_single_file_and_missing_path(service: RagService, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_docs(folder, dict(DOCS))
    report = await service.ingest([folder / "notes.txt"])
    assert report.new == 1
    with pytest.raises(InputError, match="nope"):
        await service.ingest([tmp_path / "nope"])


async def test_a_loader_bug_costs_one_file_not_the_batch(
    settings: Settings, tmp_path: Path
) -> None:
    def flaky_load(path: Path, settings: IngestSettings) -> LoadedDocument:
        if path.name == "notes.txt":
            raise KeyError("boom")
        return load(path, settings)

    folder = tmp_path / "docs"
    write_docs(folder, dict(DOCS))
    overrides = Overrides(embedder=FakeEmbedder(), loader=flaky_load)
    async with open_service(settings, overrides) as service:
        report = await service.ingest([folder])
    assert (report.new, report.failed) == (2, 1)
    assert "unexpected error" in report.problems[0]["reason"]
