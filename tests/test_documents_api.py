"""Documents, chunks and ingestion jobs over HTTP, on the real service (fake embedder).

The app runs under a real uvicorn on 127.0.0.1 (``fakes.app_client``), on SQLite and on
PostgreSQL; checks of the request alone (sizes, types, names) run on SQLite only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import LOCAL_URL, make_settings
from fakes import FakeEmbedder, GatedEmbedder, app_client, upload
from httpx import AsyncClient
from litestar.testing import AsyncTestClient

from rag.backends.local.vector_index import NumpyIndex
from rag.config import UploadSettings
from rag.ingest import store
from rag.registry import Overrides
from rag.service import RagService, open_service
from rag.web import create_app

SQLITE_ONLY = pytest.mark.database("sqlite")
"""Checks of the request alone: the database behind it changes nothing."""

GUIDE = b"# Zebra guide\n\nThe zebra protocol moves striped parcels between warehouses.\n"
OTHER = b"# Llama notes\n\nLlamas carry wool bales across the mountain pass every spring.\n"
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(200)
PE = b"MZ" + bytes(0x3A) + (0x40).to_bytes(4, "little") + b"PE\x00\x00" + bytes(100)


@dataclass
class Api:
    client: AsyncClient
    service: RagService
    uploads: Path
    root: Path

    async def upload(self, name: str, content: bytes) -> Any:
        return await self.client.post("/v1/documents", files={"file": (name, content)})

    async def ingested(self, name: str, content: bytes) -> dict[str, Any]:
        """Upload and wait for the ingestion job to settle the document."""
        return await upload(self.client, name, content)


@asynccontextmanager
async def open_api(
    tmp_path: Path, database_url: str, embedder: Any = None, **sections: Any
) -> AsyncIterator[Api]:
    uploads = tmp_path / "uploads"
    sections.setdefault("uploads", {"folder": str(uploads), "max_mb": 0.05})
    settings = make_settings(tmp_path, database={"url": database_url}, **sections)
    async with (
        open_service(settings, Overrides(embedder=embedder or FakeEmbedder())) as service,
        app_client(create_app(settings, service=service)) as client,
    ):
        yield Api(client, service, uploads, tmp_path)


@pytest.fixture
async def api(tmp_path: Path, database_url: str) -> AsyncIterator[Api]:
    async with open_api(tmp_path, database_url) as opened:
        yield opened


def files_outside(root: Path, folder: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and folder not in p.parents}


async def search_documents(api: Api, query: str) -> list[str]:
    response = await api.client.post("/v1/search", json={"query": query, "k": 5})
    assert response.status_code == 200, response.text
    return [hit["document"] for hit in response.json()["hits"]]


async def test_upload_is_answered_at_once_then_ingested_and_searchable(api: Api) -> None:
    response = await api.upload("guide.md", GUIDE)
    assert response.status_code == 202, response.text
    accepted, job = response.json()["document"], response.json()["job"]
    assert accepted["status"] == "pending" and accepted["path"] == "guide.md"
    assert accepted["chunks"] == 0 and accepted["upload"] is True
    assert job["kind"] == "upload" and job["document_id"] == accepted["id"]
    assert job["state"] in ("queued", "running")
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    finished = await wait_for_job(api, job["id"])
    assert finished["state"] == "finished" and finished["result"]["files"] == 1
    doc = (await api.client.get(f"/v1/documents/{accepted['id']}")).json()
    assert doc["path"] == "guide.md" and doc["status"] == "ok" and doc["upload"] is True
    assert doc["chunks"] >= 1 and doc["reason"] is None and doc["title"] == "Zebra guide"
    assert (api.uploads / "guide.md").read_bytes() == GUIDE
    assert await search_documents(api, "zebra protocol parcels") == ["guide.md"]
    fetched = await api.client.get(f"/v1/documents/{doc['id']}")
    assert fetched.status_code == 200 and fetched.json() == doc


async def test_same_name_never_overwrites_another_upload(api: Api) -> None:
    first = await api.ingested("guide.md", GUIDE)
    for name in ("guide.md", "copy-of-guide.md"):
        # The same bytes are the same upload, whatever the name: nothing stored twice.
        again = await api.upload(name, GUIDE)
        assert again.status_code == 200, again.text
        assert again.json() == {"document": first, "job": None}
    other = await api.upload("guide.md", OTHER)
    assert other.status_code == 202 and other.json()["document"]["path"] == "guide-2.md"
    assert (api.uploads / "guide.md").read_bytes() == GUIDE
    assert (api.uploads / "guide-2.md").read_bytes() == OTHER


@SQLITE_ONLY
@pytest.mark.parametrize("size", [60_000, 300_000])
async def test_oversized_upload_is_413_naming_the_limit(api: Api, size: int) -> None:
    # 60 kB passes the request limit (file limit plus multipart slack) and is stopped
    # while saving; 300 kB is stopped by the request body limit before parsing.
    response = await api.upload("big.txt", b"word " * (size // 5))
    assert response.status_code == 413, response.text
    message = response.json()["error"]["message"]
    assert "0.05 MB" in message and "[uploads] max_mb" in message
    assert not api.uploads.exists() or list(api.uploads.iterdir()) == []


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("data.txt", ELF, "an ELF executable"),
        ("notes.md", b"hello\x00world" * 10, "not text"),
        ("report.pdf", ELF, "an ELF executable"),
        ("report.pdf", b"just some words, no PDF header at all", "not a PDF"),
        # The marker anywhere but at byte 0 is what polyglot files rely on.
        ("report.pdf", b"#!/bin/sh\necho hi\n%PDF-1.7\n", "not a PDF"),
        ("report.pdf", b" \n%PDF-1.7\n", "not a PDF"),
        ("report.pdf", b"\xef\xbb\xbf%PDF-1.7\n", "not a PDF"),
        ("notes.txt", b"%PDF-1.7\n1 0 obj\n", "a PDF, not .txt text"),
        ("notes.md", b"PK\x03\x04" + b"word " * 20, "a ZIP archive, not .md text"),
        ("tool.txt", PE, "a Windows (PE) executable"),
        ("tool.md", b"\xcf\xfa\xed\xfe" + bytes(60), "a Mach-O executable"),
        ("tool.exe", ELF, "unsupported file type '.exe'"),
        ("/etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n", "has no extension"),
    ],
)
async def test_content_must_match_the_type(
    api: Api, name: str, content: bytes, reason: str
) -> None:
    response = await api.upload(name, content)
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert reason in response.json()["error"]["message"]
    assert not api.uploads.exists() or list(api.uploads.iterdir()) == []
    assert (await api.client.get("/v1/documents")).json()["total"] == 0


READABLE = (
    ".adoc, .asciidoc, .docm, .docx, .htm, .html, .jpeg, .jpg, .markdown, .md, .pdf, .png,"
    " .pptm, .pptx, .rst, .tif, .tiff, .txt, .webp, .xlsm, .xlsx"
)


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x.exe", f"unsupported file type '.exe': upload one of {READABLE}"),
        ("Makefile", f"the file name has no extension: upload one of {READABLE}"),
    ],
)
async def test_a_refused_type_names_the_accepted_ones(api: Api, name: str, message: str) -> None:
    response = await api.upload(name, GUIDE)
    assert response.status_code == 415, response.text
    assert response.json() == {"error": {"code": "unsupported_media_type", "message": message}}


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        # Only what a loader reads is offered, whatever the case it is configured in.
        ([".MD", ".odt", ".pdf"], "unsupported file type '.txt': upload one of .md, .pdf"),
        (
            [".odt"],
            "unsupported file type '.txt', and no type is accepted: "
            "[ingest] extensions lists none that rag reads",
        ),
    ],
)
async def test_the_accepted_types_follow_the_settings(
    tmp_path: Path, database_url: str, extensions: list[str], message: str
) -> None:
    async with open_api(tmp_path, database_url, ingest={"extensions": extensions}) as api:
        response = await api.upload("notes.txt", GUIDE)
    assert response.status_code == 415, response.text
    assert response.json()["error"]["message"] == message


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("../evil.md", "evil.md"),
        ("../../../../tmp/evil.md", "evil.md"),
        ("..\\x.md", "x.md"),
        ("C:\\Windows\\system.md", "system.md"),
        (".hidden.md", "hidden.md"),
        ("my report (final).MD", "my_report_final.md"),
        ("Prüfbericht.md", "Prufbericht.md"),
        ("a..b.md", "a.b.md"),
    ],
)
async def test_file_names_are_sanitised_into_the_folder(api: Api, name: str, saved: str) -> None:
    before = files_outside(api.root, api.uploads)
    response = await api.upload(name, GUIDE)
    assert response.status_code == 202, response.text
    assert response.json()["document"]["path"] == saved
    assert [p.name for p in api.uploads.iterdir()] == [saved]
    assert files_outside(api.root, api.uploads) == before


@SQLITE_ONLY
@pytest.mark.parametrize("name", ["..", "../", ".md", "...", " "])
async def test_unusable_file_names_are_refused(api: Api, name: str) -> None:
    before = files_outside(api.root, api.uploads)
    response = await api.upload(name, GUIDE)
    assert response.status_code in (400, 415), response.text
    assert not api.uploads.exists() or list(api.uploads.iterdir()) == []
    assert files_outside(api.root, api.uploads) == before


@SQLITE_ONLY
@pytest.mark.parametrize("raw", [b"a\x00b.md", b"../\x00/evil.md", b"evil.md\x00.pdf"])
async def test_a_nul_byte_in_the_file_name_is_refused(api: Api, raw: bytes) -> None:
    # httpx percent-encodes a NUL in a file name; this body carries the raw byte.
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="' + raw + b'"\r\n'
        b"Content-Type: text/markdown\r\n\r\n" + GUIDE + b"\r\n--B--\r\n"
    )
    headers = {"content-type": "multipart/form-data; boundary=B"}
    before = files_outside(api.root, api.uploads)
    response = await api.client.post("/v1/documents", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["error"]["message"]
    assert not api.uploads.exists() or list(api.uploads.iterdir()) == []
    assert files_outside(api.root, api.uploads) == before


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("name", "content"),
    [
        # Accepted: text is text whatever its first bytes (a script, a word starting MZ).
        ("install.txt", b"#!/bin/sh\necho the zebra protocol installs itself\n"),
        ("mz.md", b"MZ is the code of the zebra depot in the parcel network.\n"),
    ],
)
async def test_text_that_merely_looks_like_a_signature_is_text(
    api: Api, name: str, content: bytes
) -> None:
    doc = await api.ingested(name, content)
    assert doc["status"] == "ok", doc
    assert (api.uploads / name).read_bytes() == content


BROKEN_PDF = b"%PDF-1.7\nthis is no PDF body at all\n"


async def test_a_failed_upload_keeps_its_reason_not_its_file(api: Api) -> None:
    doc = await api.ingested("broken.pdf", BROKEN_PDF)
    assert doc["status"] == "failed" and doc["chunks"] == 0 and doc["reason"]
    assert list(api.uploads.iterdir()) == []  # the bytes are no use to anyone
    failed = (await api.client.get("/v1/documents", params={"status": "failed"})).json()
    assert [d["id"] for d in failed["items"]] == [doc["id"]]
    # The same bytes again, under any name: the record answers, nothing is stored.
    for name in ("broken.pdf", "broken-again.pdf"):
        again = await api.upload(name, BROKEN_PDF)
        assert again.status_code == 200, again.text
        assert again.json() == {"document": doc, "job": None}
        assert list(api.uploads.iterdir()) == []
    assert (await api.client.get("/v1/documents")).json()["total"] == 1
    # Deleting the record allows another try.
    assert (await api.client.delete(f"/v1/documents/{doc['id']}")).status_code == 200
    assert (await api.upload("broken.pdf", BROKEN_PDF)).status_code == 202


async def test_delete_reaches_the_vector_index_and_the_file(api: Api) -> None:
    kept = await api.ingested("llama.md", OTHER)
    doc = await api.ingested("guide.md", GUIDE)
    hits = await api.client.post("/v1/search", json={"query": "zebra protocol", "k": 1})
    chunk_id = hits.json()["hits"][0]["chunk_id"]
    index = api.service.index
    assert isinstance(index, NumpyIndex)  # the local backend: vectors held in memory
    vectors = len(index)
    response = await api.client.delete(f"/v1/documents/{doc['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": doc["id"],
        "chunks_deleted": doc["chunks"],
        "file_removed": True,
    }
    assert len(index) == vectors - doc["chunks"]
    assert chunk_id not in index
    assert "guide.md" not in await search_documents(api, "zebra protocol parcels")
    assert not (api.uploads / "guide.md").exists() and (api.uploads / "llama.md").exists()
    assert (await api.client.get(f"/v1/documents/{doc['id']}")).status_code == 404
    assert (await api.client.get(f"/v1/chunks/{chunk_id}")).status_code == 404
    assert (await api.client.delete(f"/v1/documents/{doc['id']}")).status_code == 404
    assert (await api.client.get(f"/v1/documents/{kept['id']}")).status_code == 200


async def test_chunk_has_what_the_chat_page_shows(api: Api) -> None:
    doc = await api.ingested("guide.md", GUIDE)
    hits = await api.client.post("/v1/search", json={"query": "zebra protocol", "k": 1})
    chunk_id = hits.json()["hits"][0]["chunk_id"]
    chunk = (await api.client.get(f"/v1/chunks/{chunk_id}")).json()
    assert chunk["id"] == chunk_id and chunk["document_id"] == doc["id"]
    assert chunk["document"] == "guide.md" and chunk["title"] == "Zebra guide"
    assert chunk["heading_path"] == ["Zebra guide"] and "striped parcels" in chunk["text"]
    assert set(chunk) >= {"page_start", "page_end", "ordinal"}


async def test_documents_are_paginated(api: Api) -> None:
    for n in range(5):
        body = f"# Note {n}\n\nUnique subject number {n} about topic{n}.\n".encode()
        assert (await api.ingested(f"note{n}.md", body))["status"] == "ok"
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = (await api.client.get("/v1/documents", params={"limit": 2, "offset": offset})).json()
        assert page["total"] == 5 and page["limit"] == 2 and len(page["items"]) <= 2
        seen += [item["path"] for item in page["items"]]
        offset = page["next_offset"]
    assert sorted(seen) == [f"note{n}.md" for n in range(5)]
    bad = await api.client.get("/v1/documents", params={"limit": 0})
    assert bad.status_code == 400


async def wait_for_job(api: Api, job_id: str) -> dict[str, Any]:
    for _ in range(500):
        job = (await api.client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] not in ("queued", "running"):
            return dict(job)
        await asyncio.sleep(0.01)
    raise AssertionError("the job did not finish")


async def test_ingest_job_reports_progress_result_and_refuses_a_twin(
    tmp_path: Path, database_url: str
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_bytes(GUIDE)
    (folder / "llama.md").write_bytes(OTHER)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 nothing else\n")
    embedder = GatedEmbedder()
    async with open_api(
        tmp_path, database_url, embedder, web={"ingest_folder": str(folder)}
    ) as api:
        started = await api.client.post("/v1/ingest")
        assert started.status_code == 202, started.text
        job = started.json()
        assert started.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["state"] in ("queued", "running") and job["folder"] == str(folder.resolve())
        twin = await api.client.post("/v1/ingest")
        assert twin.status_code == 409 and job["id"] in twin.json()["error"]["message"]
        assert twin.headers["location"] == f"/v1/jobs/{job['id']}"
        embedder.gate.set()
        done = await wait_for_job(api, job["id"])
        assert done["state"] == "finished", done
        assert done["progress"]["files_done"] == done["progress"]["files_total"] == 3
        assert done["progress"]["chunks"] >= 2
        result = done["result"]
        assert (result["new"], result["failed"], result["files"]) == (2, 1, 3)
        assert result["run_id"] >= 1 and result["problems"][0]["path"] == "broken.pdf"
        assert [j["id"] for j in (await api.client.get("/v1/jobs")).json()] == [job["id"]]
        # The folder is free again; unchanged files are not embedded a second time.
        again = await wait_for_job(api, (await api.client.post("/v1/ingest")).json()["id"])
        assert again["result"]["unchanged"] == 3 and again["result"]["embedded"] == 0
        assert (await api.client.get("/v1/jobs/nope")).status_code == 404


async def test_ingest_of_a_missing_folder_says_which_setting(
    tmp_path: Path, database_url: str
) -> None:
    async with open_api(
        tmp_path, database_url, web={"ingest_folder": str(tmp_path / "nowhere")}
    ) as api:
        response = await api.client.post("/v1/ingest")
    assert response.status_code == 500
    assert "[web] ingest_folder" in response.json()["error"]["message"]


async def test_delete_reaches_vectorize_on_the_cloudflare_backend(tmp_path: Path) -> None:
    from cf_fake import FakeCloudflare

    fake = FakeCloudflare()
    settings = fake.settings()
    settings = msgspec.structs.replace(
        settings,
        data_dir=str(tmp_path / "data"),
        uploads=UploadSettings(folder=str(tmp_path / "uploads")),
    )
    async with (
        open_service(
            settings,
            Overrides(
                environ={"CLOUDFLARE_API_TOKEN": fake.token},
                cloudflare_transport=fake.transport,
                answer_embedder=FakeEmbedder(),
            ),
        ) as service,
        AsyncTestClient(app=create_app(settings, service=service), base_url=LOCAL_URL) as client,
    ):
        doc = await upload(client, "guide.md", GUIDE)
        assert doc["status"] == "ok", doc
        fake.vectorize.process()  # Vectorize applies writes asynchronously
        stored = fake.vectorize.indexes[settings.cloudflare.index_name].vectors
        async with service.sessions() as session:
            chunk_ids = set(await store.chunk_ids_of(session, doc["id"]))
        assert chunk_ids and chunk_ids <= set(stored)
        response = await client.delete(f"/v1/documents/{doc['id']}")
        assert response.status_code == 200, response.text
        fake.vectorize.process()
        assert not chunk_ids & set(stored)
        assert fake.violations() == []
