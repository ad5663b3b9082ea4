"""The per-key rate limit holds across replicas: the counts live in the database.

The replicas are apps under real uvicorns on 127.0.0.1, on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from conftest import make_settings
from fakes import FakeEmbedder, app_client
from httpx import AsyncClient

from rag.config import Settings
from rag.db.engine import create_engine, session_factory
from rag.keys import KeyStore
from rag.registry import Overrides
from rag.service import open_service
from rag.web import create_app
from rag.web.auth import Access, shared_limit
from rag.web.limits import TooManyRequests
from rag.web.shared_limit import SharedRateLimiter, retry_after

MINUTE_START = 1_800_000_000.0  # a Unix time that is a whole minute
PER_MINUTE = 5


class WallClock:
    """Unix time that moves only when a test sets ``now``."""

    def __init__(self, now: float = MINUTE_START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def replicas(
    tmp_path: Path, database_url: str, count: int, store: str
) -> AsyncIterator[tuple[list[AsyncClient], str, WallClock]]:
    """``count`` apps, each with its own service and engines, over one database."""
    settings = make_settings(
        tmp_path,
        database={"url": database_url},
        auth={"required": True, "rate_limit_per_minute": PER_MINUTE, "rate_limit_store": store},
    )
    clock = WallClock(MINUTE_START + 10)
    async with AsyncExitStack() as stack:
        clients, key = [], ""
        for n in range(count):
            service = await stack.enter_async_context(
                open_service(settings, Overrides(embedder=FakeEmbedder()), migrate=n == 0)
            )
            if not key:
                _, key = await KeyStore(service.sessions).create("tests")
            app = create_app(settings, service=service)
            access: Access = app.state.access
            if isinstance(access.limiter, SharedRateLimiter):
                access.limiter.clock = clock
            clients.append(await stack.enter_async_context(app_client(app)))
        yield clients, key, clock


async def statuses(clients: list[AsyncClient], key: str, requests: int) -> list[int]:
    """Requests sent to the replicas in turn, as a load balancer would."""
    codes = []
    for n in range(requests):
        response = await clients[n % len(clients)].post(
            "/v1/search", json={"query": "zebra"}, headers={"Authorization": f"Bearer {key}"}
        )
        codes.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "rate_limited"
    return codes


async def test_two_replicas_share_one_allowance(tmp_path: Path, database_url: str) -> None:
    async with replicas(tmp_path, database_url, 2, "database") as (clients, key, clock):
        assert await statuses(clients, key, 10) == [200] * PER_MINUTE + [429] * PER_MINUTE
        # Half a minute into the next one, half of the last minute's requests still count.
        clock.now += 60 + 20
        assert await statuses(clients, key, 4) == [200, 200, 429, 429]


async def test_in_memory_each_replica_allows_the_full_rate(
    tmp_path: Path, database_url: str
) -> None:
    async with replicas(tmp_path, database_url, 2, "memory") as (clients, key, _):
        assert (await statuses(clients, key, 12)).count(200) == 2 * PER_MINUTE


def test_auto_shares_the_count_on_postgresql_only(tmp_path: Path) -> None:
    def settings(url: str, store: str = "auto") -> Settings:
        return make_settings(tmp_path, database={"url": url}, auth={"rate_limit_store": store})

    assert shared_limit(settings("postgresql+asyncpg://rag@db/rag"))
    assert not shared_limit(settings(""))  # SQLite
    assert shared_limit(settings("", "database"))
    assert not shared_limit(settings("postgresql+asyncpg://rag@db/rag", "memory"))


async def test_without_the_database_the_process_counts_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A database without the table (or unreachable): every count fails.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    monotonic = WallClock(100.0)
    limiter = SharedRateLimiter(PER_MINUTE, lambda: session_factory(engine), WallClock(), monotonic)
    try:
        with caplog.at_level(logging.WARNING, logger="rag.web.shared_limit"):
            for _ in range(PER_MINUTE):
                await limiter.take("key:1")  # let through, never a 500
            with pytest.raises(TooManyRequests):
                await limiter.take("key:1")  # the in-process bucket still limits
        warnings = [r for r in caplog.records if "shared rate limit" in r.getMessage()]
        assert len(warnings) == 1  # once per outage, not per request
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("hits", "prior", "elapsed", "wait"),
    [
        # This minute spent: next minute, once 5 * (1 - t / 60) + 1 <= 5, t = 12 s.
        (5, 0, 10.0, 50 + 12),
        # 4 * 0.25 + 3 + 1 = 5 fits once 45 s of this minute have passed.
        (3, 4, 15.0, 30),
        # Twice the limit (other replicas raced): 10 * (1 - t / 60) + 1 <= 5, t = 36 s.
        (10, 0, 0.0, 60 + 36),
    ],
)
def test_retry_after_says_when_one_more_fits(
    hits: int, prior: int, elapsed: float, wait: int
) -> None:
    assert retry_after(hits, prior, elapsed, PER_MINUTE) == wait
