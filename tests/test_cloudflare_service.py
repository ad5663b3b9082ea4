"""The whole service on ``backend = "cloudflare"``, through the in-process fake Cloudflare.

The real ``CloudflareClient``, Workers AI classes and Vectorize index run unchanged on
``FakeCloudflare.transport``; every request they send is checked against Cloudflare's
schemas (``fake.violations()`` stays empty).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from cf_fake import FakeCloudflare
from cf_service import cloudflare_service, write_server_docs
from conftest import LOCAL_URL
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from rag.db.tables import UsageCall
from rag.domain import AnswerEvent, DeltaEvent, DoneEvent, ErrorEvent, SourcesEvent
from rag.errors import ConfigError
from rag.registry import Overrides
from rag.service import RagService, open_service
from rag.usage import BudgetExhausted
from rag.web import create_app

LLAMA = "workers-ai:@cf/meta/llama-3.1-8b-instruct-fast"
QUESTION = "Which port does the server listen on?"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_server_docs(tmp_path / "docs")


async def ask(service: RagService, question: str = QUESTION) -> list[AnswerEvent]:
    return [event async for event in service.ask(question)]


def done_of(events: list[AnswerEvent]) -> DoneEvent:
    done = events[-1]
    assert isinstance(done, DoneEvent), events
    return done


async def ingested(service: RagService, fake: FakeCloudflare, docs: Path) -> None:
    report = await service.ingest([docs])
    assert report.new == 2 and report.neurons > 0 and report.usd > 0
    assert "neurons" in report.summary()
    fake.vectorize.process()  # Vectorize applies writes asynchronously


async def test_ingest_ask_and_pay_in_neurons(
    fake_tmp: tuple[FakeCloudflare, Path], docs: Path
) -> None:
    fake, tmp_path = fake_tmp
    async with cloudflare_service(fake, tmp_path) as service:
        await ingested(service, fake, docs)
        health = await service.health()
        assert health["answerer"] == f"{LLAMA} > extractive"
        assert health["embedder"] == "@cf/baai/bge-base-en-v1.5" and health["chunks"] == 2
        events = await ask(service)
        assert isinstance(events[0], SourcesEvent) and events[0].sources
        assert events[0].sources[0].document == "server.md"
        assert all(isinstance(e, DeltaEvent) for e in events[1:-1]) and len(events) > 3
        done = done_of(events)
        assert done.provider == LLAMA and done.grounded and not done.cached
        assert done.usage.neurons > 0 and done.usage.usd > 0
        assert done.usage.input_tokens > 0 and done.usage.output_tokens > 0
        async with service.sessions() as session:
            rows = (
                await session.scalars(select(UsageCall).where(UsageCall.trace_id == done.trace_id))
            ).all()
        assert sorted(r.kind for r in rows) == ["chat", "embed", "rerank"]
        assert sum(r.neurons for r in rows) == pytest.approx(done.usage.neurons)
        assert {r.purpose for r in rows} == {"ask"}

        chats = len(fake.calls("llama"))
        again = done_of(await ask(service, "which port does the server listen on"))
        assert again.cached and again.usage.neurons == 0 and again.answer == done.answer
        assert len(fake.calls("llama")) == chats

        async with AsyncTestClient(
            app=create_app(service.settings, service), base_url=LOCAL_URL
        ) as client:
            response = await client.get("/v1/usage", params={"days": "2"})
        assert response.status_code == 200
        report = response.json()
        assert len(report["days"]) == 2
        assert report["days"][0]["neurons"] == pytest.approx(
            await service.ledger.spent_today(), abs=1e-3
        )
        assert {m["kind"] for m in report["days"][0]["models"]} == {"embed", "rerank", "chat"}
    assert fake.violations() == []


async def test_a_spent_budget_moves_generation_to_the_extractive_answerer(
    fake_tmp: tuple[FakeCloudflare, Path], docs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake, tmp_path = fake_tmp
    async with cloudflare_service(fake, tmp_path) as service:
        await ingested(service, fake, docs)
        assert done_of(await ask(service)).provider == LLAMA
    chats = len(fake.calls("llama"))
    # Ingesting and one answer spent more than one neuron: the cap is reached.
    async with cloudflare_service(fake, tmp_path, budget={"daily_neurons": 1}) as service:
        done = done_of(await ask(service, "What files does ingestion read?"))
        assert done.provider == "extractive" and done.grounded
        assert len(fake.calls("llama")) == chats  # nothing billed past the cap
        # Retrieval still ran on Workers AI (a few neurons, reported, never hidden).
        assert 0 < done.usage.neurons < 1
        assert "daily neuron budget spent" in caplog.text and done.trace_id in caplog.text
        # The answer cached before the cap still serves, and costs nothing.
        assert done_of(await ask(service)).cached
        with pytest.raises(BudgetExhausted, match="ingestion not started"):
            await service.ingest([docs])
    assert fake.violations() == []


async def test_workers_ai_refusing_before_the_first_token_falls_back(
    fake_tmp: tuple[FakeCloudflare, Path], docs: Path
) -> None:
    fake, tmp_path = fake_tmp
    async with cloudflare_service(fake, tmp_path, cache={"enabled": False}) as service:
        await ingested(service, fake, docs)
        fake.fail_next("llama", 429, 3036, message="daily free allocation used up")
        assert done_of(await ask(service)).provider == "extractive"
        fake.script_chat(cut_after=2)
        events = await ask(service)
        assert isinstance(events[-1], ErrorEvent) and events[-1].code == "stream_truncated"
        assert sum(isinstance(e, DeltaEvent) for e in events) == 2  # no extractive splice


async def test_no_token_fails_before_touching_the_database(tmp_path: Path) -> None:
    fake = FakeCloudflare()
    settings = msgspec.structs.replace(fake.settings(), data_dir=str(tmp_path / "data"))
    with pytest.raises(ConfigError, match="CLOUDFLARE_API_TOKEN"):
        async with open_service(settings, Overrides(environ={})):
            pass
    assert not (tmp_path / "data").exists()


@pytest.fixture
def fake_tmp(tmp_path: Path) -> tuple[FakeCloudflare, Path]:
    return FakeCloudflare(), tmp_path
