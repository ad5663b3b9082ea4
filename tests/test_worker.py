"""``rag worker`` and ``rag ingest`` as real processes over one SQLite database."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from conftest import QUICK_JOBS, make_settings
from fakes import FakeEmbedder

from rag.db.engine import upgrade_sync
from rag.jobs.queue import JobQueue
from rag.registry import Overrides
from rag.service import open_service

HERE = Path(__file__).parent


def make_folder(folder: Path, files: int) -> None:
    folder.mkdir()
    for i in range(files):
        body = "\n\n".join(
            f"Note {i}.{j}: parcel {i * 10 + j} waits at depot {j}." for j in range(3)
        )
        (folder / f"note{i:02}.md").write_text(f"# Note {i}\n\n{body}\n")


class Rag:
    """``rag ARGS`` on a fake embedder that takes ``pause`` s a batch, over tmp_path's data;
    its output goes to files (a pipe nobody reads could fill up and stall it)."""

    def __init__(
        self, tmp_path: Path, pause: float, *args: str, jobs: dict[str, float] = QUICK_JOBS
    ) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(HERE),
            "RAG_DATA_DIR": str(tmp_path / "data"),
            "RAG_INGEST__BATCH_SIZE": "4",
            **{f"RAG_JOBS__{key.upper()}": str(value) for key, value in jobs.items()},
        }
        name = uuid.uuid4().hex[:8]
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / "rag_on_fake.py"), str(pause), *args],
                env=env,
                cwd=tmp_path,  # no config.toml but the environment's
                stdout=out,
                stderr=err,
            )

    def running(self) -> bool:
        return self.process.poll() is None

    def end(self, timeout: float = 120) -> tuple[int, str, str]:
        code = self.process.wait(timeout=timeout)
        return code, self.out.read_text(), self.err.read_text()


def jobs(tmp_path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(tmp_path / "data" / "rag.db") as db:
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute("SELECT * FROM jobs ORDER BY created_at")]
    db.close()
    return rows


def count(tmp_path: Path, table: str) -> int:
    with sqlite3.connect(tmp_path / "data" / "rag.db") as db:
        found = int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    db.close()
    return found


def wait_for_state(tmp_path: Path, state: str, run: Rag) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        assert run.running(), run.end()
        assert time.monotonic() < deadline, f"no job became {state}"
        try:
            found = [job for job in jobs(tmp_path) if job["state"] == state]
        except sqlite3.OperationalError:
            found = []  # not migrated yet
        if found:
            return found[0]
        time.sleep(0.05)


def test_two_ingest_runs_over_one_folder_at_once_one_refuses_naming_the_other(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "docs"
    make_folder(folder, 12)
    # Migrated first: two processes migrating one empty database at once is another matter.
    upgrade_sync(make_settings(tmp_path).database_url)
    # Embedding that takes seconds: the two runs overlap however slowly each starts.
    # A heartbeat that a loaded machine holds up past a second must not let the second
    # run take the job for dead: this test is about a live holder.
    live = {**QUICK_JOBS, "stale_after_s": 60.0}
    runs = [Rag(tmp_path, 0.6, "ingest", str(folder), "--json", jobs=live) for _ in range(2)]
    results = [run.end() for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    (_, won, _), (_, _, refusal) = sorted(results, key=lambda r: r[0])
    finished = [job for job in jobs(tmp_path) if job["state"] == "finished"]
    assert len(finished) == 1 and len(jobs(tmp_path)) == 1  # the refused run queued nothing
    assert "already running" in refusal and finished[0]["id"] in refusal
    assert "rag ingest@" in refusal and "Traceback" not in refusal
    report = json.loads(won)
    # Every chunk embedded once, by the run that held the folder.
    assert report["new"] == 12 and report["embedded"] == count(tmp_path, "vectors")


def test_a_stopped_worker_hands_its_job_back_and_another_finishes_it(tmp_path: Path) -> None:
    import asyncio

    folder = tmp_path / "docs"
    make_folder(folder, 12)

    async def enqueue() -> str:
        settings = make_settings(tmp_path)
        async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
            job = await JobQueue(service.sessions, settings.jobs).enqueue("folder", [folder])
        return job.id

    job_id = asyncio.run(enqueue())
    first = Rag(tmp_path, 0.3, "worker")
    running = wait_for_state(tmp_path, "running", first)
    assert running["id"] == job_id and running["worker"].startswith("worker@")
    first.process.send_signal(signal.SIGTERM)
    code, _, said = first.end()
    assert code == 0 and "stopped" in said, said
    (handed_back,) = jobs(tmp_path)
    assert handed_back["state"] == "queued" and handed_back["attempts"] == 1, (handed_back, said)

    code, _, said = Rag(tmp_path, 0.0, "worker", "--until-idle").end()
    assert code == 0, said
    (done,) = jobs(tmp_path)
    assert done["state"] == "finished" and done["attempts"] == 2, done
    result = json.loads(done["result"])
    assert result["new"] + result["unchanged"] == 12 and done["files_done"] == 12


def test_a_killed_worker_s_job_is_taken_up_once_its_heartbeat_is_stale(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    make_folder(folder, 12)
    first = Rag(tmp_path, 0.3, "ingest", str(folder))
    running = wait_for_state(tmp_path, "running", first)
    first.process.send_signal(signal.SIGKILL)
    assert first.end()[0] == -signal.SIGKILL
    code, _, said = Rag(tmp_path, 0.0, "worker", "--until-idle").end()
    assert code == 0, said
    (done,) = jobs(tmp_path)
    assert done["id"] == running["id"] and done["kind"] == "cli"
    assert done["state"] == "finished" and done["attempts"] == 2, done
    assert f"took job {done['id']} (cli, attempt 2)" in said
