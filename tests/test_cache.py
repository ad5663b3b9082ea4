"""The answer cache: normalised keys, replay with cached=true and zero usage, invalidation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEmbedder, ScriptedChat, done_event

from rag.answer.cache import AnswerCache, cache_key, cacheable, key_parts, normalise
from rag.answer.chain import FallbackChain
from rag.backends.openai import OpenAIChat
from rag.config import CacheSettings, OpenAISettings, Settings
from rag.db.engine import create_engine, session_factory, upgrade
from rag.domain import (
    AnswerEvent,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    Latency,
    SourcesEvent,
    Usage,
)
from rag.prompts import PROMPT_VERSION
from rag.registry import Overrides
from rag.service import RagService, open_service

KEY: dict[str, Any] = {
    "embed_model": "m",
    "chunker": "chunker-1:abc",
    "generation": 3,
    "chat": "workers-ai:x > extractive",
    "prompt_version": "p1",
    "top_k": 5,
}


def done(provider: str = "workers-ai:x", grounded: bool = True) -> DoneEvent:
    return done_event(
        "Alpha [1].",
        grounded=grounded,
        provider=provider,
        usage=Usage(neurons=12.5, input_tokens=900),
        latency_ms=Latency(retrieve=50.0, first_token=300.0, total=900.0),
        trace_id="t-1",
    )


ANSWER: list[AnswerEvent] = [SourcesEvent(()), DeltaEvent("Alpha"), DeltaEvent(" [1]."), done()]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I change the port?", "  how do I   change the PORT "),
        ("What is RAG?!", "what is rag"),
        ("Ports…", "ports"),
    ],
)
def test_questions_that_differ_in_case_space_or_final_punctuation_share_a_key(
    a: str, b: str
) -> None:
    assert normalise(a) == normalise(b)
    assert cache_key(a, **KEY) == cache_key(b, **KEY)


@pytest.mark.parametrize(
    "change",
    [
        {"generation": 4},
        {"embed_model": "other"},
        {"chunker": "chunker-2:abc"},
        {"chat": "extractive"},
        {"prompt_version": "p2"},
        {"top_k": 3},
    ],
)
def test_anything_that_changes_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    assert cache_key("q", **KEY) != cache_key("q", **{**KEY, **change})


def test_only_complete_grounded_answers_of_the_preferred_provider_are_stored() -> None:
    assert cacheable(ANSWER, "workers-ai:x")
    assert not cacheable([*ANSWER[:2], ErrorEvent("stream_truncated", "cut", True)], "x")
    assert not cacheable([SourcesEvent(()), done(grounded=False)], "workers-ai:x")
    assert not cacheable([SourcesEvent(()), done(provider="extractive")], "workers-ai:x")
    assert not cacheable(ANSWER[:3], "workers-ai:x")


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Any]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


async def test_entries_round_trip_and_the_least_recently_used_go_first(sessions: Any) -> None:
    now = [datetime(2026, 3, 1, tzinfo=UTC)]

    def clock() -> datetime:
        now[0] += timedelta(seconds=1)
        return now[0]

    cache = AnswerCache(sessions, CacheSettings(max_entries=2), clock)
    await cache.put("a", "qa", 1, ANSWER)
    await cache.put("b", "qb", 1, ANSWER)
    assert await cache.get("a") == ANSWER
    await cache.count_hit("a")  # a is now more recent than b
    await cache.put("c", "qc", 1, ANSWER)
    assert await cache.get("b") is None
    assert await cache.get("a") == ANSWER and await cache.get("c") == ANSWER
    await cache.put("d", "qd", 2, ANSWER)  # a new index generation: the old ones go
    assert await cache.size() == 1
    disabled = AnswerCache(sessions, CacheSettings(enabled=False))
    await disabled.put("e", "qe", 2, ANSWER)
    assert await disabled.get("d") is None and await cache.size() == 1


async def ask(service: RagService, question: str) -> list[AnswerEvent]:
    return [event async for event in service.ask(question)]


async def test_a_hit_replays_the_answer_cached_and_free_until_an_ingest(
    tmp_path: Path, settings: Settings
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    page = docs / "server.md"
    page.write_text("# Server\n\nThe server listens on port 8000. Change the port with --port.\n")
    embedder = FakeEmbedder()
    async with open_service(settings, Overrides(embedder=embedder)) as service:
        await service.ingest([docs])
        first = await ask(service, "How do I change the port?")
        calls = len(embedder.calls)
        second = await ask(service, "how do I change the port")
        assert len(embedder.calls) == calls  # not even the question was embedded
        one, two = first[-1], second[-1]
        assert isinstance(one, DoneEvent) and isinstance(two, DoneEvent)
        assert one.grounded and not one.cached
        assert two.cached and two.usage == Usage()
        assert two.trace_id != one.trace_id and two.provider == one.provider == "extractive"
        assert (two.answer, two.citations) == (one.answer, one.citations)
        assert second[:-1] == first[:-1]  # the same sources and deltas

        page.write_text("# Server\n\nThe server listens on port 9000. Use --port to move it.\n")
        await service.ingest([docs])
        assert await service.cache.size() == 0  # the ingest purged the old generation
        third = await ask(service, "How do I change the port?")
        last = third[-1]
        assert isinstance(last, DoneEvent) and not last.cached
        assert "9000" in last.answer or "--port" in last.answer


async def test_not_covered_answers_are_not_cached(tmp_path: Path, service: RagService) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nAlpha is the first letter of the Greek alphabet.\n")
    await service.ingest([docs])
    for _ in range(2):
        refused = (await ask(service, "Which football club won in 1998?"))[-1]
        assert isinstance(refused, DoneEvent) and not refused.grounded and not refused.cached
    assert await service.cache.size() == 0


async def server_docs(tmp_path: Path, service: RagService) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "server.md").write_text(
        "# Server\n\nThe server listens on port 8000. Change the port with --port.\n"
    )
    await service.ingest([docs])


async def test_identical_questions_at_once_all_end_with_done(
    tmp_path: Path, service: RagService
) -> None:
    # Twelve answers of one uncached question race to store the same key: every stream
    # still ends with done, one entry is kept, and no write failed (none was counted).
    await server_docs(tmp_path, service)
    failures: list[tuple[str, str]] = []
    service.observe_db_failures(lambda what, op: failures.append((what, op)))
    streams = await asyncio.gather(*(ask(service, "How do I change the port?") for _ in range(12)))
    for events in streams:
        last = events[-1]
        assert isinstance(last, DoneEvent) and last.grounded, last
    assert await service.cache.size() == 1
    assert failures == []
    replayed = (await ask(service, "how do I change the port"))[-1]
    assert isinstance(replayed, DoneEvent) and replayed.cached


async def test_the_entry_is_written_after_done_even_when_the_client_stops_there(
    tmp_path: Path, service: RagService
) -> None:
    await server_docs(tmp_path, service)
    stream = service.ask("How do I change the port?")
    async for event in stream:
        if isinstance(event, DoneEvent):
            # done is out and nothing is stored yet: the write is not on its path.
            assert await service.cache.size() == 0
            break
    await stream.aclose()  # what a client that leaves on done does to the generator
    assert await service.cache.size() == 1


def _prompt_part(*providers: ScriptedChat | OpenAIChat) -> str:
    return key_parts(Settings(), "m", FallbackChain(providers), 0.25)["prompt_version"]


async def test_a_new_prompt_version_of_any_provider_changes_the_key() -> None:
    # Every provider in the chain may answer, so each one's version is in the key.
    old = ScriptedChat(name="a")
    new = ScriptedChat(name="a")
    new.prompt_version = "scripted-2"
    assert _prompt_part(old, ScriptedChat(name="b")) != _prompt_part(new, ScriptedChat(name="b"))
    assert _prompt_part(ScriptedChat(name="b"), old) != _prompt_part(ScriptedChat(name="b"), new)


async def test_openai_answers_carry_the_shared_prompt_version() -> None:
    # It had none, so bumping PROMPT_VERSION never expired cached OpenAI answers.
    chat = OpenAIChat(OpenAISettings(base_url="http://127.0.0.1:9/v1", model="m"), environ={})
    try:
        assert chat.prompt_version == PROMPT_VERSION
        assert PROMPT_VERSION in _prompt_part(chat)
    finally:
        await chat.aclose()
