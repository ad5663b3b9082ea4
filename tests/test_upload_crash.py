"""A server killed (SIGKILL) while an upload is being ingested: the next start finishes it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import LOCAL_URL, QUICK_JOBS, make_settings
from fakes import FakeEmbedder, upload
from litestar.testing import AsyncTestClient

from rag.registry import Overrides
from rag.service import open_service
from rag.web import create_app

HERE = Path(__file__).parent
GUIDE = b"# Zebra guide\n\nThe zebra protocol moves striped parcels between warehouses.\n"


def start_victim(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    process = subprocess.Popen(
        [sys.executable, str(HERE / "upload_victim.py"), str(tmp_path), str(port_file)], env=env
    )
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text():
        assert process.poll() is None, "the victim exited"
        assert time.monotonic() < deadline, "the victim never listened"
        time.sleep(0.02)
    return process, f"http://127.0.0.1:{port_file.read_text()}"


def kill_mid_job(tmp_path: Path) -> str:
    """Upload to a victim server, SIGKILL it while the job runs; the document's id."""
    process, base = start_victim(tmp_path)
    try:
        with httpx.Client(base_url=base) as client:
            response = client.post("/v1/documents", files={"file": ("guide.md", GUIDE)})
            assert response.status_code == 202, response.text
            job_id = response.json()["job"]["id"]
            deadline = time.monotonic() + 30
            while client.get(f"/v1/jobs/{job_id}").json()["state"] != "running":
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    doc_id: str = response.json()["document"]["id"]
    return doc_id


async def test_sigkill_during_an_upload_job_then_restart_finishes_it(tmp_path: Path) -> None:
    doc_id = await asyncio.to_thread(kill_mid_job, tmp_path)
    assert (tmp_path / "uploads" / "guide.md").read_bytes() == GUIDE

    settings = make_settings(
        tmp_path, uploads={"folder": str(tmp_path / "uploads")}, jobs=QUICK_JOBS
    )
    async with (
        open_service(settings, Overrides(embedder=FakeEmbedder())) as service,
        AsyncTestClient(app=create_app(settings, service=service), base_url=LOCAL_URL) as client,
    ):
        jobs = (await client.get("/v1/jobs")).json()
        # The same job, still running on the dead server's name until its heartbeat is
        # stale; then this server's worker takes it up.
        assert [job["document_id"] for job in jobs] == [doc_id]
        # Uploading the same bytes follows that job to its end.
        doc = await upload(client, "guide.md", GUIDE)
        job = (await client.get(f"/v1/jobs/{jobs[0]['id']}")).json()
    assert doc["id"] == doc_id and doc["status"] == "ok" and doc["chunks"] == 1
    assert job["state"] == "finished" and job["attempts"] == 2, job
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == ["guide.md"]
