"""Shared fixtures: settings on a temporary database, a service on the fake embedder."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from pg import REQUIRED as POSTGRES_REQUIRED
from pg import Cluster

from rag.config import Settings
from rag.registry import Overrides
from rag.service import RagService, open_service

if TYPE_CHECKING:
    from cf_fake import FakeCloudflare
    from litestar import Litestar
    from s3_server import S3Server

    from rag.backends.cloudflare.client import CloudflareClient

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpus"
LOCAL_URL = "http://127.0.0.1:8000"
"""Base URL for in-process test clients: Litestar's default (testserver.local) is a Host
that a server on loopback refuses, as it would a DNS-rebound name."""


# The operator's shell may hold settings and secrets (RAG_DATABASE__URL, a real
# CLOUDFLARE_API_TOKEN): none of them may reach a test, nor a `rag` it starts as a
# subprocess. Tests that want a variable set it themselves.
_OUTSIDE_ENV = ("RAG_", "CLOUDFLARE_", "OPENAI_", "OPENROUTER_", "AWS_")

# The one way past that: `RAG_LIVE_CLOUDFLARE=1` opts in to the live tests
# (test_live_cloudflare.py, marked `live`), and only then are the account's credentials
# kept, here, read at import, before the strip below; they reach the live tests' own
# clients through the `live_credentials` fixture and are never put back in os.environ.
LIVE_CREDENTIALS: dict[str, str] = (
    {name: os.environ.get(name, "") for name in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID")}
    if os.environ.get("RAG_LIVE_CLOUDFLARE") == "1"
    else {}
)


@pytest.fixture(autouse=True, scope="session")
def _clean_environment() -> Iterator[None]:
    # Session-wide, so module- and session-scoped fixtures start clean as well.
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(_OUTSIDE_ENV):
                patch.delenv(name)
        yield


@pytest.fixture
def live_credentials() -> dict[str, str]:
    """The opted-in token and account, or a skip that says how to opt in."""
    if not LIVE_CREDENTIALS:
        pytest.skip("live Cloudflare test: set RAG_LIVE_CLOUDFLARE=1 to run it")
    if not all(LIVE_CREDENTIALS.values()):
        pytest.skip("RAG_LIVE_CLOUDFLARE=1 needs CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID")
    return dict(LIVE_CREDENTIALS)


QUICK_JOBS = {"heartbeat_s": 0.1, "stale_after_s": 1.0, "poll_s": 0.1}
"""``[jobs]`` for tests that kill a process holding a job: taken up again within a second."""


DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that reaches the database through `database` (the `settings` and
    # `service` fixtures, `database_url`) runs once per database; one that needs a
    # single one says so: @pytest.mark.database("sqlite").
    if "database" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("database")
        metafunc.parametrize("database", marker.args if marker else DATABASES, indirect=True)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """Which database the test runs on: "sqlite" or "postgresql"."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server for the whole run (tests/pg.py); skipped when not installed,
    unless RAG_TEST_REQUIRE_POSTGRES=1 (CI) makes that a failure."""
    if why := Cluster.missing():
        if POSTGRES_REQUIRED:
            pytest.fail(f"{why}, and RAG_TEST_REQUIRE_POSTGRES=1")
        pytest.skip(why)
    cluster = Cluster()
    try:
        cluster.start()
        cluster.migrate_template()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def database_url(database: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """``[database] url`` for this test: the default SQLite file under ``tmp_path``
    (where ``make_settings`` puts it), or a fresh, migrated PostgreSQL database."""
    if database == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'rag.db'}"
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database()
    yield url
    cluster.drop(url)


def make_settings(tmp_path: Path, **sections: Mapping[str, object]) -> Settings:
    """Default settings with the database under ``tmp_path`` and per-section overrides."""
    raw: dict[str, object] = {"data_dir": str(tmp_path / "data"), **sections}
    return msgspec.convert(raw, Settings)


def endpoints(app: Litestar, prefix: str = "/") -> list[tuple[str, str]]:
    """Every (method, concrete path) the app serves under ``prefix``, OPTIONS and HEAD
    aside: taken from the app itself, so a test over them covers routes added later."""
    from litestar.routes import HTTPRoute

    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith(prefix):
            continue
        path = re.sub(r"\{[^}]+\}", "some-id", route.path)
        for method in route.methods:
            if method not in ("OPTIONS", "HEAD"):
                found.append((method, path))
    return sorted(found)


@pytest.fixture
def settings(tmp_path: Path, database: str, database_url: str) -> Settings:
    if database == "sqlite":  # the default URL, as a user without a [database] url has
        return make_settings(tmp_path)
    return make_settings(tmp_path, database={"url": database_url})


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[RagService]:
    from fakes import FakeEmbedder

    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as svc:
        yield svc


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (moto's) on 127.0.0.1, for the whole run."""
    from s3_server import running

    with running() as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A new bucket of ``s3_server``: the ``[storage]`` section naming it, credentials set."""
    from s3_server import CREDENTIALS

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return s3_server.storage(s3_server.new_bucket())


@pytest.fixture
def cli_on_fake_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rag`` commands open the real service, on the fake embedder: no model to load."""
    from fakes import FakeEmbedder

    from rag import service as rag_service

    real = rag_service.open_service

    def on_fake(settings: Settings, **options: Any) -> AbstractAsyncContextManager[RagService]:
        return real(settings, Overrides(embedder=FakeEmbedder()), **options)

    monkeypatch.setattr(rag_service, "open_service", on_fake)


@pytest.fixture
def fake() -> Iterator[FakeCloudflare]:
    """The in-process Cloudflare; a request its schemas reject fails the test at teardown."""
    from cf_fake import FakeCloudflare

    fake = FakeCloudflare()
    yield fake
    assert fake.violations() == []


@pytest.fixture
async def client(fake: FakeCloudflare) -> AsyncIterator[CloudflareClient]:
    async with fake.client() as client:
        yield client
