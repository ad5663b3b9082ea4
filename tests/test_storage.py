"""Uploads kept in a blob store: a folder, or a bucket of a real S3-compatible server.

The bucket tests talk to moto's S3 server on 127.0.0.1 (``s3_server`` in conftest.py)
through the same client and code as production talks to R2 or MinIO.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import LOCAL_URL, make_settings
from fakes import FakeEmbedder, parse_sse, upload
from litestar.testing import AsyncTestClient
from s3_server import CREDENTIALS, S3Server

from rag.config import Settings, effective, load_settings
from rag.errors import ConfigError, InputError, ModelUnavailable, NotFound
from rag.ingest import store
from rag.ports import EmbedKind, Vectors
from rag.registry import Overrides, blob_store
from rag.service import open_service
from rag.web import create_app

GUIDE = b"# Zebra guide\n\nThe zebra protocol moves striped parcels between warehouses.\n"


@pytest.fixture(params=["folder", "bucket"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """The ``[storage]`` section of each kind of store: a folder given as a plain path, or
    a new bucket of the loopback S3 server."""
    if request.param == "folder":
        return {"url": str(tmp_path / "kept")}
    bucket: dict[str, object] = request.getfixturevalue("s3")
    return bucket


@asynccontextmanager
async def app_on(
    settings: Settings, embedder: FakeEmbedder | None = None
) -> AsyncIterator[AsyncTestClient[Any]]:
    overrides = Overrides(embedder=embedder or FakeEmbedder())
    async with (
        open_service(settings, overrides) as service,
        AsyncTestClient(app=create_app(settings, service=service), base_url=LOCAL_URL) as client,
    ):
        yield client


def with_store(tmp_path: Path, storage: dict[str, object], **uploads: object) -> Settings:
    # Bytes are received in "incoming": with a bucket, nothing may stay there.
    received = {"folder": str(tmp_path / "incoming"), **uploads}
    return make_settings(tmp_path, storage=storage, uploads=received)


def deletions_owed(tmp_path: Path) -> list[tuple[str, int, str | None]]:
    """The rows of ``blob_deletions``: bytes the store has not deleted yet."""
    with sqlite3.connect(tmp_path / "data" / "rag.db") as db:
        rows = db.execute("SELECT location, attempts, last_error FROM blob_deletions").fetchall()
    db.close()
    return rows


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_a_store_never_replaces_bytes_and_cleans_up_its_copies(
    storage: dict[str, object], tmp_path: Path
) -> None:
    blobs = blob_store(make_settings(tmp_path, storage=storage))
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"the first bytes")
    second.write_bytes(b"other bytes")
    assert await blobs.put("a.md", first) is True
    assert await blobs.put("a.md", second) is False  # taken: never replaced
    for bad in ("../a.md", "sub/a.md", ".."):
        with pytest.raises(InputError):
            await blobs.put(bad, second)
    assert await blobs.exists("a.md") and not await blobs.exists("b.md")
    assert await blobs.keys() == ["a.md"]
    async with blobs.fetched("a.md") as copy:
        assert copy.name == "a.md" and copy.read_bytes() == b"the first bytes"
    # A folder store hands out the file itself; a bucket's copy is gone afterwards.
    assert copy.exists() is (storage["url"] == str(tmp_path / "kept"))
    location = blobs.location("a.md")
    assert blobs.key_of(location) == "a.md" and location.startswith(blobs.root)
    assert blobs.key_of("/somewhere/else/a.md") is None
    assert blobs.key_of("s3://another-bucket/uploads/a.md") is None
    await blobs.delete("a.md")
    await blobs.delete("a.md")  # nothing there: no error
    assert await blobs.keys() == []
    with pytest.raises(NotFound):
        async with blobs.fetched("a.md"):
            pass


async def test_upload_ingest_ask_and_delete_through_the_web_app(
    storage: dict[str, object], tmp_path: Path
) -> None:
    settings = with_store(tmp_path, storage)
    blobs = blob_store(settings)
    async with app_on(settings) as client:
        doc = await upload(client, "zebra.md", GUIDE)
        assert doc["status"] == "ok" and doc["upload"] is True and doc["chunks"] == 1, doc
        assert await blobs.keys() == ["zebra.md"]
        assert files_in(tmp_path / "incoming") == []  # checked there, kept in the store

        question = {"question": "What does the zebra protocol move?"}
        asked = await client.post("/v1/ask", json=question)
        frames = dict(parse_sse(asked.text))
        done = json.loads(frames["done"])
        assert done["grounded"] is True
        assert [c["document"] for c in done["citations"]] == ["zebra.md"]

        deleted = await client.delete(f"/v1/documents/{doc['id']}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"id": doc["id"], "chunks_deleted": 1, "file_removed": True}
        assert await blobs.keys() == []
        assert (await client.get(f"/v1/documents/{doc['id']}")).status_code == 404
    assert deletions_owed(tmp_path) == []


async def test_a_failed_upload_keeps_its_reason_but_not_its_bytes(
    storage: dict[str, object], tmp_path: Path
) -> None:
    settings = with_store(tmp_path, storage)
    async with app_on(settings) as client:
        doc = await upload(client, "broken.pdf", b"%PDF-1.7\nno body\n")
        assert doc["status"] == "failed" and doc["reason"], doc
        assert await blob_store(settings).keys() == []
        same = {"file": ("x.pdf", b"%PDF-1.7\nno body\n")}
        again = await client.post("/v1/documents", files=same)
        assert again.status_code == 200 and again.json()["document"]["id"] == doc["id"]


async def test_the_quota_counts_what_a_bucket_keeps(
    s3: dict[str, object], tmp_path: Path
) -> None:
    settings = with_store(tmp_path, s3, max_total_mb=200 / 2**20)
    async with app_on(settings) as client:
        assert (await upload(client, "a.md", b"a" * 120))["status"] == "ok"
        refused = await client.post("/v1/documents", files={"file": ("b.md", b"b" * 100)})
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "quota_exceeded"
        assert (await upload(client, "c.md", b"c" * 80))["status"] == "ok"
    assert await blob_store(settings).keys() == ["a.md", "c.md"]


async def test_an_object_delete_that_fails_is_recorded_and_retried(
    s3_server: S3Server, s3: dict[str, object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = with_store(tmp_path, {**s3, "timeout_s": 2})
    blobs = blob_store(settings)
    async with app_on(settings) as client:
        gone = await upload(client, "gone.md", GUIDE)
        kept = await upload(client, "kept.md", b"# Kept\n\nThe llama pass opens in spring.\n")
        s3_server.stop()
        try:
            with caplog.at_level(logging.WARNING, logger="rag.storage.cleanup"):
                deleted = await client.delete(f"/v1/documents/{gone['id']}")
            # The document is gone at once; its bytes could not be, and the answer says so.
            assert deleted.status_code == 200, deleted.text
            assert deleted.json()["file_removed"] is False
            assert "could not delete an upload's bytes" in caplog.text
            assert blobs.location("gone.md") in caplog.text
            assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in caplog.text
            # An upload the bucket cannot take is refused, and leaves no record behind.
            refused = await client.post("/v1/documents", files={"file": ("new.md", GUIDE + b"!")})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "blob_store"
            assert (await client.get("/v1/documents")).json()["total"] == 1
        finally:
            s3_server.restart()
        [(location, attempts, last_error)] = deletions_owed(tmp_path)
        assert location == blobs.location("gone.md") and attempts == 1 and last_error
        assert await blobs.keys() == ["gone.md", "kept.md"]  # still there, still recorded

        # The next delete retries the one the store refused.
        deleted = await client.delete(f"/v1/documents/{kept['id']}")
        assert deleted.json()["file_removed"] is True
        assert await blobs.keys() == []
    assert deletions_owed(tmp_path) == []


async def test_a_restart_settles_what_a_crash_left_in_a_bucket(
    s3: dict[str, object], tmp_path: Path
) -> None:
    settings = with_store(tmp_path, s3)
    blobs = blob_store(settings)
    async with app_on(settings) as client:
        ok = await upload(client, "kept.md", GUIDE)
        failed = await upload(client, "broken.pdf", b"%PDF-1.7\nno body\n")
    # What crashes leave behind, written as they would be:
    incoming = tmp_path / "incoming"
    (incoming / ".upload-0123abcd.part").write_bytes(b"half an upl")  # killed while receiving
    source = tmp_path / "src"
    source.mkdir()
    for name, body in {
        "waiting.md": b"# Waiting\n\nThe llama pass opens in spring.\n",  # killed mid-job
        "broken.pdf": b"%PDF-1.7\nno body\n",  # killed before its bytes were removed
        "orphan.md": b"# Orphan\n\nStriped parcels wait at the depot.\n",  # no record
    }.items():
        (source / name).write_bytes(body)
        assert await blobs.put(name, source / name)
    with sqlite3.connect(tmp_path / "data" / "rag.db") as db:
        # lost.md: recorded an hour ago, never stored (killed between the two); young.md:
        # recorded just now, perhaps by another replica still putting its bytes.
        ages = {"lost.md": "-1 hour", "waiting.md": "-1 hour", "young.md": "+0 hours"}
        for name, age in ages.items():
            location = blobs.location(name)
            db.execute(
                "INSERT INTO documents (id, source, root, path, title, media_type, sha256, size,"
                " mtime_ns, status, chunker, blob_uri, created_at) VALUES"
                " (?, ?, ?, ?, ?, '', 'x', 1, 0, 'pending', '', ?, datetime('now', ?))",
                (_doc_id(location), location, blobs.root, name, name, location, age),
            )
    db.close()

    async with app_on(settings) as client:
        docs = {d["path"]: d for d in (await client.get("/v1/documents")).json()["items"]}
        assert "lost.md" not in docs and docs["young.md"]["status"] == "pending"
        for name in ("waiting.md", "orphan.md"):
            doc = await _settled(client, docs[name])
            assert doc["status"] == "ok" and doc["upload"] is True, doc
        assert docs["kept.md"]["id"] == ok["id"] and docs["broken.pdf"]["id"] == failed["id"]
        assert docs["broken.pdf"]["status"] == "failed"
    assert await blobs.keys() == ["kept.md", "orphan.md", "waiting.md"]
    assert files_in(incoming) == []


async def test_another_machine_ingests_an_upload_from_the_bucket(
    s3: dict[str, object], tmp_path: Path
) -> None:
    """One replica takes the upload but cannot ingest it (its model is down); another one,
    with nothing of the upload on its own disk, ingests it from the bucket."""
    first = with_store(tmp_path, s3)
    async with app_on(first, embedder=DownEmbedder()) as client:
        response = await client.post("/v1/documents", files={"file": ("zebra.md", GUIDE)})
        assert response.status_code == 202
        doc_id = response.json()["document"]["id"]
        job = await _ended(client, response.json()["job"])
        assert job["state"] == "failed", job
        assert (await client.get(f"/v1/documents/{doc_id}")).json()["status"] == "pending"
    assert files_in(tmp_path / "incoming") == []

    second = make_settings(tmp_path, storage=s3, uploads={"folder": str(tmp_path / "elsewhere")})
    async with app_on(second) as client:
        doc = await _settled(client, (await client.get(f"/v1/documents/{doc_id}")).json())
        assert doc["status"] == "ok" and doc["chunks"] == 1, doc
    assert files_in(tmp_path / "elsewhere") == []


def test_a_bucket_needs_its_credentials_from_the_environment(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, storage={"url": "s3://bucket/prefix"})
    with pytest.raises(ConfigError) as caught:
        blob_store(settings, environ={"AWS_ACCESS_KEY_ID": "id-only"})
    assert "AWS_SECRET_ACCESS_KEY" in caught.value.message


def test_rag_config_masks_the_bucket_credentials(tmp_path: Path) -> None:
    environ = {**CREDENTIALS, "AWS_SESSION_TOKEN": "a-session-token"}
    shown = json.dumps(effective(make_settings(tmp_path), environ))
    for value in environ.values():
        assert value not in shown
    assert json.loads(shown)["secrets"]["AWS_SECRET_ACCESS_KEY"] == "***"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("gs://bucket/x", "neither a folder"),
        ("s3:///prefix", "names no bucket"),
        ("file://relative/folder", "not an absolute folder"),
    ],
)
def test_a_storage_url_that_names_nothing_usable_stops_the_start(
    tmp_path: Path, url: str, problem: str
) -> None:
    (tmp_path / "empty.toml").write_text("")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "empty.toml", environ={"RAG_STORAGE__URL": url})
    assert problem in caught.value.message and "storage.url" in caught.value.message


def test_a_folder_url_and_a_plain_path_name_the_same_folder(tmp_path: Path) -> None:
    plain = blob_store(make_settings(tmp_path, storage={"url": str(tmp_path / "k")}))
    as_url = blob_store(make_settings(tmp_path, storage={"url": (tmp_path / "k").as_uri()}))
    default = blob_store(make_settings(tmp_path, uploads={"folder": str(tmp_path / "k")}))
    assert plain.root == as_url.root == default.root == str((tmp_path / "k").resolve())


class DownEmbedder(FakeEmbedder):
    """A model that is out: every ingestion job fails as a whole."""

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        raise ModelUnavailable("the embedding model is out (a test)")


async def _ended(client: AsyncTestClient[Any], job: dict[str, Any]) -> dict[str, Any]:
    for _ in range(500):
        if job["state"] not in ("queued", "running"):
            return job
        await asyncio.sleep(0.02)
        job = (await client.get(f"/v1/jobs/{job['id']}")).json()
    raise AssertionError("the job never ended")


def _doc_id(location: str) -> str:
    return store.document_id(location)


async def _settled(client: AsyncTestClient[Any], doc: dict[str, Any]) -> dict[str, Any]:
    for _ in range(500):
        if doc["status"] != "pending":
            return doc
        await asyncio.sleep(0.02)
        doc = (await client.get(f"/v1/documents/{doc['id']}")).json()
    raise AssertionError(f"{doc['path']} stayed pending")

