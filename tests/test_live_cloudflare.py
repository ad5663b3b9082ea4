"""Live: what the real Cloudflare API does, for whoever holds a token (``pytest -m live``).

Skipped unless ``RAG_LIVE_CLOUDFLARE=1`` with ``CLOUDFLARE_API_TOKEN`` and
``CLOUDFLARE_ACCOUNT_ID`` (README, Development). Every call goes through the real
``CloudflareClient`` on the network, no fake transport. Each test asserts what the code
relies on and prints what it observed (``-rP`` shows it), so the open questions of
docs/cloudflare.md (the reranker's scale, ``usage`` in a stream, the type of
``processedUpToMutation``) are answered by one run. Vectorize is exercised on a
throwaway ``rag-doctor-<random>`` index, deleted at the end whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import make_settings

from rag.backends.cloudflare import doctor
from rag.backends.cloudflare.client import CloudflareClient
from rag.backends.cloudflare.doctor import IRRELEVANT, QUERY, RELEVANT
from rag.backends.cloudflare.rerank_scale import detect
from rag.config import Settings
from rag.errors import AuthError, CloudflareError, ModelNotFound

pytestmark = pytest.mark.live

DIMENSION = 32


def finding(what: str, value: Any) -> None:
    print(f"LIVE {what}: {json.dumps(value, default=str)[:500]}")


@pytest.fixture
def live_settings(tmp_path: Path, live_credentials: dict[str, str]) -> Settings:
    account = live_credentials["CLOUDFLARE_ACCOUNT_ID"]
    settings = make_settings(tmp_path, cloudflare={"account_id": account})
    return msgspec.structs.replace(settings, backend="cloudflare")


@pytest.fixture
async def live(
    live_settings: Settings, live_credentials: dict[str, str]
) -> AsyncIterator[CloudflareClient]:
    async with CloudflareClient.from_settings(live_settings, environ=live_credentials) as client:
        yield client


async def stream_events(client: CloudflareClient, model: str, body: Any) -> list[str]:
    return [line async for line in client.stream_lines("POST", f"/ai/run/{model}", json=body)]


async def test_the_token_verifies(live: CloudflareClient) -> None:
    check = await doctor.token(live)
    finding("token", check.data)
    assert check.ok, check.detail


async def test_embeddings_shape_pooling_and_a_long_text(
    live: CloudflareClient, live_settings: Settings
) -> None:
    model = live_settings.cloudflare.embed_model
    for pooling in ("mean", "cls"):
        body = {"text": ["a first text", "a second"], "pooling": pooling}
        result = await live.call("POST", f"/ai/run/{model}", json=body)
        finding(f"embed {pooling}", {k: v for k, v in result.items() if k != "data"})
        assert result["shape"] == [2, 768] and len(result["data"][0]) == 768
        assert result.get("pooling", pooling) == pooling
    long_text = "word " * 2000
    try:
        result = await live.call("POST", f"/ai/run/{model}", json={"text": [long_text]})
        finding("embed over 512 tokens", {"accepted": True, "shape": result["shape"]})
    except CloudflareError as exc:
        finding("embed over 512 tokens", {"accepted": False, "code": exc.cf_code})


async def test_reranker_raw_scores(live: CloudflareClient, live_settings: Settings) -> None:
    body = {"query": QUERY, "contexts": [{"text": RELEVANT}, {"text": IRRELEVANT}]}
    model = live_settings.cloudflare.rerank_model
    result = await live.call("POST", f"/ai/run/{model}", json=body)
    scores = {item["id"]: item["score"] for item in result["response"]}
    finding("rerank", {"scores": scores, "scale": detect(list(scores.values()))})
    assert scores[0] > scores[1]


async def test_chat_stream_raw_events(live: CloudflareClient, live_settings: Settings) -> None:
    body = {
        "messages": [{"role": "user", "content": "Count from 1 to 400, one number a line."}],
        "max_tokens": 300,
        "stream": True,
    }
    events = await stream_events(live, live_settings.cloudflare.chat_model, body)
    data = [line.removeprefix("data:").strip() for line in events if line.startswith("data:")]
    finding("chat first events", data[:3])
    finding("chat last events", data[-3:])
    assert data[-1] == "[DONE]"
    usage = [json.loads(d)["usage"] for d in data[:-1] if '"usage"' in d]
    finding("chat usage", usage)
    if usage:
        # max_tokens past the model's default of 256 is honoured.
        assert usage[-1]["completion_tokens"] > 256


async def test_error_codes(
    live: CloudflareClient, live_settings: Settings, live_credentials: dict[str, str]
) -> None:
    with pytest.raises(ModelNotFound) as unknown:
        await live.call("POST", "/ai/run/@cf/rag/no-such-model", json={"text": ["x"]}, retry=False)
    finding("unknown model", [unknown.value.http_status, unknown.value.cf_code])
    # Well-formed (40 characters), so it is refused as a token, not as a malformed header.
    refused = {**live_credentials, "CLOUDFLARE_API_TOKEN": secrets.token_urlsafe(30)}
    async with CloudflareClient.from_settings(live_settings, environ=refused) as bad:
        with pytest.raises(AuthError) as auth:
            await bad.call("GET", "/vectorize/v2/indexes", retry=False)
    finding("bad token", [auth.value.http_status, auth.value.cf_code])
    huge = {"text": ["word " * 1000] * 100, "pad": "x" * 12_000_000}
    model = live_settings.cloudflare.embed_model
    with pytest.raises(CloudflareError) as large:
        await live.call("POST", f"/ai/run/{model}", json=huge, retry=False)
    finding("oversized body", [type(large.value).__name__, large.value.http_status])


@pytest.fixture
async def throwaway(live: CloudflareClient) -> AsyncIterator[str]:
    """A fresh index's path, deleted at the end whatever the test did."""
    name = f"rag-doctor-{secrets.token_hex(4)}"
    body = {"name": name, "config": {"dimensions": DIMENSION, "metric": "cosine"}}
    await live.call("POST", "/vectorize/v2/indexes", json=body)
    try:
        yield name
    finally:
        await live.call("DELETE", f"/vectorize/v2/indexes/{name}")


async def processed(live: CloudflareClient, path: str, mutation: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info: dict[str, Any] = await live.call("GET", f"{path}/info")
        if info.get("processedUpToMutation") == mutation:
            return info
        await asyncio.sleep(3)
    pytest.fail(f"Vectorize did not process mutation {mutation} in 120 s")


async def test_vectorize_round_trip(live: CloudflareClient, throwaway: str) -> None:
    path = f"/vectorize/v2/indexes/{throwaway}"
    body = {"name": throwaway, "config": {"dimensions": DIMENSION, "metric": "cosine"}}
    with pytest.raises(CloudflareError) as twice:
        await live.call("POST", "/vectorize/v2/indexes", json=body, retry=False)
    finding("create twice", [twice.value.http_status, twice.value.cf_code])
    values = [[float(i == j) for j in range(DIMENSION)] for i in range(2)]
    lines = [json.dumps({"id": f"v{i}", "values": v}) for i, v in enumerate(values)]
    written = await live.call(
        "POST",
        f"{path}/upsert",
        content="\n".join(lines).encode(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    info = await processed(live, path, written["mutationId"])
    finding("info", info)
    finding("processedUpToMutation type", type(info["processedUpToMutation"]).__name__)
    query = {"vector": values[0], "topK": 2, "returnValues": False}
    matches = (await live.call("POST", f"{path}/query", json=query))["matches"]
    assert matches[0]["id"] == "v0"
    got = await live.call("POST", f"{path}/get_by_ids", json={"ids": ["v1"]})
    assert [v["id"] for v in got] == ["v1"]
    listed = await live.call("GET", f"{path}/list")
    finding("list vectors", listed)
    deleted = await live.call("POST", f"{path}/delete_by_ids", json={"ids": ["v0"]})
    await processed(live, path, deleted["mutationId"])
    assert await live.call("POST", f"{path}/get_by_ids", json={"ids": ["v0"]}) == []
    indexes = await live.call("GET", "/vectorize/v2/indexes")
    assert throwaway in [index["name"] for index in indexes]
