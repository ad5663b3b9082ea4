"""Before the first token: the deadline, rejectIfBusy, and no blind re-send after a read timeout.

Clients come from ``FakeCloudflare.client()``: their sleeps only move the fake's clock,
so "seconds" here are the seconds a user would have waited, measured without waiting.
"""

from __future__ import annotations

from typing import Any

import pytest
from cf_fake import CHAT, EMBED, RERANK, FakeCloudflare, shared_tokenizer
from fakes import ScriptedChat, hit

from rag.answer.chain import FallbackChain
from rag.backends.cloudflare.neurons import CallCost, PriceTable
from rag.backends.cloudflare.workers_ai import (
    WorkersAIChat,
    WorkersAIEmbedder,
    WorkersAIReranker,
)
from rag.errors import CapacityError, CloudflareError

HITS = [hit(1, "Alpha is the first letter of the Greek alphabet.")]
FALLBACK_ANSWER = "Alpha is the first letter. [1]"


def chat(fake: FakeCloudflare, **cf: Any) -> WorkersAIChat:
    settings = fake.settings(**cf)
    return WorkersAIChat(fake.client(**cf), settings.cloudflare, PriceTable(settings.prices))


async def answer(model: WorkersAIChat) -> str:
    return "".join([piece async for piece in model.stream("What is alpha?", HITS)])


async def seconds_to_fallback_token(fake: FakeCloudflare, first: WorkersAIChat) -> float:
    """When, on the fake's clock, the fallback's first piece reached the caller."""
    fallback = ScriptedChat(FALLBACK_ANSWER, name="extractive")
    stream = FallbackChain([first, fallback]).stream("What is alpha?", HITS)
    start = fake.now
    async for piece in stream:
        assert piece == FALLBACK_ANSWER
        assert stream.answered_by == "extractive"
        return fake.now - start
    raise AssertionError("the fallback did not answer")


async def test_a_long_retry_after_is_not_waited_for_the_fallback_answers_at_once() -> None:
    fake = FakeCloudflare()
    fake.busy(CHAT, retry_after=30)
    # Before: without a deadline worth the name, four retries wait 30 s each.
    before = await seconds_to_fallback_token(fake, chat(fake, first_token_deadline_s=1000.0))
    assert 120.0 <= before <= 122.0
    assert len(fake.calls(CHAT)) == 5
    fake.requests.clear()
    fake.sleeps.clear()
    # After: 30 s is more than the 10 s deadline, so it is not waited for at all.
    after = await seconds_to_fallback_token(fake, chat(fake))
    assert after == 0.0
    assert fake.sleeps == []
    assert len(fake.calls(CHAT)) == 1
    assert fake.violations() == []


async def test_the_deadline_bounds_the_sum_of_short_waits() -> None:
    fake = FakeCloudflare()
    fake.busy(CHAT, retry_after=4)
    with pytest.raises(CapacityError) as raised:
        await answer(chat(fake, first_token_deadline_s=10.0))
    assert raised.value.retryable
    # 4 s + jitter twice; a third wait would end past 10 s, so it is not started.
    assert len(fake.sleeps) == 2
    assert fake.now <= 10.0
    assert len(fake.calls(CHAT)) == 3


async def test_chat_calls_ask_to_be_rejected_when_busy() -> None:
    fake = FakeCloudflare()
    model = chat(fake)
    assert await answer(model)
    await model.condense("And beta?", [])
    bodies = [call.json() for call in fake.calls(CHAT)]
    assert [body["options"] for body in bodies] == [{"rejectIfBusy": True}] * 2
    assert fake.violations() == []


async def test_the_fake_refuses_a_chat_body_without_reject_if_busy() -> None:
    fake = FakeCloudflare()
    body = {"messages": [{"role": "user", "content": "hi"}], "options": {"reject_if_busy": True}}
    with pytest.raises(CloudflareError, match="Invalid data"):
        await fake.client().call("POST", CHAT, json=body, retry=False)
    assert any("rejectIfBusy" in problem for problem in fake.schema_errors)


async def test_a_chat_stream_is_not_sent_again_after_a_read_timeout() -> None:
    fake = FakeCloudflare()
    fake.stall_next(CHAT, seconds=5.0)
    model = chat(fake, timeout_s=0.05)
    fallback = ScriptedChat(FALLBACK_ANSWER, name="extractive")
    stream = FallbackChain([model, fallback]).stream("What is alpha?", HITS)
    assert [piece async for piece in stream] == [FALLBACK_ANSWER]
    assert stream.answered_by == "extractive"
    assert "timed out" in stream.passed_over[0]
    assert len(fake.calls(CHAT)) == 1
    assert fake.sleeps == []


async def billed_once_after_a_read_timeout(path: str) -> tuple[FakeCloudflare, list[str]]:
    """Embed or rerank with the first request to ``path`` stalled past a 50 ms read
    timeout; the fake and the kinds of the costs reported."""
    fake = FakeCloudflare()
    fake.stall_next(path, seconds=5.0)
    settings = fake.settings(timeout_s=0.05)
    client, prices = fake.client(timeout_s=0.05), PriceTable(settings.prices)
    costs: list[CallCost] = []
    if path == EMBED:
        embedder = WorkersAIEmbedder(
            client, settings.cloudflare, shared_tokenizer(), prices, costs.append
        )
        assert (await embedder.embed(["alpha", "beta"], "passage")).shape == (2, 768)
    else:
        reranker = WorkersAIReranker(
            client, settings.cloudflare, prices, shared_tokenizer(), costs.append
        )
        assert [h.chunk_id for h in await reranker.rerank("alpha letter", HITS, 1)] == ["c1"]
    # The timed-out attempt may have been billed: it costs what the re-sent one does.
    assert costs[0].neurons == costs[1].neurons > 0
    assert costs[0].estimated
    return fake, [cost.kind for cost in costs]


async def test_embeddings_are_sent_again_and_the_possible_charge_is_recorded() -> None:
    fake, kinds = await billed_once_after_a_read_timeout(EMBED)
    assert kinds == ["embed-timedout", "embed"]
    assert len(fake.calls(EMBED)) == 2


async def test_rerank_is_sent_again_and_the_possible_charge_is_recorded() -> None:
    fake, kinds = await billed_once_after_a_read_timeout(RERANK)
    assert kinds == ["rerank-timedout", "rerank"]
    assert len(fake.calls(RERANK)) == 2
