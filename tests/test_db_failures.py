"""Bad days for the database, made real: an outside writer holding the SQLite write lock,
a full database (``PRAGMA max_page_count``: SQLite's own SQLITE_FULL, the error a full
disk gives), an immutable database file or data folder (``chattr +i``, which stops root
too). Answers still end with ``done``; writes that must happen fail with a named error."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fakes import FakeEmbedder, app_client, parse_sse
from httpx import AsyncClient
from sqlalchemy import event
from test_cli import config_env, flat, rag

from rag.cli.common import FAILURE, exit_code
from rag.db.failures import storage_error
from rag.errors import DiskFull
from rag.registry import Overrides
from rag.service import RagService, open_service
from rag.web import create_app

DOCS = {
    "zebra.md": "# Zebra guide\n\nThe zebra protocol moves striped parcels between "
    "warehouses every night.\n",
    # Long enough that caching its answer needs new pages, which a full disk has not.
    "llama.md": "# Llama notes\n\n"
    + " ".join(
        f"Llamas carry wool bales across the mountain pass in week {n} of every spring, "
        "resting at the stone huts where herders count the bales and mend the packs."
        for n in range(40)
    )
    + "\n",
}
CACHED = "How does the zebra protocol move striped parcels?"
FRESH = "What do llamas carry across the mountain pass?"
UPLOAD = b"# Otter memo\n\nOtters sort river stones by colour before the winter flood.\n"


@asynccontextmanager
async def opened(
    tmp_path: Path, database_url: str = ""
) -> AsyncIterator[tuple[RagService, AsyncClient]]:
    """The real service and app (under uvicorn on 127.0.0.1), the documents ingested and
    ``CACHED`` in the cache; on the SQLite file under ``tmp_path`` unless a URL is given."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    settings = make_settings(
        tmp_path, database={"url": database_url}, uploads={"folder": str(tmp_path / "uploads")}
    )
    async with (
        open_service(settings, Overrides(embedder=FakeEmbedder())) as service,
        app_client(create_app(settings, service=service)) as client,
    ):
        await service.ingest([docs])
        assert done_of(await ask(client, CACHED))["cached"] is False
        assert done_of(await ask(client, CACHED))["cached"] is True
        yield service, client


async def ask(client: AsyncClient, question: str) -> list[tuple[str, str]]:
    response = await client.post("/v1/ask", json={"question": question})
    assert response.status_code == 200
    return parse_sse(response.text)


def done_of(frames: list[tuple[str, str]]) -> dict[str, Any]:
    assert [name for name, _ in frames][-1] == "done", frames
    result: dict[str, Any] = json.loads(frames[-1][1])
    return result


async def metric(client: AsyncClient, series: str) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def database(service: RagService) -> Path:
    assert service.db_path is not None
    return service.db_path


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another process's writer (a backup, a VACUUM): the write lock held until the end."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def reconnect(service: RagService, pragma: str | None = None) -> None:
    """New connections for both engines (with ``pragma`` run on each), as after a restart."""
    for engine in (service.engine, service.best_effort_engine):
        if pragma is not None:

            def run(dbapi_connection: Any, _record: Any, sql: str = pragma) -> None:
                dbapi_connection.execute(sql)

            event.listen(engine.sync_engine, "connect", run)
        await engine.dispose()


def fill(path: Path) -> int:
    """Cap the database at its size and fill every free byte, as a full disk would be;
    returns the cap, which each connection must set again (it is not stored)."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE filler (b BLOB)")
    connection.commit()
    pages: int = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    size = 4096
    while size:
        try:
            connection.execute("INSERT INTO filler VALUES (zeroblob(?))", (size,))
            connection.commit()
        except sqlite3.OperationalError as exc:
            assert "full" in str(exc)
            connection.rollback()
            size //= 2
    connection.close()
    return pages


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    done: list[Path] = []
    try:
        for path in paths:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                pytest.skip("chattr +i is not allowed here (needs root on ext4 or similar)")
            done.append(path)
        yield
    finally:
        for path in reversed(done):
            subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_a_held_write_lock_delays_answers_by_half_a_second_not_thirty(
    tmp_path: Path,
) -> None:
    async with opened(tmp_path) as (service, client):
        with write_lock(database(service)):
            for question, cached in ((CACHED, True), (FRESH, False)):
                began = time.perf_counter()
                done = done_of(await ask(client, question))
                # [database] best_effort_wait_s is 0.5 s; 30 s was the old wait.
                assert time.perf_counter() - began < 5
                assert done["cached"] is cached and done["grounded"]
            ready = (await client.get("/readyz")).json()
            assert ready["status"] == "degraded"
            assert ready["database"]["readable"] and not ready["database"]["writable"]
            assert "write lock" in ready["database"]["reason"]
        assert await metric(client, 'rag_db_write_failures_total{what="hits"}') == 1
        assert await metric(client, 'rag_db_write_failures_total{what="cache"}') == 1
        assert await metric(client, 'rag_answer_errors_total{code="internal"}') == 0


async def test_a_full_database_answers_and_names_the_failed_upload(tmp_path: Path) -> None:
    async with opened(tmp_path) as (service, client):
        pages = fill(database(service))
        await reconnect(service, f"PRAGMA max_page_count = {pages}")
        assert not done_of(await ask(client, FRESH))["cached"]
        assert await metric(client, 'rag_db_write_failures_total{what="cache"}') == 1
        # The probe changes nothing, so needs no room: the failing writes tell.
        ready = (await client.get("/readyz")).json()
        assert ready["database"]["reason"] == "cache writes failing: disk full"
        response = await client.post("/v1/documents", files={"file": ("otter.md", UPLOAD)})
        # The pending record still fits; the ingestion job, which must write, names the cause.
        assert response.status_code == 202, response.text
        job_url = f"/v1/jobs/{response.json()['job']['id']}"
        job = (await client.get(job_url)).json()
        for _ in range(200):
            if job["state"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.02)
            job = (await client.get(job_url)).json()
        assert job["state"] == "failed" and job["error"].endswith(": disk full"), job


async def test_an_immutable_database_file_answers_and_refuses_writes_by_name(
    tmp_path: Path,
) -> None:
    async with opened(tmp_path) as (service, client):
        with immutable(database(service)):
            await reconnect(service)
            assert done_of(await ask(client, CACHED))["cached"] is True
            assert done_of(await ask(client, FRESH))["cached"] is False
            ready = (await client.get("/readyz")).json()
            assert ready["database"] == {
                "readable": True,
                "writable": False,
                "reason": "it is read-only",
            }
            response = await client.post("/v1/documents", files={"file": ("otter.md", UPLOAD)})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "read_only"
            await reconnect(service)  # let go of the file before chattr -i


async def test_readiness_is_ok_on_a_working_database(tmp_path: Path, database_url: str) -> None:
    async with opened(tmp_path, database_url) as (_, client):
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "database": {"readable": True, "writable": True, "reason": None},
        }


@pytest.mark.usefixtures("cli_on_fake_embedder")
def test_a_read_only_data_folder_is_one_line_naming_the_path(tmp_path: Path) -> None:
    env = config_env(tmp_path / "state")
    data = tmp_path / "state" / "data"
    data.mkdir()
    with immutable(data):
        result = rag(env, "ask", "anything")
    assert result.exit_code == FAILURE
    assert flat(result.stderr) == (
        f"error: cannot open the database {data / 'rag.db'}: "
        "the folder is read-only (Operation not permitted)"
    )


def test_a_full_database_is_named_disk_full_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (x)")
    connection.execute(
        f"PRAGMA max_page_count = {connection.execute('PRAGMA page_count').fetchone()[0]}"
    )
    with pytest.raises(sqlite3.OperationalError) as raised:
        connection.execute("INSERT INTO t VALUES (zeroblob(100000))")
    connection.close()
    error = storage_error(raised.value, path)
    assert isinstance(error, DiskFull) and error.status_code == 507
    assert error.message == f"cannot write the database {path}: disk full"
    assert exit_code(error) == FAILURE  # the settings are fine; the disk is not
