"""Rate limit (429 + Retry-After), request body limit (413) and CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import LOCAL_URL, make_settings
from fakes import Clock, FakeEmbedder
from litestar import Litestar
from litestar.testing import AsyncTestClient

from rag.keys import KeyStore
from rag.registry import Overrides
from rag.service import RagService, open_service
from rag.web import create_app
from rag.web.limits import MAX_CLIENTS, RateLimiter, TooManyRequests


@asynccontextmanager
async def open_client(
    tmp_path: Path, **sections: Any
) -> AsyncIterator[tuple[AsyncTestClient[Litestar], RagService]]:
    settings = make_settings(tmp_path, **sections)
    async with (
        open_service(settings, Overrides(embedder=FakeEmbedder())) as service,
        AsyncTestClient(app=create_app(settings, service=service), base_url=LOCAL_URL) as client,
    ):
        yield client, service


def test_bucket_allows_a_burst_then_one_request_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(3, clock)
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("a")
    assert refused.value.headers == {"Retry-After": "20"} and refused.value.status_code == 429
    limiter.take("b")  # another client has its own bucket
    clock.now += 19.0
    with pytest.raises(TooManyRequests) as again:
        limiter.take("a")
    assert again.value.headers["Retry-After"] == "1"
    clock.now += 1.0
    limiter.take("a")
    clock.now += 3600.0  # a long pause refills the bucket, never beyond its size
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(TooManyRequests):
        limiter.take("a")


def test_zero_turns_the_limit_off_and_buckets_stay_bounded() -> None:
    off = RateLimiter(0)
    for _ in range(1000):
        off.take("a")
    clock = Clock()
    limiter = RateLimiter(60, clock)
    for n in range(MAX_CLIENTS + 50):
        limiter.take(f"ip:{n}")
    assert len(limiter._buckets) <= MAX_CLIENTS


async def test_429_with_retry_after_per_client_address(tmp_path: Path) -> None:
    async with open_client(tmp_path, auth={"rate_limit_per_minute": 2}) as (client, _):
        assert (await client.get("/v1/documents")).status_code == 200
        assert (await client.get("/v1/jobs")).status_code == 200
        refused = await client.get("/v1/documents")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "auth.rate_limit_per_minute" in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        # Health checks and scrapes are not API calls and are never limited.
        for _ in range(5):
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200


async def test_each_key_has_its_own_allowance_and_guessing_is_limited(tmp_path: Path) -> None:
    auth = {"required": True, "rate_limit_per_minute": 2}
    async with open_client(tmp_path, auth=auth) as (client, service):
        keys = KeyStore(service.sessions)
        first, second = (await keys.create("one"))[1], (await keys.create("two"))[1]
        for _ in range(2):
            ok = await client.get("/v1/jobs", headers={"Authorization": f"Bearer {first}"})
            assert ok.status_code == 200
        over = await client.get("/v1/jobs", headers={"Authorization": f"Bearer {first}"})
        assert over.status_code == 429 and "retry-after" in over.headers
        other = await client.get("/v1/jobs", headers={"Authorization": f"Bearer {second}"})
        assert other.status_code == 200
        wrong = {"Authorization": "Bearer rag_guess"}
        statuses = [(await client.get("/v1/jobs", headers=wrong)).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]


async def test_bodies_over_the_limit_are_413(tmp_path: Path) -> None:
    async with open_client(tmp_path, web={"max_body_mb": 0.001}) as (client, _):
        big = {"query": "zebra " * 400}
        response = await client.post("/v1/search", json=big)
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "too_large"
        assert "0.001 MB" in error["message"] and "[web] max_body_mb" in error["message"]
        small = await client.post("/v1/search", json={"query": "zebra"})
        assert small.status_code == 200


PREFLIGHT = {
    "Origin": "https://intranet.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_cors_is_closed_by_default(tmp_path: Path) -> None:
    async with open_client(tmp_path) as (client, _):
        preflight = await client.options("/v1/ask", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in preflight.headers
        plain = await client.get("/v1/documents", headers={"Origin": "https://intranet.example"})
        assert plain.status_code == 200
        assert "access-control-allow-origin" not in plain.headers


async def test_cors_opens_for_a_configured_origin_only(tmp_path: Path) -> None:
    web = {"cors_origins": ["https://intranet.example"]}
    async with open_client(tmp_path, web=web, auth={"required": True}) as (client, _):
        preflight = await client.options("/v1/ask", headers=PREFLIGHT)
        assert preflight.status_code in (200, 204), preflight.text
        assert preflight.headers["access-control-allow-origin"] == "https://intranet.example"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        stranger = await client.options(
            "/v1/ask", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert stranger.headers.get("access-control-allow-origin") != "https://evil.example"
        # The request after the preflight is still checked for its key.
        refused = await client.get("/v1/documents", headers={"Origin": "https://intranet.example"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://intranet.example"
