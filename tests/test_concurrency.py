"""Several processes on one database: nothing lost, nothing crashes, nothing done twice.

What replicas and ingestion runs meet on a shared database
(docs/design.md#several-processes-one-database): the generation counter bumped from
many places at once, two runs writing the same documents, processes starting together
on an empty database (the migration, and the ingest of the bundled corpus). Each runs
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_settings
from fakes import FakeEmbedder
from pg import Cluster
from sqlalchemy import func, select

from rag.cli.serve import ingest_bundled_corpus
from rag.config import Settings
from rag.db.engine import upgrade
from rag.db.tables import Chunk, Document, IngestRun, Vector
from rag.ingest import store
from rag.registry import Overrides
from rag.service import RagService, open_service

RAG = str(Path(sys.executable).parent / "rag")


async def test_the_generation_counter_loses_no_bump(service: RagService) -> None:
    async def bump() -> None:
        async with service.sessions() as session, session.begin():
            await store.bump_generation(session)

    before = await generation(service)
    await asyncio.gather(*(bump() for _ in range(48)))
    assert await generation(service) == before + 48


async def generation(service: RagService) -> int:
    async with service.sessions() as session:
        return await store.generation(session)


def write_folder(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for n in range(count):
        (folder / f"doc{n}.md").write_text(f"# Topic {n}\n\nParagraph {n} about subject {n}.\n")


async def test_two_ingests_of_one_folder_at_once_both_finish(
    tmp_path: Path, settings: Settings
) -> None:
    # Two runs (two `rag ingest` processes: two services, two engines) meet on every
    # document; each writes it with one upsert, so neither crashes on the unique source.
    folder = tmp_path / "docs"
    write_folder(folder, 12)
    async with (
        open_service(settings, Overrides(embedder=FakeEmbedder())) as one,
        open_service(settings, Overrides(embedder=FakeEmbedder())) as two,
    ):
        reports = await asyncio.gather(one.ingest([folder]), two.ingest([folder]))
        for report in reports:
            assert report.failed == 0 and report.problems == []
        async with one.sessions() as session:
            documents = await session.scalar(select(func.count()).select_from(Document))
            chunks = await session.scalar(select(func.count()).select_from(Chunk))
            vectors = await session.scalar(select(func.count()).select_from(Vector))
        assert documents == 12 and chunks == vectors == 12
        again = await one.ingest([folder])
        assert again.unchanged == 12 and again.embedded == 0


@pytest.fixture
def empty_database(database: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """``[database] url`` of a database with no tables at all."""
    if database == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'state' / 'rag.db'}"
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database(migrated=False)
    yield url
    cluster.drop(url)


def test_four_processes_migrate_one_empty_database_at_once(
    tmp_path: Path, empty_database: str
) -> None:
    env = {**os.environ, "RAG_DATABASE__URL": empty_database, "RAG_DATA_DIR": str(tmp_path)}
    processes = [
        subprocess.Popen(
            [RAG, "db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    later = subprocess.run([RAG, "db", "upgrade"], env=env, capture_output=True, check=False)
    assert later.returncode == 0, later.stderr.decode()


async def test_only_one_of_several_starting_processes_ingests_the_bundled_corpus(
    tmp_path: Path, empty_database: str
) -> None:
    corpus = tmp_path / "corpus"
    write_folder(corpus, 3)
    settings = make_settings(tmp_path, database={"url": empty_database})

    async def start() -> None:
        async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
            await ingest_bundled_corpus(service, corpus)

    await asyncio.gather(*(start() for _ in range(3)))
    await upgrade(empty_database)
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        async with service.sessions() as session:
            runs = await session.scalar(select(func.count()).select_from(IngestRun))
        assert runs == 1
        assert (await service.health())["documents"] == 3
