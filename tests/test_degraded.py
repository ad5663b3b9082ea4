"""Degraded mode: Workers AI refuses every call, and ``ask`` and ``search`` still answer.

Through the in-process fake Cloudflare: a Free plan out of neurons (3036 on every model),
an outage (503 after the client's retries, here none) and a revoked token (401, 10000).
The remembered refusal expires on an injected clock, never by sleeping.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cf_fake import FakeCloudflare
from cf_service import cloudflare_service, write_server_docs
from conftest import LOCAL_URL
from fakes import done_event, parse_sse
from litestar.testing import AsyncTestClient

from rag.answer.cache import cacheable
from rag.config import Settings
from rag.domain import AnswerEvent, DoneEvent, SourcesEvent
from rag.errors import (
    AuthError,
    CapacityError,
    CloudflareError,
    DailyLimitExceeded,
    UpstreamUnavailable,
)
from rag.retrieval.refusals import Refusals, next_utc_midnight
from rag.service import RagService
from rag.web import create_app

LLAMA = "workers-ai:@cf/meta/llama-3.1-8b-instruct-fast"
QUESTION = "Which port does the server listen on?"
START = datetime(2026, 3, 4, 22, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def refuse_neurons(fake: FakeCloudflare) -> None:
    fake.refuse_workers_ai(429, 3036, "you have used up your daily free allocation")


def refuse_outage(fake: FakeCloudflare) -> None:
    fake.refuse_workers_ai(503, None, "Service Unavailable")


def refuse_token(fake: FakeCloudflare) -> None:
    fake.token = "revoked"  # the client still sends the old one: 401, 10000


REFUSALS = {
    "3036": (refuse_neurons, "(3036)", DailyLimitExceeded, "00:00 UTC"),
    "outage": (refuse_outage, "unavailable (503)", UpstreamUnavailable, "Try again"),
    "token": (refuse_token, "(10000)", AuthError, "CLOUDFLARE_API_TOKEN"),
}


async def answer(service: RagService, question: str = QUESTION) -> list[AnswerEvent]:
    return [event async for event in service.ask(question)]


def done_of(events: list[AnswerEvent]) -> DoneEvent:
    assert isinstance(events[-1], DoneEvent), events
    return events[-1]


@pytest.mark.parametrize("kind", list(REFUSALS))
async def test_degraded_answers_refused_ingest_and_recovery(tmp_path: Path, kind: str) -> None:
    refuse, named, error_type, hint = REFUSALS[kind]
    fake, clock = FakeCloudflare(), Clock()
    cloudflare = {**msgspec.to_builtins(fake.settings().cloudflare), "max_retries": 0}
    docs = write_server_docs(tmp_path / "docs")
    async with cloudflare_service(fake, tmp_path, clock=clock, cloudflare=cloudflare) as service:
        assert (await service.ingest([docs])).new == 2
        fake.vectorize.process()
        token, embeds = fake.token, len(fake.calls("bge-base"))
        refuse(fake)

        events = await answer(service)
        done = done_of(events)
        assert done.degraded is not None and named in done.degraded, done.degraded
        assert done.provider == "extractive" and done.grounded and done.citations
        sources = events[0]
        assert isinstance(sources, SourcesEvent) and sources.sources[0].document == "server.md"
        # The one refused call was the embedding: no reranker, no chat model after it.
        assert not fake.calls("reranker") and not fake.calls("llama")
        embeds += 1  # the refused query
        assert len(fake.calls("bge-base")) == embeds

        found = await service.search_result("server port")
        assert found.degraded == done.degraded and found.hits
        assert [h.keyword_rank for h in found.hits] == list(range(1, len(found.hits) + 1))
        again = done_of(await answer(service))
        assert again.degraded == done.degraded and not again.cached  # never cached
        assert len(fake.calls("bge-base")) == embeds  # remembered: not asked again

        with pytest.raises(error_type) as refused:
            await service.ingest([docs])
        assert "ingestion not started" in refused.value.message
        assert hint in refused.value.message

        fake.stop_refusing()
        fake.token = token
        assert done_of(await answer(service)).degraded is not None  # still remembered
        # A 3036 lasts until 00:00 UTC, anything else [cloudflare] refusal_memory_s.
        clock.now = next_utc_midnight(START) if kind == "3036" else START + timedelta(minutes=1)
        recovered = done_of(await answer(service))
        assert recovered.degraded is None and recovered.provider == LLAMA
        assert recovered.grounded and fake.calls("reranker")
        assert fake.violations() == []


async def test_degraded_over_http(tmp_path: Path) -> None:
    fake = FakeCloudflare()
    docs = write_server_docs(tmp_path / "docs")
    async with cloudflare_service(fake, tmp_path) as service:
        await service.ingest([docs])
        fake.vectorize.process()
        refuse_neurons(fake)
        app = create_app(Settings(), service)
        async with AsyncTestClient(app=app, base_url=LOCAL_URL) as client:
            response = await client.post("/v1/search", json={"query": "server port"})
            assert response.status_code == 200
            body = response.json()
            assert body["hits"] and "3036" in body["degraded"]
            stream = await client.get("/v1/ask", params={"q": QUESTION})
            name, raw = parse_sse(stream.text)[-1]
            data = json.loads(raw)
            assert name == "done" and "3036" in data["degraded"] and data["citations"]
            fake.stop_refusing()


async def test_the_degraded_gate_asks_more_of_the_words(
    service: RagService, tmp_path: Path
) -> None:
    """Without a query vector only the words are evidence: coverage >= 0.75, not 0.5."""
    await service.ingest([write_server_docs(tmp_path / "docs")])
    await service.refusals.note(DailyLimitExceeded("3036", cf_code=3036, http_status=429))
    covered = await service.retriever.retrieve("Which port does the server listen on?", 3)
    assert covered.degraded and covered.grounded and covered.coverage == 1.0
    # "port" and "server" are in the documents, "webhooks" and "slack" are not: a half
    # that the normal gate (with a cosine behind it) would let through.
    half = await service.retriever.retrieve("Which server port do Slack webhooks use?", 3)
    assert half.degraded and 0.5 <= half.coverage < 0.75 and not half.grounded
    assert service.settings.retrieval.min_term_coverage <= half.coverage


async def test_not_a_refusal_is_not_remembered() -> None:
    """A bad request (or a 429 for capacity) concerns one call: not degraded mode."""
    refusals = Refusals(60.0)
    assert await refusals.note(CloudflareError("bad request", http_status=400)) is None
    assert await refusals.note(CapacityError("busy", cf_code=3040, http_status=429)) is None
    assert refusals.reason() is None


def plain_done(**changes: Any) -> DoneEvent:
    return done_event("Port 8000 [1].", **changes)


def test_degraded_answers_are_not_cached() -> None:
    assert cacheable([plain_done()], "extractive")
    assert not cacheable([plain_done(degraded="Workers AI refuses")], "extractive")


def test_old_cached_events_decode_without_the_field() -> None:
    stored: dict[str, Any] = msgspec.to_builtins(plain_done())
    del stored["degraded"]
    assert msgspec.convert(stored, DoneEvent).degraded is None


def test_the_cli_says_degraded_and_ingest_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contextlib import AbstractAsyncContextManager

    from click.testing import CliRunner
    from fakes import FakeEmbedder

    from rag import service as rag_service
    from rag.cli import main
    from rag.registry import Overrides

    fake, real = FakeCloudflare(), rag_service.open_service
    overrides = Overrides(
        environ={"CLOUDFLARE_API_TOKEN": fake.token},
        cloudflare_transport=fake.transport,
        answer_embedder=FakeEmbedder(),
    )

    def on_fake(settings: Settings, **options: Any) -> AbstractAsyncContextManager[RagService]:
        on_cloudflare = msgspec.structs.replace(
            settings, backend="cloudflare", cloudflare=fake.settings().cloudflare
        )
        return real(on_cloudflare, overrides, **options)

    monkeypatch.setattr(rag_service, "open_service", on_fake)
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    env = {"RAG_CONFIG": str(config), "COLUMNS": "200"}
    docs = str(write_server_docs(tmp_path / "docs"))

    def rag(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    assert rag("ingest", docs).exit_code == 0
    fake.vectorize.process()
    refuse_neurons(fake)
    found = rag("search", "server port", "--json")
    assert found.exit_code == 0 and json.loads(found.stdout)
    assert "degraded: keyword-ranked only" in found.stderr and "(3036)" in found.stderr
    asked = rag("ask", QUESTION)
    assert asked.exit_code == 0 and "degraded: Workers AI daily neuron" in asked.stderr
    refused = rag("ingest", docs)
    assert refused.exit_code == 1 and "ingestion not started" in refused.stderr
    assert "00:00 UTC" in refused.stderr
    assert fake.violations() == []
