"""The one API budget: a burst stays under Cloudflare's account-wide limit.

The fake plays that limit (``rate_limit`` requests per window, then 429 code 971 with
``Retry-After`` and every call refused for the window); a ``Clock`` whose ``sleep`` moves
it stands in for time, so five simulated minutes pass in no time.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from cf_fake import EMBED, FakeCloudflare
from fakes import Clock

from rag.backends.cloudflare.client import CloudflareClient
from rag.backends.cloudflare.ratelimit import policy_quota, spent_reset
from rag.errors import CapacityError

INFO = "/vectorize/v2/indexes/rag/info"


def limited(limit: int, **fake_fields: object) -> tuple[FakeCloudflare, Clock]:
    clock = Clock()
    fake = FakeCloudflare(rate_limit=limit, clock=clock, **fake_fields)  # type: ignore[arg-type]
    fake.vectorize.add_index("rag", 8)
    return fake, clock


def on(fake: FakeCloudflare, clock: Clock, budget: int) -> CloudflareClient:
    return fake.client(sleep=clock.sleep, clock=clock, requests_per_5min=budget)


async def test_without_a_budget_a_burst_gets_the_account_blocked() -> None:
    fake, clock = limited(20)
    async with on(fake, clock, 0) as client:
        for _ in range(20):
            await client.call("GET", INFO)
        with pytest.raises(CapacityError) as refused:
            await client.call("GET", INFO)
        # Blocked for the window: the next call is refused too, without being sent.
        sent = len(fake.requests)
        with pytest.raises(CapacityError, match="holds every call"):
            await client.call("GET", INFO)
    assert refused.value.cf_code == 971 and refused.value.retry_after == 300
    assert fake.rate_limited == 1 and len(fake.requests) == sent


async def test_the_budget_keeps_a_burst_under_the_limit() -> None:
    fake, clock = limited(20)
    start = clock.now
    async with on(fake, clock, 20) as client:
        await asyncio.gather(*(client.call("GET", INFO) for _ in range(30)))
        for _ in range(25):
            await client.call("POST", EMBED, json={"text": ["x"]})  # Workers AI shares it
    assert fake.rate_limited == 0 and len(fake.requests) == 55
    assert clock.now - start == pytest.approx(2 * 300)  # 55 calls need three windows
    assert client.limiter.waited_s > 0
    assert fake.violations() == []


async def test_cloudflares_headers_lower_a_budget_set_too_high() -> None:
    # Another process spends the same account's budget: only the headers can tell.
    fake, clock = limited(10, rate_headers=True)
    async with on(fake, clock, 1200) as client:
        for _ in range(25):
            await client.call("GET", INFO)
    assert fake.rate_limited == 0 and len(fake.requests) == 25
    assert client.limiter.limit == 10


async def test_a_short_retry_after_holds_every_call_then_lets_them_through() -> None:
    fake, clock = limited(0)
    async with on(fake, clock, 1200) as client:
        fake.fail_next("/info", 429, 971, retry_after=5)
        first = asyncio.ensure_future(client.call("GET", INFO))
        await asyncio.sleep(0)
        await asyncio.gather(first, client.call("POST", EMBED, json={"text": ["x"]}))
    assert len(fake.requests) == 3 and clock.now >= 1005


async def test_a_models_own_429_does_not_hold_the_account() -> None:
    fake, clock = limited(0)
    async with on(fake, clock, 1200) as client:
        fake.fail_next("bge-base", 429, 3040, retry_after=120)
        with pytest.raises(CapacityError):
            await client.call("POST", EMBED, json={"text": ["x"]})
        await client.call("GET", INFO)  # not held: Vectorize is another budget
    assert len(fake.requests) == 2


def test_header_parsing_follows_cloudflares_examples() -> None:
    assert spent_reset('"default";r=50;t=30') is None
    assert spent_reset('"burst";r=3;t=1, "default";r=0;t=42') == 42.0
    assert spent_reset("nonsense") is None
    assert policy_quota('"burst";q=100;w=60', 300.0) is None
    assert policy_quota('"burst";q=100;w=60, "default";q=1200;w=300', 300.0) == 1200
    headers = httpx.Headers({"Ratelimit": '"default";r=0;t=7'})
    assert spent_reset(headers.get("ratelimit", "")) == 7.0
