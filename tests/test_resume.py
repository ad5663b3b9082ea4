"""Killing an ingest run with SIGKILL at any point loses nothing and duplicates nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TypedDict

import pytest
from conftest import QUICK_JOBS, make_settings
from fakes import FakeEmbedder

from rag.registry import Overrides
from rag.service import open_service

HERE = Path(__file__).parent


def make_folder(folder: Path, files: int) -> None:
    folder.mkdir()
    for i in range(files):
        body = "\n\n".join(
            f"Section {j} of file {i}: the {j}th paragraph talks about topic {i * 7 + j}. " * 12
            for j in range(4)
        )
        (folder / f"doc{i:02}.md").write_text(f"# Document {i}\n\n{body}\n", encoding="utf-8")


class Snapshot(TypedDict):
    chunks: list[tuple[object, ...]]
    vectors: list[tuple[object, ...]]
    docs: list[tuple[object, ...]]
    fts: int
    fts_rows: int


def snapshot(db_path: Path) -> Snapshot:
    with sqlite3.connect(db_path) as db:
        chunks = sorted(db.execute("SELECT id, document_id, ordinal, sha256 FROM chunks"))
        vectors = sorted(db.execute("SELECT chunk_id, model_id, vector FROM vectors"))
        docs = sorted(db.execute("SELECT id, path, status, sha256 FROM documents"))
        fts = db.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
        fts_rows = db.execute("SELECT count(*) FROM chunks_fts_docsize").fetchone()[0]
    db.close()
    return {"chunks": chunks, "vectors": vectors, "docs": docs, "fts": fts, "fts_rows": fts_rows}


def documents_written(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(db_path, timeout=0.1) as db:
            count = int(db.execute("SELECT count(*) FROM documents").fetchone()[0])
        db.close()
        return count
    except sqlite3.OperationalError:
        return 0  # not migrated yet, or busy


def kill_midway(victim_dir: Path, folder: Path, kill_after: int) -> Path:
    """Start an ingest in another process and SIGKILL it once it has written some documents."""
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    process = subprocess.Popen(
        [sys.executable, str(HERE / "ingest_victim.py"), str(victim_dir), str(folder)], env=env
    )
    db_path = victim_dir / "data" / "rag.db"
    deadline = time.monotonic() + 60
    while documents_written(db_path) <= kill_after and process.poll() is None:
        assert time.monotonic() < deadline, "the victim never got going"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return db_path


@pytest.mark.parametrize("kill_after", [0, 3, 11])
async def test_sigkill_then_rerun_equals_a_clean_run(tmp_path: Path, kill_after: int) -> None:
    folder = tmp_path / "docs"
    make_folder(folder, 16)
    victim_dir = tmp_path / "victim"
    db_path = kill_midway(victim_dir, folder, kill_after)
    interrupted = documents_written(db_path)
    assert interrupted < 16
    # "interrupted" means the run's heartbeat stopped, not that another run started.
    await asyncio.sleep(QUICK_JOBS["stale_after_s"] + 0.1)

    async with open_service(
        make_settings(victim_dir, jobs=QUICK_JOBS), Overrides(embedder=FakeEmbedder())
    ) as service:
        resumed = await service.ingest([folder])
        loaded = service.index.loaded()
    assert resumed.new + resumed.unchanged + resumed.updated == 16
    assert resumed.unchanged >= kill_after

    clean_dir = tmp_path / "clean"
    async with open_service(
        make_settings(clean_dir), Overrides(embedder=FakeEmbedder())
    ) as service:
        await service.ingest([folder])
    resumed_state = snapshot(db_path)
    assert resumed_state == snapshot(clean_dir / "data" / "rag.db")
    assert resumed_state["fts"] == resumed_state["fts_rows"] == len(resumed_state["chunks"])
    assert loaded == len(resumed_state["vectors"]) == len(resumed_state["chunks"])
    with sqlite3.connect(db_path) as db:
        statuses = [row[0] for row in db.execute("SELECT status FROM ingest_runs ORDER BY id")]
    db.close()
    assert statuses == ["interrupted", "finished"]
