"""Answer units are computed at ingestion, stored with their chunks and kept in step."""

from __future__ import annotations

from pathlib import Path

from fakes import FakeEmbedder
from sqlalchemy import func, select, text

from rag.backends.local.units import UnitIndex, unit_version
from rag.config import Settings
from rag.db.tables import Chunk, ChunkUnits
from rag.domain import DeltaEvent, DoneEvent
from rag.registry import Overrides
from rag.service import RagService, open_service

PAGE = """# Settings

| Key | Default | Meaning |
|---|---|---|
| `overlap_tokens` | `32` | Tokens repeated between neighbouring chunks. |

Back up the database with SQLite's online backup:
sqlite3 data/rag.db ".backup '/backups/rag.db'"
"""


async def _counts(service: RagService) -> tuple[int, int, set[str]]:
    async with service.sessions() as session:
        chunks = await session.scalar(select(func.count()).select_from(Chunk))
        units = await session.scalar(select(func.count()).select_from(ChunkUnits))
        versions = set(await session.scalars(select(ChunkUnits.version)))
    return chunks or 0, units or 0, versions


async def test_units_are_stored_at_ingestion_and_follow_edits_and_deletes(
    service: RagService, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    page = folder / "settings.md"
    page.write_text(PAGE, encoding="utf-8")
    await service.ingest([folder])
    chunks, units, versions = await _counts(service)
    assert chunks >= 1 and units == chunks
    assert versions == {unit_version(service.embedder.model_id)}

    page.write_text(PAGE.replace("`32`", "`48`"), encoding="utf-8")
    await service.ingest([folder])
    async with service.sessions() as session:
        orphans = await session.scalar(
            select(func.count())
            .select_from(ChunkUnits)
            .outerjoin(Chunk, Chunk.id == ChunkUnits.chunk_id)
            .where(Chunk.id.is_(None))
        )
    assert orphans == 0 and (await _counts(service))[1] == (await _counts(service))[0]

    page.unlink()
    await service.ingest([folder])
    assert await _counts(service) == (0, 0, set())


async def test_an_answer_embeds_only_its_question(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "settings.md").write_text(PAGE, encoding="utf-8")
    embedder = FakeEmbedder()
    async with open_service(settings, Overrides(embedder=embedder)) as service:
        await service.ingest([folder])
        embedder.calls.clear()
        events = [e async for e in service.ask("What is the default of overlap_tokens?")]
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.grounded
    assert "| `overlap_tokens` | `32` |" in done.answer
    # The question is embedded once (retrieval; the answerer reuses it), no unit at all.
    assert embedder.calls == [(1, "query")]
    assert any(isinstance(e, DeltaEvent) for e in events)


async def test_units_missing_or_unreadable_are_embedded_at_question_time(
    service: RagService, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "settings.md").write_text(PAGE, encoding="utf-8")
    await service.ingest([folder])
    async with service.sessions() as session, session.begin():
        await session.execute(text("DROP TABLE chunk_units"))  # a read that fails
    index = UnitIndex(FakeEmbedder(), service.sessions)
    assert await index.load(["any"]) == {}
    events = [e async for e in service.ask("What is the default of overlap_tokens?")]
    done = events[-1]
    assert isinstance(done, DoneEvent) and "`32`" in done.answer
