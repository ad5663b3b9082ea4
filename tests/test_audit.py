"""``rag audit``: SQLite against Vectorize (the fake), each kind of drift, and repair.

Ingestion is played by hand here (rows into a migrated SQLite, then the index calls
the ingest runner makes), so these tests do not depend on the service wiring.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cf_fake import FakeCloudflare
from click.testing import CliRunner, Result
from sqlalchemy import delete
from test_vectorize import Env, add_chunks, env, migrated, unit

from rag.backends.cloudflare.audit import audit, repair
from rag.backends.local.vector_index import NumpyIndex
from rag.cli import cloudflare as cli_cloudflare
from rag.cli import main
from rag.db.engine import create_engine, session_factory
from rag.db.tables import Chunk, Document
from rag.errors import ConfigError

__all__ = ["env", "migrated"]  # fixtures shared with test_vectorize

MODEL = "@cf/baai/bge-base-en-v1.5"


async def ingest(e: Env, doc: str, ids: list[str], vectors: Any) -> None:
    """What the ingest runner does per document: commit to SQLite, then upsert."""
    await add_chunks(e.sessions, doc, ids, vectors, MODEL)
    await e.index.upsert(ids, vectors)


async def forget(e: Env, ids: list[str], doc: str | None = None) -> None:
    async with e.sessions() as session, session.begin():
        await session.execute(delete(Chunk).where(Chunk.id.in_(ids)))
        if doc is not None:
            await session.execute(delete(Document).where(Document.id == doc))
    await e.index.delete(ids)


async def three_documents_later(e: Env) -> np.ndarray[Any, Any]:
    """Ingest A and B, delete B, re-ingest A with one chunk changed; all processed."""
    vectors = unit(6, seed=1)
    await e.index.create()
    await ingest(e, "A", ["a1", "a2", "a3"], vectors[:3])
    await ingest(e, "B", ["b1", "b2"], vectors[3:5])
    await forget(e, ["b1", "b2"], doc="B")
    await forget(e, ["a2"])
    await ingest(e, "A", ["a4"], vectors[5:])
    await e.index.wait_for_mutations(10.0)
    return vectors


async def test_after_ingest_delete_and_reingest_the_audit_is_clean(env: Env) -> None:
    await three_documents_later(env)
    report = await audit(env.sessions, env.index, MODEL, sample=-1)
    assert report.clean, report.summary()
    assert (report.in_sqlite, report.in_vectorize, report.sampled) == (3, 3, 3)
    assert "clean" in report.summary()
    assert sorted(env.vz.indexes["rag"].vectors) == ["a1", "a3", "a4"]


async def test_audit_finds_each_kind_of_drift_and_repair_clears_it(env: Env) -> None:
    vectors = await three_documents_later(env)
    env.vz.indexes["rag"].vectors.pop("a1")  # a write that never landed
    env.vz.put("rag", "ghost", unit(1, seed=5)[0].tolist(), {"document_id": "Z"})  # lost delete
    env.vz.put("rag", "a3", unit(1, seed=6)[0].tolist(), {"document_id": "A"})  # other values
    env.vz.put("rag", "a4", vectors[5].tolist(), {"document_id": "B"})  # wrong document
    report = await audit(env.sessions, env.index, MODEL, sample=-1)
    assert (report.missing, report.orphaned, report.stale) == (["a1"], ["ghost"], ["a3", "a4"])
    assert "1 missing, 1 orphaned, 2 stale" in report.summary()
    unsampled = await audit(env.sessions, env.index, MODEL, sample=0)
    assert (unsampled.missing, unsampled.orphaned, unsampled.stale) == (["a1"], ["ghost"], [])
    sampled = await audit(env.sessions, env.index, MODEL, sample=1, rng=random.Random(0))
    assert sampled.sampled == 1

    assert await repair(env.sessions, env.index, report) == 4
    await env.index.wait_for_mutations(10.0)
    after = await audit(env.sessions, env.index, MODEL, sample=-1)
    assert after.clean, after.summary()
    served = {v.id: v for v in await env.index.get_by_ids(["a1", "a3", "a4"])}
    assert np.allclose(served["a3"].values, vectors[2])
    assert served["a4"].metadata == {"document_id": "A"}


async def test_repair_keeps_an_orphan_that_sqlite_regained_since(env: Env) -> None:
    await three_documents_later(env)
    env.vz.put("rag", "late", unit(1)[0].tolist(), {"document_id": "A"})
    report = await audit(env.sessions, env.index, MODEL, sample=0)
    assert report.orphaned == ["late"]
    await add_chunks(env.sessions, "A", ["late"], unit(1), MODEL)  # an ingest got there first
    assert await repair(env.sessions, env.index, report) == 0
    assert not any(s.route.endswith("delete_by_ids") and b"late" in s.body for s in env.vz.requests)


async def test_pending_writes_are_reported_with_the_drift(env: Env) -> None:
    env.vz.delay = None
    await env.index.create()
    await ingest(env, "A", ["a1"], unit(1))
    report = await audit(env.sessions, env.index, MODEL)
    assert report.missing == ["a1"] and report.pending_mutations == 2
    assert "2 writes still queued" in report.summary()


async def test_wait_for_index_reports_instead_of_raising(env: Env) -> None:
    env.vz.delay = None
    await env.index.upsert(["a"], unit(1), [{"document_id": "d"}])
    problem = await cli_cloudflare.wait_for_index(env.index, 0.01, quiet=True)
    assert "not processed 2 of 2 writes" in problem
    env.vz.process()
    assert await cli_cloudflare.wait_for_index(env.index, 1.0, quiet=True) == ""
    with pytest.raises(ConfigError, match="--wait needs the cloudflare backend"):
        await cli_cloudflare.wait_for_index(NumpyIndex(4, "m"), 1.0, quiet=True)


# The command line, on the fake through the CLI's transport seam.


@pytest.fixture
def cli(tmp_path: Path, migrated: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeCloudflare()
    # Writes land on the next request, so the commands' waits need no real sleeping.
    fake.vectorize.delay = 1
    monkeypatch.setattr(cli_cloudflare, "TRANSPORT", fake.transport)
    (tmp_path / "data").mkdir()
    shutil.copy(migrated, tmp_path / "data" / "rag.db")
    config = tmp_path / "config.toml"
    config.write_text(
        f'backend = "cloudflare"\ndata_dir = "{tmp_path / "data"}"\n[cloudflare]\n'
        f'api_base = "https://api.cloudflare.test/client/v4"\naccount_id = "{fake.account_id}"\n'
    )
    environ = {"RAG_CONFIG": str(config), "CLOUDFLARE_API_TOKEN": fake.token, "COLUMNS": "200"}

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        merged = {**environ, **(env or {})}
        return CliRunner().invoke(main, list(args), env=merged, catch_exceptions=False)

    yield fake, run, tmp_path / "data" / "rag.db"
    assert fake.schema_errors == [] and fake.fake_errors == []


def test_cli_vectorize_create_and_info(cli: Any) -> None:
    _, run, _ = cli
    created = run("vectorize", "create")
    assert created.exit_code == 0, created.output
    assert "'rag' created 768-d cosine" in created.output
    assert "already exists and fits" in run("vectorize", "create").output
    info = run("vectorize", "info", "--json")
    data = json.loads(info.output)
    assert (data["dimensions"], data["metric"], data["vector_count"]) == (768, "cosine", 0)
    assert data["metadata_indexes"] == {"document_id": "string"}
    assert data["pending_writes"] == 0
    assert "document_id" in run("vectorize", "info").output


def test_cli_vectorize_create_refuses_a_mismatched_index(cli: Any) -> None:
    fake, run, _ = cli
    fake.vectorize.add_index("rag", 384)
    result = run("vectorize", "create")
    assert result.exit_code == 1
    assert "384-d cosine, but the embedder needs 768-d cosine" in result.output
    assert not fake.vectorize.writes()


def test_cli_audit_and_repair(cli: Any) -> None:
    fake, run, db = cli
    assert run("vectorize", "create").exit_code == 0
    vectors = unit(3, dim=768, seed=2)

    async def seed() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        await add_chunks(session_factory(engine), "A", ["a1", "a2", "a3"], vectors, MODEL)
        await engine.dispose()

    asyncio.run(seed())
    fake.vectorize.put("rag", "a1", vectors[0].tolist(), {"document_id": "A"})
    fake.vectorize.put("rag", "a2", vectors[0].tolist(), {"document_id": "A"})  # stale
    fake.vectorize.put("rag", "gone", vectors[0].tolist(), {"document_id": "A"})  # orphan

    found = run("audit", "--json")
    assert found.exit_code == 1
    report = json.loads(found.output)
    assert (report["missing"], report["orphaned"], report["stale"]) == (["a3"], ["gone"], ["a2"])
    assert "1 missing, 1 orphaned, 1 stale" in run("audit").output

    fixed = run("audit", "--repair", "--json")
    assert fixed.exit_code == 0, fixed.output
    data = json.loads(fixed.output)
    assert data["repaired"] == 3 and data["after"]["clean"] is True
    assert run("audit").exit_code == 0


def test_cli_audit_without_an_index(cli: Any) -> None:
    _, run, _ = cli
    result = run("audit")
    assert result.exit_code == 2  # a named thing that does not exist: as a missing run or key
    assert "does not exist: run `rag vectorize create`" in result.output


def test_cli_create_needs_a_dimension_for_an_unknown_model(cli: Any) -> None:
    fake, run, _ = cli
    other = {"RAG_CLOUDFLARE__EMBED_MODEL": "@cf/someone/new-embedder"}
    refused = run("vectorize", "create", env=other)
    assert refused.exit_code == 2 and "pass --dimension" in refused.output
    assert run("vectorize", "create", "--dimension", "1024", env=other).exit_code == 0
    assert fake.vectorize.indexes["rag"].dimensions == 1024
