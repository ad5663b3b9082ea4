"""Workers AI adapters against the fake: batching, truncation, concurrency, rerank
mapping, chat streaming in both chunk styles, usage, ``[DONE]`` and costs."""

from __future__ import annotations

from typing import Any, Literal

import fakes
import httpx
import msgspec
import numpy as np
import pytest
from cf_fake import FakeCloudflare, shared_tokenizer
from cf_fake.ai import vector_for

from rag.backends.cloudflare.chat import SSEState
from rag.backends.cloudflare.client import CloudflareClient
from rag.backends.cloudflare.neurons import CallCost, PriceTable
from rag.backends.cloudflare.rerank_scale import detect, relevance, sigmoid
from rag.backends.cloudflare.workers_ai import (
    WorkersAIChat,
    WorkersAIEmbedder,
    WorkersAIReranker,
)
from rag.config import Settings
from rag.domain import Hit
from rag.errors import (
    ConfigError,
    DailyLimitExceeded,
    InputError,
    ModelNotFound,
    StreamTruncated,
)
from rag.prompts import PROMPT_VERSION, build_messages

EMBED = "bge-base-en-v1.5"
CHAT = "llama-3.1-8b-instruct-fast"


@pytest.fixture
def costs() -> list[CallCost]:
    return []


def embedder(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost], **cf: Any
) -> WorkersAIEmbedder:
    settings = fake.settings(**cf)
    prices = PriceTable(settings.prices)
    return WorkersAIEmbedder(client, settings.cloudflare, shared_tokenizer(), prices, costs.append)


def hit(n: int, text: str, page: int | None = None) -> Hit:
    return fakes.hit(n, text, source="handbook.md", title="Handbook", page_start=page)


# Embeddings.


async def test_embeddings_in_order_normalised_float32(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    model = embedder(fake, client, costs)
    assert (model.model_id, model.dimension) == ("@cf/baai/bge-base-en-v1.5", 768)
    texts = [f"passage number {i}" for i in range(5)]
    vectors = await model.embed(texts, "passage")
    assert vectors.dtype == np.float32 and vectors.shape == (5, 768)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    for row, text in zip(vectors, texts, strict=True):
        raw = np.asarray(vector_for(text, "mean", 768), dtype=np.float32)
        np.testing.assert_allclose(row, raw / np.linalg.norm(raw), rtol=1e-5)


async def test_at_most_100_texts_per_call(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    texts = [f"text {i}" for i in range(250)]
    vectors = await embedder(fake, client, costs).embed(texts, "passage")
    sent = [call.json()["text"] for call in fake.calls(EMBED)]
    assert sorted(len(batch) for batch in sent) == [50, 100, 100]
    assert sorted(t for batch in sent for t in batch) == sorted(texts)
    first = np.asarray(vector_for("text 0", "mean", 768))
    last = np.asarray(vector_for("text 249", "mean", 768))
    np.testing.assert_allclose(vectors[0], first / np.linalg.norm(first), rtol=1e-5)
    np.testing.assert_allclose(vectors[249], last / np.linalg.norm(last), rtol=1e-5)
    assert [c.kind for c in costs] == ["embed"] * 3 and all(c.estimated for c in costs)


async def test_long_texts_are_cut_to_512_tokens_counted(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    tokenizer = shared_tokenizer()
    long = " ".join(f"word{i} unbelievably" for i in range(600))
    short = "a short passage"
    await embedder(fake, client, costs).embed([long, short], "passage")
    (call,) = fake.calls(EMBED)
    cut, kept = call.json()["text"]
    assert kept == short
    assert long.startswith(cut) and len(cut) < len(long)
    # 510 text tokens + [CLS] + [SEP] = the model's 512, exactly: counted, not guessed.
    assert tokenizer.count(cut) == 510
    assert fake.embedded_tokens == [512, tokenizer.count(short) + 2]
    (cost,) = costs
    assert cost.input_tokens == 512 + tokenizer.count(short) + 2
    assert cost.neurons == pytest.approx(cost.input_tokens * 6058 / 1e6)


async def test_pooling_comes_from_settings(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    vectors = await embedder(fake, client, costs, embed_pooling="cls").embed(["hi"], "query")
    assert fake.calls(EMBED)[0].json()["pooling"] == "cls"
    raw = np.asarray(vector_for("hi", "cls", 768))
    np.testing.assert_allclose(vectors[0], raw / np.linalg.norm(raw), rtol=1e-5)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_batches_in_flight_are_bounded(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost], concurrency: int
) -> None:
    fake.latency_s = 0.01
    model = embedder(fake, client, costs, embed_concurrency=concurrency)
    await model.embed([f"t{i}" for i in range(400)], "passage")
    assert len(fake.calls(EMBED)) == 4
    assert fake.max_in_flight == concurrency


async def test_bound_is_shared_by_concurrent_callers(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    import asyncio

    fake.latency_s = 0.01
    model = embedder(fake, client, costs, embed_concurrency=2)
    texts = [f"t{i}" for i in range(200)]
    await asyncio.gather(model.embed(texts, "passage"), model.embed(texts, "passage"))
    assert fake.max_in_flight == 2


async def test_a_failed_batch_fails_the_call_typed(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.fail_next(EMBED, 429, 3036)
    with pytest.raises(DailyLimitExceeded):
        await embedder(fake, client, costs).embed([f"t{i}" for i in range(300)], "passage")


async def test_retryable_failure_is_retried_transparently(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.fail_next(EMBED, 429, 3040, retry_after=1)
    vectors = await embedder(fake, client, costs).embed(["a", "b"], "passage")
    assert vectors.shape == (2, 768) and len(fake.calls(EMBED)) == 2 and len(costs) == 1


async def test_empty_inputs(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    model = embedder(fake, client, costs)
    assert (await model.embed([], "passage")).shape == (0, 768)
    with pytest.raises(InputError):
        await model.embed(["fine", ""], "passage")
    assert fake.requests == []


def test_a_model_without_a_price_fails_at_start(
    fake: FakeCloudflare, client: CloudflareClient
) -> None:
    settings = fake.settings(embed_model="@cf/baai/bge-m3")
    with pytest.raises(ConfigError, match="bge-m3"):
        WorkersAIEmbedder(
            client, settings.cloudflare, shared_tokenizer(), PriceTable(settings.prices)
        )


# Reranking.


def reranker(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost], **cloudflare: Any
) -> WorkersAIReranker:
    settings = fake.settings(**cloudflare)
    prices = PriceTable(settings.prices)
    return WorkersAIReranker(client, settings.cloudflare, prices, shared_tokenizer(), costs.append)


async def test_rerank_maps_ids_back_with_sigmoid_relevance(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    model = reranker(fake, client, costs)
    assert model.name == "@cf/baai/bge-reranker-base"
    assert model.min_relevance == fake.settings().cloudflare.min_rerank_score
    candidates = [
        hit(1, "dogs bark at night"),
        hit(2, "   "),
        hit(3, "the cat sat on the mat"),
        hit(4, "a cat was seen"),
    ]
    ranked = await model.rerank("where did the cat sit on the mat", candidates, 2)
    (call,) = fake.calls("reranker")
    body = call.json()
    # The blank chunk is not sent (the API refuses empty contexts) and ids still map back.
    assert [c["text"] for c in body["contexts"]] == [
        "dogs bark at night",
        "the cat sat on the mat",
        "a cat was seen",
    ]
    assert body["top_k"] == 2 and body["query"] == "where did the cat sit on the mat"
    assert [h.chunk_id for h in ranked] == ["c3", "c4"]
    for h in ranked:
        assert h.relevance == pytest.approx(1 / (1 + np.exp(-h.score)))
    assert ranked[0].score > ranked[1].score
    assert ranked[0].text == "the cat sat on the mat"
    (cost,) = costs
    tokenizer = shared_tokenizer()
    query = tokenizer.count("where did the cat sit on the mat")
    texts = ["dogs bark at night", "the cat sat on the mat", "a cat was seen"]
    assert cost.input_tokens == sum(query + tokenizer.count(t) + 3 for t in texts)
    assert (cost.kind, cost.estimated) == ("rerank", True)


async def test_rerank_nothing_sends_nothing(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    assert await reranker(fake, client, costs).rerank("q", [], 5) == []
    assert fake.requests == [] and costs == []


RELEVANT = hit(1, "the cat sat on the mat")
IRRELEVANT = hit(2, "dogs bark at night")


@pytest.mark.parametrize("returned", ["logits", "probabilities"])
@pytest.mark.parametrize("setting", ["auto", "pinned"])
async def test_rerank_relevance_follows_the_scale_returned(
    fake: FakeCloudflare,
    client: CloudflareClient,
    costs: list[CallCost],
    returned: Literal["logits", "probabilities"],
    setting: str,
) -> None:
    fake.rerank_scale = returned
    model = reranker(fake, client, costs, rerank_scores=returned if setting == "pinned" else "auto")
    ranked = await model.rerank("the cat sat on the mat", [IRRELEVANT, RELEVANT], 2)
    assert [h.chunk_id for h in ranked] == ["c1", "c2"]
    # Either way the irrelevant pair falls under the 0.1 gate: applying a sigmoid to
    # probabilities would have lifted it to at least 0.5.
    assert ranked[0].relevance == pytest.approx(sigmoid(3.0), abs=1e-5)
    assert ranked[1].relevance == pytest.approx(sigmoid(-3.0), abs=1e-5)
    assert ranked[1].relevance < model.min_relevance
    assert model.scale == returned


async def test_auto_keeps_the_last_scale_for_a_single_candidate(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.rerank_scale = "probabilities"
    model = reranker(fake, client, costs)
    scales = []
    for candidates in ([IRRELEVANT], [IRRELEVANT, RELEVANT], [IRRELEVANT]):
        ranked = await model.rerank("the cat sat on the mat", candidates, len(candidates))
        scales.append(model.scale)
        assert ranked[-1].relevance == pytest.approx(relevance(ranked[-1].score, model.scale))
    # One score in [0, 1] cannot tell: the model page's logits until a response shows.
    assert scales == ["logits", "probabilities", "probabilities"]


def test_detect_reads_each_response() -> None:
    assert detect([2.5, -1.0]) == "logits"
    assert detect([0.2, 1.5]) == "logits"
    assert detect([0.9, 0.01]) == "probabilities"
    assert detect([0.4]) == "logits" and detect([0.4], "probabilities") == "probabilities"
    assert detect([-0.1], "probabilities") == "logits"
    assert detect([]) == "logits"


def test_sigmoid_is_stable() -> None:
    assert sigmoid(0.0) == 0.5
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0
    assert sigmoid(2.0) == pytest.approx(0.8807970779778823)


# Chat.


def chat(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost], **kw: Any
) -> WorkersAIChat:
    settings: Settings = fake.settings(**kw.pop("cf", {}))
    prices = PriceTable(settings.prices)
    return WorkersAIChat(client, settings.cloudflare, prices, costs.append, **kw)


SOURCES = [hit(1, "Refunds are paid within 14 days of a request.", page=3), hit(2, "Other.")]


async def answer(model: WorkersAIChat, pieces: list[str] | None = None) -> str:
    out = pieces if pieces is not None else []
    async for piece in model.stream("How fast are refunds paid?", SOURCES):
        out.append(piece)
    return "".join(out)


def test_build_messages() -> None:
    messages = build_messages("  How fast?  ", SOURCES)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "[1]" in messages[0]["content"] and "only" in messages[0]["content"]
    assert "do not cover" in messages[0]["content"]
    user = messages[1]["content"]
    assert "[1] Handbook, page 3\nRefunds are paid within 14 days of a request." in user
    assert "[2] Handbook\nOther." in user
    assert user.endswith("Question: How fast?")
    assert PROMPT_VERSION == "cf-chat-1"


async def test_native_stream_with_usage(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    model = chat(fake, client, costs)
    assert model.name == "workers-ai:@cf/meta/llama-3.1-8b-instruct-fast"
    pieces: list[str] = []
    text = await answer(model, pieces)
    assert text == "According to the sources, Refunds are paid within 14 days of a request. [1]."
    assert len(pieces) > 3
    body = fake.calls(CHAT)[0].json()
    assert body["stream"] is True and body["max_tokens"] == 512
    assert body["messages"] == build_messages("How fast are refunds paid?", SOURCES)
    (cost,) = costs
    usage_in = sum(len(m["content"].split()) + 5 for m in body["messages"])
    assert (cost.input_tokens, cost.output_tokens, cost.estimated) == (usage_in, 14, False)
    assert cost.neurons == pytest.approx(usage_in * 4119 / 1e6 + 14 * 34868 / 1e6)


async def test_padding_is_never_text(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.script_chat(text="one two three four five six", piece_words=1)
    text = await answer(chat(fake, client, costs))
    assert text == "one two three four five six"


async def test_openai_style_stream(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.script_chat(text="Paid in 14 days [1].", style="openai")
    assert await answer(chat(fake, client, costs)) == "Paid in 14 days [1]."
    assert costs[0].output_tokens == 5 and not costs[0].estimated


async def test_returned_neurons_are_preferred(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.script_chat(text="Paid in 14 days [1].", neurons=12.5)
    await answer(chat(fake, client, costs))
    assert costs[0].neurons == 12.5
    assert costs[0].usd == pytest.approx(12.5 * 0.011 / 1000)


async def test_missing_usage_is_estimated(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.script_chat(text="x" * 40, usage=False)
    await answer(chat(fake, client, costs, tokenizer=shared_tokenizer()))
    (cost,) = costs
    assert cost.estimated and cost.output_tokens == shared_tokenizer().count("x" * 40)
    assert cost.input_tokens > 20


async def test_stream_without_done_is_truncated(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.script_chat(text="Paid in 14 days [1].", done=False)
    pieces: list[str] = []
    with pytest.raises(StreamTruncated, match="without \\[DONE\\]"):
        await answer(chat(fake, client, costs), pieces)
    assert "".join(pieces) == "Paid in 14 days [1]."
    assert len(costs) == 1 and not costs[0].estimated  # usage arrived before the end


async def test_stream_cut_mid_way_is_not_retried(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.script_chat(text="one two three four five six", cut_after=2)
    pieces: list[str] = []
    with pytest.raises(StreamTruncated):
        await answer(chat(fake, client, costs), pieces)
    assert "".join(pieces) == "one two three four "
    assert len(fake.calls(CHAT)) == 1
    (cost,) = costs
    assert cost.estimated and cost.output_tokens == len("one two three four ") // 4 + 1


async def test_429_before_the_stream_is_retried(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.fail_next(CHAT, 429, 3040, retry_after=1)
    fake.script_chat(text="Paid in 14 days [1].")
    assert await answer(chat(fake, client, costs)) == "Paid in 14 days [1]."
    assert len(fake.calls(CHAT)) == 2 and len(costs) == 1


async def test_daily_limit_before_the_stream_costs_nothing(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.fail_next(CHAT, 429, 3036)
    with pytest.raises(DailyLimitExceeded):
        await answer(chat(fake, client, costs))
    assert costs == []


async def test_cancelled_mid_way_reports_an_estimate(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    fake.script_chat(text="one two three four five six seven eight", piece_words=1)
    stream = chat(fake, client, costs).stream("How fast?", SOURCES)
    assert [await anext(stream), await anext(stream)] == ["one ", "two "]
    assert costs == []
    await stream.aclose()
    (cost,) = costs
    assert cost.estimated and cost.output_tokens == len("one two ") // 4


async def test_max_tokens_is_clamped(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    await answer(chat(fake, client, costs, max_tokens=100_000, cf={"max_tokens": 300}))
    await answer(chat(fake, client, costs, max_tokens=64))
    sent = [c.json()["max_tokens"] for c in fake.calls(CHAT)]
    assert sent == [300, 64]


async def test_unknown_chat_model_names_the_model(
    fake: FakeCloudflare, client: CloudflareClient, costs: list[CallCost]
) -> None:
    model_id = "@cf/meta/llama-0-gone"
    settings = msgspec.structs.replace(
        fake.settings(chat_model=model_id),
        prices=msgspec.convert(
            {"models": {model_id: {"input": 1, "output": 1}}}, type(fake.settings().prices)
        ),
    )
    model = WorkersAIChat(client, settings.cloudflare, PriceTable(settings.prices), costs.append)
    with pytest.raises(ModelNotFound, match="llama-0-gone"):
        await answer(model)
    assert costs == []


async def test_json_answer_instead_of_a_stream(fake: FakeCloudflare, costs: list[CallCost]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        result = {
            "response": "Paid in 14 days [1].",
            "usage": {"prompt_tokens": 9, "completion_tokens": 6},
        }
        return httpx.Response(
            200, json={"result": result, "success": True, "errors": [], "messages": []}
        )

    settings = fake.settings()
    environ = {"CLOUDFLARE_API_TOKEN": fake.token}
    transport = httpx.MockTransport(handler)
    async with CloudflareClient.from_settings(settings, environ, transport) as client:
        assert await answer(chat(fake, client, costs)) == "Paid in 14 days [1]."
    assert (costs[0].input_tokens, costs[0].output_tokens) == (9, 6)


def test_native_usage_wins_over_openai_style_usage() -> None:
    state = SSEState()
    lines = [
        'data: {"choices":[{"delta":{"content":"Hi"}}],'
        '"usage":{"prompt_tokens":1,"completion_tokens":1}}',
        "",
        ": keep-alive comment",
        'data: {"response":"","usage":{"prompt_tokens":9,"completion_tokens":4}}',
        'data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":0,"completion_tokens":1}}',
        "data: [DONE]",
    ]
    assert [state.feed(line) for line in lines] == ["Hi", "", "", "", "", ""]
    assert state.usage == {"prompt_tokens": 9, "completion_tokens": 4}
    assert state.done and state.text == "Hi"
