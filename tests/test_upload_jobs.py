"""Uploads never wait for ingestion: jobs queue in bounded slots, quotas, deletes, restarts."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from conftest import LOCAL_URL, make_settings
from fakes import FakeEmbedder, SlowPdfs, upload
from litestar.testing import AsyncTestClient

from rag.ingest import store
from rag.keys import KeyStore
from rag.registry import Overrides
from rag.service import open_service
from rag.web import create_app

TINY = b"The zebra depot opens at nine every day!!\n"  # 42 bytes, as in the report
PDF = b"%PDF-1.7\nslow to read\n"


@asynccontextmanager
async def app_client(
    tmp_path: Path, loader: Any = None, **sections: Any
) -> AsyncIterator[AsyncTestClient[Any]]:
    sections.setdefault("uploads", {"folder": str(tmp_path / "uploads")})
    settings = make_settings(tmp_path, **sections)
    overrides = Overrides(embedder=FakeEmbedder(), loader=loader)
    async with (
        open_service(settings, overrides) as service,
        AsyncTestClient(app=create_app(settings, service=service), base_url=LOCAL_URL) as client,
    ):
        try:
            yield client
        finally:
            if isinstance(loader, SlowPdfs):
                loader.released.set()  # before the app stops: no reader thread left behind


async def job_of(client: AsyncTestClient[Any], response: Any) -> dict[str, Any]:
    job: dict[str, Any] = (await client.get(f"/v1/jobs/{response.json()['job']['id']}")).json()
    return job


async def test_a_small_upload_is_not_delayed_by_a_slow_pdf(tmp_path: Path) -> None:
    slow = SlowPdfs()
    async with app_client(tmp_path, slow) as client:
        began = time.perf_counter()
        pdf = await client.post("/v1/documents", files={"file": ("slow.pdf", PDF)})
        assert pdf.status_code == 202, pdf.text
        await slow.started()
        doc = await upload(client, "tiny.txt", TINY)
        waited = time.perf_counter() - began
        assert doc["status"] == "ok" and doc["size"] == 42
        assert (await job_of(client, pdf))["state"] == "running"  # still reading
        assert waited < 5, f"the 42-byte upload took {waited:.1f} s"
        slow.released.set()
        settled = await upload(client, "slow.pdf", PDF)  # same bytes: its record, its job
        assert settled["status"] == "failed" and settled["id"] == pdf.json()["document"]["id"]


async def test_jobs_queue_beyond_the_slots_and_requests_never_wait(tmp_path: Path) -> None:
    slow = SlowPdfs()
    async with app_client(
        tmp_path, slow, uploads={"folder": str(tmp_path / "u"), "max_concurrent_jobs": 1}
    ) as client:
        pdf = await client.post("/v1/documents", files={"file": ("slow.pdf", PDF)})
        await slow.started()
        # Every upload is answered while the one slot is taken: queued, not refused.
        queued = []
        for n in range(3):
            body = f"Note {n} about the zebra depot.\n".encode()
            response = await client.post("/v1/documents", files={"file": (f"n{n}.md", body)})
            assert response.status_code == 202, response.text
            assert response.json()["document"]["status"] == "pending"
            queued.append(response)
        for response in queued:
            assert (await job_of(client, response))["state"] == "queued"
        assert (await job_of(client, pdf))["state"] == "running"
        listed = await client.get("/v1/documents", params={"status": "pending"})
        assert listed.json()["total"] == 4
        slow.released.set()
        for n in range(3):
            body = f"Note {n} about the zebra depot.\n".encode()
            assert (await upload(client, f"n{n}.md", body))["status"] == "ok"


async def test_deleting_a_pending_upload_stops_its_job(tmp_path: Path) -> None:
    slow = SlowPdfs()
    async with app_client(tmp_path, slow) as client:
        pdf = await client.post("/v1/documents", files={"file": ("slow.pdf", PDF)})
        await slow.started()
        doc_id = pdf.json()["document"]["id"]
        deleted = await client.delete(f"/v1/documents/{doc_id}")
        assert deleted.status_code == 200 and deleted.json()["file_removed"] is True
        job = await job_of(client, pdf)
        assert job["state"] == "cancelled" and job["error"] == "the document was deleted"
        assert (await client.get(f"/v1/documents/{doc_id}")).status_code == 404
        assert list((tmp_path / "uploads").iterdir()) == []


LIMIT = {"max_total_mb": 200 / 2**20}  # 200 bytes


async def test_the_quota_bounds_what_a_client_keeps(tmp_path: Path) -> None:
    uploads = {"folder": str(tmp_path / "uploads"), **LIMIT}
    async with app_client(tmp_path, uploads=uploads) as client:
        assert (await upload(client, "a.md", b"a" * 120))["status"] == "ok"
        refused = await client.post("/v1/documents", files={"file": ("b.md", b"b" * 100)})
        assert refused.status_code == 413, refused.text
        error = refused.json()["error"]
        assert error["code"] == "quota_exceeded"
        assert (
            "[uploads] max_total_mb" in error["message"]
            and "without an API key" in error["message"]
        )
        # A failed upload keeps no file, so it costs nothing.
        assert (await upload(client, "x.pdf", b"%PDF-1.7\n" + b"x" * 60))["status"] == "failed"
        assert (await upload(client, "c.md", b"c" * 80))["status"] == "ok"
        assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == ["a.md", "c.md"]


async def test_the_quota_is_per_api_key(tmp_path: Path) -> None:
    uploads = {"folder": str(tmp_path / "uploads"), **LIMIT}
    auth = {"required": True, "rate_limit_per_minute": 0}
    settings = make_settings(tmp_path, uploads=uploads, auth=auth)
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        keys = KeyStore(service.sessions)
        (first, key_a), (second, key_b) = await keys.create("a"), await keys.create("b")
        async with AsyncTestClient(
            app=create_app(settings, service=service), base_url=LOCAL_URL
        ) as client:
            a: dict[str, Any] = {"headers": {"Authorization": f"Bearer {key_a}"}}
            b: dict[str, Any] = {"headers": {"Authorization": f"Bearer {key_b}"}}
            assert (await upload(client, "a.md", b"a" * 150, **a))["status"] == "ok"
            over = await client.post("/v1/documents", files={"file": ("a2.md", b"z" * 100)}, **a)
            assert over.status_code == 413 and "this API key" in over.json()["error"]["message"]
            assert (await upload(client, "b.md", b"b" * 150, **b))["status"] == "ok"
    with sqlite3.connect(tmp_path / "data" / "rag.db") as db:
        owners = dict(db.execute("SELECT path, owner_key_id FROM documents"))
    db.close()
    assert owners == {"a.md": first.id, "b.md": second.id}


GUIDE = b"# Zebra guide\n\nThe zebra protocol moves striped parcels between warehouses.\n"


async def test_a_restart_settles_every_state_a_crash_can_leave(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    async with app_client(tmp_path) as client:
        ok = await upload(client, "kept.md", GUIDE)
        failed = await upload(client, "broken.pdf", b"%PDF-1.7\nno body\n")
    # What crashes at each step leave behind, written as they would be:
    # 1. killed while receiving: a temporary file, no record.
    (folder / ".upload-0123abcd.part").write_bytes(b"half an upl")
    # 2. killed between the record and the name: a pending record, its file missing.
    lost = folder / "lost.md"
    (folder / ".upload-4567cdef.part").write_bytes(b"# Lost\n\nNever named.\n")
    # 3. killed during the job: a pending record with its file.
    waiting = folder / "waiting.md"
    waiting.write_bytes(b"# Waiting\n\nThe llama pass opens in spring.\n")
    # 4. killed between the failed outcome and the removal of its file.
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\nno body\n")
    # 5. a file no record names (an older version stored before recording).
    (folder / "orphan.md").write_bytes(b"# Orphan\n\nStriped parcels wait at the depot.\n")
    with sqlite3.connect(tmp_path / "data" / "rag.db") as db:
        for path in (lost, waiting):
            db.execute(
                "INSERT INTO documents (id, source, root, path, title, media_type, sha256, size,"
                " mtime_ns, status, chunker, created_at) VALUES"
                " (?, ?, ?, ?, ?, '', 'x', 1, 0, 'pending', '', '2026-01-01 00:00:00')",
                (store.document_id(str(path)), str(path), str(folder), path.name, path.name),
            )
    db.close()

    async with app_client(tmp_path) as client:
        docs = {d["path"]: d for d in (await client.get("/v1/documents")).json()["items"]}
        assert "lost.md" not in docs  # its client never had an answer
        for name in ("waiting.md", "orphan.md"):
            doc = docs[name]
            for _ in range(500):
                if doc["status"] != "pending":
                    break
                await asyncio.sleep(0.01)
                doc = (await client.get(f"/v1/documents/{doc['id']}")).json()
            assert doc["status"] == "ok", doc
        assert docs["kept.md"]["id"] == ok["id"] and docs["broken.pdf"]["id"] == failed["id"]
        assert docs["broken.pdf"]["status"] == "failed"
    assert sorted(p.name for p in folder.iterdir()) == ["kept.md", "orphan.md", "waiting.md"]


async def test_the_same_bytes_while_pending_get_the_live_job(tmp_path: Path) -> None:
    slow = SlowPdfs()
    async with app_client(tmp_path, slow) as client:
        first = await client.post("/v1/documents", files={"file": ("s.pdf", PDF)})
        again = await client.post("/v1/documents", files={"file": ("other.pdf", PDF)})
        assert again.status_code == 202
        assert again.json()["job"]["id"] == first.json()["job"]["id"]
        assert again.json()["document"]["path"] == "s.pdf"
