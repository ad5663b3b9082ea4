"""Cloudflare's API budget, its holds and degraded mode's memory, shared by every process
over one database (``[cloudflare] state_store``), and each process alone without one.

Budgets run on a simulated timeline: every client's sleep moves one shared clock, which
is also the budget's wall clock, so five minutes pass in no time; the fake plays the
account-wide limit exactly (a sliding window of accepted requests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cf_fake import EMBED, FakeCloudflare
from cf_service import cloudflare_service, write_server_docs
from fakes import Clock

from rag.backends.cloudflare.client import CloudflareClient
from rag.backends.cloudflare.shared_budget import SharedBudget, block
from rag.db.engine import create_engine, session_factory, shares_database, upgrade
from rag.errors import CapacityError, CloudflareError, DailyLimitExceeded
from rag.retrieval.refusals import REFUSING, Refusal, Refusals, refusal_reason

INFO = "/vectorize/v2/indexes/rag/info"
NAME = "cloudflare:test"


class Moment:
    """A wall clock (``datetime``) that moves only when a test sets ``now``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Timeline(Clock):
    """One clock for several processes: sleeps that overlap pass the time once."""

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        until = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, until)


@asynccontextmanager
async def processes(
    fake: FakeCloudflare, clock: Clock, budget: int, url: str | None, count: int = 2
) -> AsyncIterator[list[CloudflareClient]]:
    """``count`` clients on ``fake``, each with its own engine on ``url`` (as many
    processes), sharing their budget there; each alone when ``url`` is None."""
    engines = [create_engine(url) for _ in range(count)] if url else []
    clients = [
        fake.client(sleep=clock.sleep, clock=clock, requests_per_5min=budget) for _ in range(count)
    ]
    for client, engine in zip(clients, engines, strict=False):
        client.limiter.share(SharedBudget(session_factory(engine), NAME, clock=clock))
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()
        for engine in engines:
            await engine.dispose()


def limited(limit: int) -> tuple[FakeCloudflare, Timeline]:
    clock = Timeline()
    fake = FakeCloudflare(rate_limit=limit, clock=clock)
    fake.vectorize.add_index("rag", 8)
    return fake, clock


async def burst(client: CloudflareClient, calls: int) -> None:
    for n in range(calls):
        if n % 2:
            await client.call("GET", INFO)
        else:
            await client.call("POST", EMBED, json={"text": ["x"]})


async def test_alone_two_processes_spend_twice_the_budget_and_get_the_account_blocked() -> None:
    fake, clock = limited(20)
    async with processes(fake, clock, 20, None) as (one, two):
        with pytest.raises(CapacityError):
            await asyncio.gather(burst(one, 15), burst(two, 15))
    assert fake.rate_limited >= 1


async def test_two_processes_over_one_database_share_one_budget(database_url: str) -> None:
    await upgrade(database_url)
    fake, clock = limited(20)
    start = clock.now
    async with processes(fake, clock, 20, database_url) as (one, two):
        await asyncio.gather(burst(one, 30), burst(two, 25))
    assert fake.rate_limited == 0 and len(fake.requests) == 55
    # 55 calls at 20 per 5 minutes: at least two windows waited, and not much more (a
    # sub-window's worth, the price of counting an upper bound).
    assert 2 * 300 <= clock.now - start <= 3 * 300
    assert fake.violations() == []


async def test_calls_are_reserved_in_blocks_and_unspent_ones_given_back(database_url: str) -> None:
    await upgrade(database_url)
    fake, clock = limited(0)
    async with processes(fake, clock, 1200, database_url) as (one, two):
        assert block(1200) == 10
        await burst(one, 3)  # reserves 10, spends 3
        clock.now += 6  # past the lease: the next reservation gives 7 back
        await burst(two, 1)
        await burst(one, 1)
    engine = create_engine(database_url)
    try:
        third = SharedBudget(session_factory(engine), NAME, clock=clock)
        # What is left: all but the first block's 3 spent calls (7 were given back) and
        # the two blocks the processes hold now, spent or not.
        rest = await third.reserve(1200 - 3 - 10 - 10, 1200)
        spent = await third.reserve(1, 1200)
    finally:
        await engine.dispose()
    assert rest.calls == 1177 and spent.calls == 0
    # Room again once the sub-window of all these calls leaves the 5 minutes.
    assert spent.wait_s == pytest.approx(990 + 30 + 300 - clock.now)
    assert len(fake.requests) == 5


async def test_a_hold_one_process_meets_holds_every_other(database_url: str) -> None:
    await upgrade(database_url)
    fake, clock = limited(0)
    async with processes(fake, clock, 1200, database_url) as (one, two):
        fake.fail_next("/info", 429, 971)  # the account-wide limit: 5 minutes, unsaid
        with pytest.raises(CapacityError):
            await one.call("GET", INFO, retry=False)
        sent = len(fake.requests)
        with pytest.raises(CapacityError, match="holds every call"):
            await two.call("POST", EMBED, json={"text": ["x"]})
        assert len(fake.requests) == sent  # never sent: it would have been refused
        clock.now += 301
        await two.call("POST", EMBED, json={"text": ["x"]})
    assert len(fake.requests) == sent + 1


async def test_without_the_database_each_process_counts_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake, clock = limited(0)
    unmigrated = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"  # no api_budget table
    start = clock.now
    with caplog.at_level(logging.WARNING, "rag.backends.cloudflare.ratelimit"):
        async with processes(fake, clock, 5, unmigrated, count=1) as (one,):
            await burst(one, 6)  # the sixth waits for this process's own window
    assert len(fake.requests) == 6 and clock.now - start >= 300
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "counts its own calls" in warnings[0]


def test_auto_shares_the_state_on_postgresql_only() -> None:
    assert shares_database("auto", "postgresql+asyncpg://rag@db/rag")
    assert not shares_database("auto", "sqlite+aiosqlite:///rag.db")
    assert shares_database("database", "sqlite+aiosqlite:///rag.db")
    assert not shares_database("memory", "postgresql+asyncpg://rag@db/rag")


async def test_replicas_share_the_hold_and_degraded_mode(database_url: str, tmp_path: Path) -> None:
    """Two services over one database, as ``open_service`` wires them."""
    fake = FakeCloudflare()
    midnight = datetime(2026, 3, 5, tzinfo=UTC)
    clock = Moment(midnight - timedelta(hours=1))
    sections: dict[str, Any] = {
        "cloudflare": {"max_retries": 0, "state_store": "database"},
        "database": {"url": database_url},
    }
    docs = write_server_docs(tmp_path / "docs")
    async with (
        cloudflare_service(fake, tmp_path / "a", clock=clock, **sections) as one,
        cloudflare_service(fake, tmp_path / "b", clock=clock, **sections) as two,
    ):
        await one.ingest([docs])
        fake.vectorize.process()
        embeds = len(fake.calls("bge-base"))
        fake.refuse_workers_ai(429, 3036, "you have used up your daily free allocation")
        assert "3036" in str((await one.search_result("server port")).degraded)
        # The other replica knows before it asks: no refused call of its own.
        found = await two.search_result("server port")
        assert found.degraded is not None and "3036" in found.degraded and found.hits
        assert len(fake.calls("bge-base")) == embeds + 1
        with pytest.raises(DailyLimitExceeded, match="00:00 UTC"):
            await two.ingest([docs])

        fake.stop_refusing()
        clock.now = midnight  # the 3036 is over, for both
        fake.fail_next(EMBED, 429, 971)  # the account-wide limit: every call, 5 minutes
        with pytest.raises(CapacityError):
            await one.search_result("server port")
        sent = len(fake.requests)
        with pytest.raises(CapacityError, match="holds every call"):
            await two.search_result("server port")
        assert len(fake.requests) == sent  # never sent: it would have been refused


class BrokenStore:
    async def load(self) -> Refusal | None:
        raise OSError("database away")

    async def save(self, refusal: Refusal) -> None:
        raise OSError("database away")


async def test_a_store_that_fails_leaves_each_process_its_own_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = Refusals(60.0, lambda: datetime(2026, 3, 4, 12, tzinfo=UTC), BrokenStore())
    with caplog.at_level(logging.WARNING, "rag.retrieval.refusals"):
        await refusals.refresh()
        reason = await refusals.note(DailyLimitExceeded("3036", cf_code=3036, http_status=429))
    assert reason is not None and refusals.reason() == reason
    assert len(caplog.records) == 1 and "remembers alone" in caplog.records[0].getMessage()


def test_every_refusing_error_has_a_reason_and_a_distinct_stored_code() -> None:
    # The shared memory rebuilds a refusal from its code: each must name one class, and
    # each class must be one refusal_reason explains.
    assert len({cls.code for cls in REFUSING}) == len(REFUSING)
    for cls in REFUSING:
        assert refusal_reason(cls("refused", cf_code=None, http_status=503)) is not None, cls
    assert refusal_reason(CloudflareError("other", cf_code=None, http_status=400)) is None
