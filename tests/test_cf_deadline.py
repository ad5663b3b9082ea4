"""Before the first token: the deadline, rejectIfBusy, and no blind re-send after a read timeout.

Clients come from ``FakeCloudflare.client()``: their sleeps only move the fake's clock,
so "seconds" here are the seconds a user would have waited, measured without waiting.
"""

from __future__ import annotations

from typing import Any

import pytest
from cf_fake import FakeCloudflare, shared_tokenizer
from fakes import ScriptedChat, hit

from rag.answer.chain import FallbackChain
from rag.backends.cloudflare.neurons import CallCost, PriceTable
from rag.backends.cloudflare.workers_ai import (
    WorkersAIChat,
    WorkersAIEmbedder,
    WorkersAIReranker,
)
from rag.errors import CapacityError, CloudflareError, UpstreamTimeout

CHAT = "/ai/run/@cf/meta/llama-3.1-8b-instruct-fast"
EMBED = "/ai/run/@cf/baai/bge-base-en-v1.5"
RERANK = "/ai/run/@cf/baai/bge-reranker-base"
HITS = [hit(1, "Alpha is the first letter of the Greek alphabet.")]
FALLBACK_ANSWER = "Alpha is the first letter. [1]"


def chat(fake: FakeCloudflare, costs: list[CallCost], **cf: Any) -> WorkersAIChat:
    settings = fake.settings(**cf)
    client = fake.client(**cf)
    return WorkersAIChat(client, settings.cloudflare, PriceTable(settings.prices), costs.append)


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
    before = await seconds_to_fallback_token(fake, chat(fake, [], first_token_deadline_s=1000.0))
    assert 120.0 <= before <= 122.0
    assert len(fake.calls(CHAT)) == 5
    fake.requests.clear()
    fake.sleeps.clear()
    # After: 30 s is more than the 10 s deadline, so it is not waited for at all.
    after = await seconds_to_fallback_token(fake, chat(fake, []))
    assert after == 0.0
    assert fake.sleeps == []
    assert len(fake.calls(CHAT)) == 1
    assert fake.violations() == []


async def test_the_deadline_bounds_the_sum_of_short_waits() -> None:
    fake = FakeCloudflare()
    fake.busy(CHAT, retry_after=4)
    model = chat(fake, [], first_token_deadline_s=10.0)
    with pytest.raises(CapacityError) as raised:
        async for _ in model.stream("What is alpha?", HITS):
            pass
    assert raised.value.retryable
    # 4 s + jitter twice; a third wait would end past 10 s, so it is not started.
    assert len(fake.sleeps) == 2
    assert fake.now <= 10.0
    assert len(fake.calls(CHAT)) == 3


async def test_chat_calls_ask_to_be_rejected_when_busy() -> None:
    fake = FakeCloudflare()
    costs: list[CallCost] = []
    model = chat(fake, costs)
    assert "".join([piece async for piece in model.stream("What is alpha?", HITS)])
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
    costs: list[CallCost] = []
    model = chat(fake, costs, timeout_s=0.05)
    fallback = ScriptedChat(FALLBACK_ANSWER, name="extractive")
    stream = FallbackChain([model, fallback]).stream("What is alpha?", HITS)
    assert [piece async for piece in stream] == [FALLBACK_ANSWER]
    assert stream.answered_by == "extractive"
    assert "timed out" in stream.passed_over[0]
    assert len(fake.calls(CHAT)) == 1
    assert fake.sleeps == []


async def test_a_chat_read_timeout_is_a_retryable_error() -> None:
    fake = FakeCloudflare()
    fake.stall_next(CHAT, seconds=5.0)
    model = chat(fake, [], timeout_s=0.05)
    with pytest.raises(UpstreamTimeout) as raised:
        async for _ in model.stream("What is alpha?", HITS):
            pass
    assert raised.value.retryable
    assert len(fake.calls(CHAT)) == 1


async def test_embeddings_are_sent_again_and_the_possible_charge_is_recorded() -> None:
    fake = FakeCloudflare()
    fake.stall_next(EMBED, seconds=5.0)
    settings = fake.settings(timeout_s=0.05)
    costs: list[CallCost] = []
    embedder = WorkersAIEmbedder(
        fake.client(timeout_s=0.05),
        settings.cloudflare,
        shared_tokenizer(),
        PriceTable(settings.prices),
        costs.append,
    )
    vectors = await embedder.embed(["alpha", "beta"], "passage")
    assert vectors.shape == (2, 768)
    assert len(fake.calls(EMBED)) == 2
    assert [cost.kind for cost in costs] == ["embed-timedout", "embed"]
    assert costs[0].neurons == costs[1].neurons > 0
    assert costs[0].estimated


async def test_rerank_is_sent_again_and_the_possible_charge_is_recorded() -> None:
    fake = FakeCloudflare()
    fake.stall_next(RERANK, seconds=5.0)
    settings = fake.settings(timeout_s=0.05)
    costs: list[CallCost] = []
    reranker = WorkersAIReranker(
        fake.client(timeout_s=0.05),
        settings.cloudflare,
        PriceTable(settings.prices),
        shared_tokenizer(),
        costs.append,
    )
    ranked = await reranker.rerank("alpha letter", HITS, 1)
    assert [h.chunk_id for h in ranked] == [HITS[0].chunk_id]
    assert len(fake.calls(RERANK)) == 2
    assert [cost.kind for cost in costs] == ["rerank-timedout", "rerank"]
    assert costs[0].neurons == costs[1].neurons
