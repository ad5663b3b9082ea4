"""Every process's in-memory index follows the change log to the database's exact state."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import make_settings
from fakes import FakeEmbedder
from test_resume import make_folder

from rag.backends.local.follower import Follower
from rag.backends.local.vector_index import NumpyIndex
from rag.config import Settings
from rag.db import index_log
from rag.db.engine import upgrade_sync
from rag.registry import Overrides
from rag.service import RagService, open_service

HERE = Path(__file__).parent
MODEL = FakeEmbedder().model_id


def stored_ids(settings: Settings) -> set[str]:
    path = Path(settings.data_dir) / "rag.db"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT chunk_id FROM vectors WHERE model_id = ?", (MODEL,))
        ids = {str(r[0]) for r in rows}
    db.close()
    return ids


def follower_of(service: RagService) -> Follower:
    assert isinstance(service.index, NumpyIndex) and service.index.follower is not None
    return service.index.follower


def test_processes_writing_at_once_all_end_equal_to_the_database(tmp_path: Path) -> None:
    """Two serving processes ingest, delete and edit while a third ingests (a CLI run)."""
    settings = make_settings(tmp_path)
    upgrade_sync(settings.database_url)  # a migration race is not what this is about
    folders = []
    for name in ("a", "b", "c"):
        make_folder(tmp_path / name, 12)
        folders.append(tmp_path / name)
    script = str(HERE / "index_replica.py")
    modes = ("serve", "serve", "ingest")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(tmp_path), str(folder), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=HERE,
        )
        for folder, mode in zip(folders, modes, strict=True)
    ]
    try:
        servers = procs[:2]
        for proc in servers:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        _, err = procs[2].communicate(timeout=120)
        assert procs[2].returncode == 0, err
        held = []
        for proc in servers:
            out, err = proc.communicate("go\n", timeout=60)
            assert proc.returncode == 0, err
            held.append(set(json.loads(out)))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    expected = stored_ids(settings)
    assert len(expected) > 100
    for ids in held:
        assert ids - expected == set()  # nothing extra
        assert expected - ids == set()  # nothing missing


async def test_many_requests_after_an_outside_write_apply_it_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    make_folder(tmp_path / "docs", 6)
    make_folder(tmp_path / "more", 4)
    fake = Overrides(embedder=FakeEmbedder())
    async with open_service(settings, fake) as reader, open_service(settings, fake) as writer:
        follower = follower_of(reader)
        await writer.ingest([tmp_path / "docs"])
        hits = await asyncio.gather(*(reader.search("paragraph topic") for _ in range(50)))
        assert all(hits)
        assert (follower.deltas, follower.reloads) == (1, 0)  # one pass applied it
        assert set(follower.index.ids()) == stored_ids(settings)

        # The log no longer reaches back to where the reader is: one reload, not fifty.
        await writer.ingest([tmp_path / "more"])
        async with writer.sessions.begin() as session:
            assert await index_log.prune(session, 0) > 0
        await asyncio.gather(*(reader.search("paragraph topic") for _ in range(50)))
        assert (follower.deltas, follower.reloads) == (1, 1)
        assert set(follower.index.ids()) == stored_ids(settings)


async def test_own_writes_go_through_the_log(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    make_folder(tmp_path / "docs", 3)
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        follower = follower_of(service)
        report = await service.ingest([tmp_path / "docs"])
        assert report.chunks > 0
        assert follower.deltas == 3  # one pass per document written, none skipped
        assert set(follower.index.ids()) == stored_ids(settings)
        doc = (await service.search("paragraph topic"))[0].document_id
        assert await service.delete_document(doc) is not None
        assert set(follower.index.ids()) == stored_ids(settings)
        assert follower.reloads == 0


async def test_a_request_that_goes_away_does_not_cancel_the_pass(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    make_folder(tmp_path / "docs", 2)
    fake = Overrides(embedder=FakeEmbedder())
    async with open_service(settings, fake) as reader, open_service(settings, fake) as writer:
        follower = follower_of(reader)
        await writer.ingest([tmp_path / "docs"])
        leaving = asyncio.ensure_future(follower.catch_up())
        staying = asyncio.ensure_future(follower.catch_up())
        await asyncio.sleep(0)
        leaving.cancel()
        await staying
        assert set(follower.index.ids()) == stored_ids(settings)
        assert follower.deltas == 1


async def test_the_log_is_pruned_to_its_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, index={"log_keep_rows": 5})
    make_folder(tmp_path / "docs", 4)
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        await service.ingest([tmp_path / "docs"])  # prunes when it is done
        async with service.sessions() as session:
            rows = await index_log.since(session, 0, MODEL, 10_000)
            assert 5 <= len(rows) < len(stored_ids(settings))  # whole generations go
            assert await index_log.pruned_through(session) == rows[0][0] - 1
