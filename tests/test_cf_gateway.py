"""AI Gateway routing: Workers AI through the gateway, Vectorize always to the REST API.

The real client, Workers AI classes and service run on the in-process fake, which plays
both hosts (``API_BASE`` and ``GATEWAY_BASE``) and validates gateway bodies like direct ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cf_fake import API_BASE, CHAT, CHAT_BODY, EMBED, GATEWAY_BASE, RERANK, FakeCloudflare, Recorded
from cf_service import cloudflare_service, write_server_docs

from rag.backends.cloudflare.client import CloudflareClient
from rag.config import effective, load_settings
from rag.domain import DoneEvent
from rag.errors import AuthError, CapacityError, ConfigError, DailyLimitExceeded, StreamTruncated

AIG_TOKEN = "aig-token-never-logged"


def gateway_url(fake: FakeCloudflare, model_path: str) -> str:
    model = model_path.removeprefix("/ai/run/")
    return f"{GATEWAY_BASE}/{fake.account_id}/{fake.gateway_id}/workers-ai/{model}"


def on_gateway(fake: FakeCloudflare, **kw: Any) -> CloudflareClient:
    return fake.client(gateway_id=fake.gateway_id, **kw)


async def every_kind_of_call(client: CloudflareClient) -> None:
    """Embeddings, the reranker, a streamed chat and a Vectorize call, as the backend makes them."""
    await client.call("POST", EMBED, json={"text": ["a short text"], "pooling": "mean"})
    rerank = {"query": "port", "contexts": [{"text": "the port is 8000"}]}
    await client.call("POST", RERANK, json=rerank)
    lines = [line async for line in client.stream_lines("POST", CHAT, json=CHAT_BODY)]
    assert "data: [DONE]" in lines
    await client.call(
        "POST",
        "/vectorize/v2/indexes",
        json={
            "name": "rag",
            "config": {"dimensions": 768, "metric": "cosine"},
        },
    )


def split(fake: FakeCloudflare) -> tuple[list[Recorded], list[Recorded]]:
    ai = fake.calls("/ai/run/")
    return ai, [r for r in fake.requests if r not in ai]


async def test_with_a_gateway_workers_ai_goes_through_it_and_vectorize_does_not() -> None:
    fake = FakeCloudflare(gateway_token=AIG_TOKEN)
    async with on_gateway(fake, aig_token=AIG_TOKEN) as client:
        await every_kind_of_call(client)
    ai, rest = split(fake)
    assert [r.url for r in ai] == [gateway_url(fake, p) for p in (EMBED, RERANK, CHAT)]
    for recorded in ai:
        assert recorded.headers["authorization"] == f"Bearer {fake.token}"
        assert recorded.headers["cf-aig-authorization"] == f"Bearer {AIG_TOKEN}"
        # No meter outside an answer or an ingest run: nothing to tag the call with.
        assert "cf-aig-metadata" not in recorded.headers
        # The gateway's cache is the operator's to configure, never overruled from here.
        assert not any(name.startswith("cf-aig-") and "cache" in name for name in recorded.headers)
    assert ai[-1].headers["accept"] == "text/event-stream"
    assert [r.url for r in rest] == [f"{API_BASE}/accounts/{fake.account_id}/vectorize/v2/indexes"]
    # The gateway's token stays with the gateway.
    assert "cf-aig-authorization" not in rest[0].headers
    assert fake.violations() == []


async def test_without_a_gateway_nothing_changes(fake: FakeCloudflare) -> None:
    async with fake.client() as client:
        assert client.gateway is None
        await every_kind_of_call(client)
    assert all(r.url.startswith(f"{API_BASE}/accounts/{fake.account_id}/") for r in fake.requests)
    assert not any(k.startswith("cf-aig-") for r in fake.requests for k in r.headers)


async def test_an_open_gateway_gets_no_gateway_token(fake: FakeCloudflare) -> None:
    async with on_gateway(fake) as client:
        await client.call("POST", EMBED, json={"text": ["x"]})
    assert "cf-aig-authorization" not in fake.requests[0].headers


async def test_an_authenticated_gateway_without_its_token_says_so_once(
    fake: FakeCloudflare,
) -> None:
    fake.gateway_token = AIG_TOKEN
    async with on_gateway(fake, aig_token="wrong") as client:
        with pytest.raises(AuthError) as info:
            await client.call("POST", EMBED, json={"text": ["x"]})
    error = info.value
    assert error.cf_code == 2009 and error.http_status == 401 and not error.retryable
    assert "CLOUDFLARE_AIG_TOKEN" in error.message and "wrong" not in error.message
    assert len(fake.requests) == 1 and fake.sleeps == []


async def test_retries_and_error_mapping_are_the_same_through_the_gateway(
    fake: FakeCloudflare,
) -> None:
    async with on_gateway(fake) as client:
        fake.fail_next("bge-base", 429, 3040, retry_after=2, times=2)
        await client.call("POST", EMBED, json={"text": ["x"]})
        assert len(fake.calls("bge-base")) == 3 and len(fake.sleeps) == 2
        assert all(2.0 <= s <= 2.5 for s in fake.sleeps)

        fake.fail_next("llama", 429, 3036)
        with pytest.raises(DailyLimitExceeded):
            [line async for line in client.stream_lines("POST", CHAT, json=CHAT_BODY)]

        fake.fail_next("bge-base", 429, None, retry_after=600)
        with pytest.raises(CapacityError):  # the gateway's own rate limit: a plain 429
            await client.call("POST", EMBED, json={"text": ["x"]})

        fake.script_chat(cut_after=1)
        with pytest.raises(StreamTruncated):
            [line async for line in client.stream_lines("POST", CHAT, json=CHAT_BODY)]
    assert all(r.url.startswith(GATEWAY_BASE) for r in fake.requests)


async def test_the_fake_gateway_refuses_vectorize() -> None:
    fake = FakeCloudflare()
    url = f"{GATEWAY_BASE}/{fake.account_id}/{fake.gateway_id}/vectorize/v2/indexes"
    async with httpx.AsyncClient(transport=fake.transport) as http:
        response = await http.post(url, headers={"Authorization": f"Bearer {fake.token}"})
    assert response.status_code == 400 and response.json()["success"] is False
    assert fake.schema_errors and "vectorize" in fake.schema_errors[0]


async def test_a_whole_answer_through_the_gateway_is_tagged_with_its_trace_id(
    tmp_path: Path,
) -> None:
    fake = FakeCloudflare(gateway_token=AIG_TOKEN)
    docs = write_server_docs(tmp_path / "docs")
    async with cloudflare_service(
        fake,
        tmp_path,
        environ={"CLOUDFLARE_AIG_TOKEN": AIG_TOKEN},
        cloudflare={"gateway_id": fake.gateway_id},
    ) as service:
        await service.ingest([docs])
        fake.vectorize.process()
        ingest_calls = len(fake.requests)
        events = [event async for event in service.ask("Which port does the server listen on?")]
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.provider.startswith("workers-ai:")
    ai, rest = split(fake)
    assert ai and all(r.url.startswith(f"{GATEWAY_BASE}/") for r in ai)
    assert rest and all(r.url.startswith(f"{API_BASE}/") for r in rest)
    tags = [json.loads(r.headers["cf-aig-metadata"]) for r in ai]
    assert {t["purpose"] for t in tags[:1]} == {"ingest"}
    asked = [r for r in fake.requests[ingest_calls:] if r in ai]
    assert {r.path for r in asked} == {EMBED, RERANK, CHAT}
    for recorded in asked:
        tag = json.loads(recorded.headers["cf-aig-metadata"])
        assert tag == {"purpose": "ask", "trace_id": done.trace_id}
    assert fake.violations() == []


def test_gateway_settings_are_checked_and_its_token_is_masked() -> None:
    env = {"RAG_CLOUDFLARE__GATEWAY_ID": "my-gateway", "CLOUDFLARE_AIG_TOKEN": AIG_TOKEN}
    settings = load_settings(environ=env)
    assert settings.cloudflare.gateway_id == "my-gateway"
    shown = effective(settings, env)
    assert shown["secrets"]["CLOUDFLARE_AIG_TOKEN"] == "***"
    assert AIG_TOKEN not in json.dumps(shown)
    for bad in ("a/b", "x?y=1", "g" * 65):
        with pytest.raises(ConfigError, match="gateway_id"):
            load_settings(environ={"RAG_CLOUDFLARE__GATEWAY_ID": bad})
    with pytest.raises(ConfigError, match="gateway_base_url"):
        load_settings(environ={"RAG_CLOUDFLARE__GATEWAY_BASE_URL": "gateway.example"})


async def test_the_client_names_where_it_calls_never_the_tokens() -> None:
    fake = FakeCloudflare()
    async with fake.client(aig_token=AIG_TOKEN, gateway_id="g1") as client:
        shown = repr(client)
    assert f"{GATEWAY_BASE}/{fake.account_id}/g1" in shown
    assert fake.token not in shown and AIG_TOKEN not in shown
