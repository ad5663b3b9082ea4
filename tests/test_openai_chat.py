"""The OpenAI-compatible chat provider against an in-process fake endpoint."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from openai_fake import Fail, FakeOpenAI, Status, Stream, Whole

from rag.backends.cloudflare.neurons import CallCost
from rag.backends.openai import OpenAIChat
from rag.config import OpenAISettings
from rag.domain import Hit
from rag.errors import (
    AuthError,
    CapacityError,
    ConfigError,
    ModelError,
    ModelNotFound,
    StreamTruncated,
    UpstreamTimeout,
    UpstreamUnavailable,
)

SETTINGS = OpenAISettings(base_url="http://llm.test/v1", model="tiny-llm", max_tokens=64)
SOURCES = [
    Hit(
        chunk_id="c1",
        document_id="d1",
        source="a.md",
        title="A",
        text="The port is 8000.",
        score=1.0,
        relevance=0.9,
    )
]


def messages(question: str, sources: object) -> list[dict[str, str]]:
    return [{"role": "system", "content": "cite"}, {"role": "user", "content": question}]


@asynccontextmanager
async def chat_on(
    fake: FakeOpenAI, settings: OpenAISettings = SETTINGS, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[OpenAIChat, list[CallCost]]]:
    costs: list[CallCost] = []
    chat = OpenAIChat(
        settings,
        prompt=messages,
        environ={"OPENAI_API_KEY": "sk-test"} if env is None else env,
        transport=fake.transport,
        on_cost=costs.append,
    )
    try:
        yield chat, costs
    finally:
        await chat.aclose()


async def collect(chat: OpenAIChat, into: list[str] | None = None) -> list[str]:
    pieces = [] if into is None else into
    async for piece in chat.stream("Which port?", SOURCES):
        pieces.append(piece)
    return pieces


async def test_streams_delta_content_and_reports_usage() -> None:
    usage = {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25}
    fake = FakeOpenAI(
        Stream(
            ["The port", " is 8000 [1]."],
            usage=usage,
            extra_lines=[": OPENROUTER PROCESSING", "event: message"],
        )
    )
    async with chat_on(fake) as (chat, costs):
        assert chat.name == "openai:tiny-llm"
        assert await collect(chat) == ["The port", " is 8000 [1]."]
    request = fake.requests[0]
    assert str(request.url) == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = json.loads(request.content)
    assert body["model"] == "tiny-llm" and body["stream"] is True and body["max_tokens"] == 64
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][1] == {"role": "user", "content": "Which port?"}
    assert costs == [CallCost("openai", "tiny-llm", "chat", 21, 4, 0.0, 0.0, False)]


async def test_no_key_sends_no_authorization_and_usage_is_estimated() -> None:
    fake = FakeOpenAI(Stream(["Eight thousand."]))
    settings = OpenAISettings(base_url="http://llm.test/v1", model="m", include_usage=False)
    async with chat_on(fake, settings, env={}) as (chat, costs):
        assert await collect(chat) == ["Eight thousand."]
    assert "authorization" not in fake.requests[0].headers
    assert "stream_options" not in fake.bodies()[0]
    assert len(costs) == 1 and costs[0].estimated and costs[0].output_tokens == 3


async def test_a_server_that_ignores_stream_answers_in_one_piece() -> None:
    fake = FakeOpenAI(Whole("All at once [1].", usage={"prompt_tokens": 9, "completion_tokens": 5}))
    async with chat_on(fake) as (chat, costs):
        assert await collect(chat) == ["All at once [1]."]
    assert (costs[0].input_tokens, costs[0].output_tokens) == (9, 5)


async def test_a_stream_without_done_is_truncated_after_what_arrived() -> None:
    fake = FakeOpenAI(Stream(["Half an", " answer"], done=False))
    async with chat_on(fake) as (chat, costs):
        got: list[str] = []
        with pytest.raises(StreamTruncated, match="without \\[DONE\\]"):
            await collect(chat, got)
    assert got == ["Half an", " answer"]
    assert costs and costs[0].estimated  # what was produced is still recorded


async def test_a_connection_cut_mid_answer_is_truncated_before_it_is_unavailable() -> None:
    fake = FakeOpenAI(Stream(["one", "two"], break_after=1), Stream(["x"], break_after=0))
    async with chat_on(fake) as (chat, _):
        with pytest.raises(StreamTruncated, match="broke mid-answer"):
            await collect(chat)
        with pytest.raises(UpstreamUnavailable, match="cannot reach"):
            await collect(chat)


async def test_an_error_chunk_in_the_stream_is_a_model_error() -> None:
    error = 'data: {"error": {"message": "provider overloaded", "code": 502}}'
    fake = FakeOpenAI(Stream([], done=False, extra_lines=[error]))
    async with chat_on(fake) as (chat, _):
        with pytest.raises(ModelError, match="provider overloaded"):
            await collect(chat)


@pytest.mark.parametrize(
    ("reply", "error", "text", "retryable"),
    [
        (Status(401, {"error": {"message": "bad key"}}), AuthError, "OPENAI_API_KEY", False),
        (Status(404, {"error": "model not found"}), ModelNotFound, "'tiny-llm'", False),
        (Status(429, {}, {"retry-after": "3"}), CapacityError, "429", True),
        (Status(503, None), UpstreamUnavailable, "503", True),
        (Status(400, {"error": {"message": "max_tokens too big"}}), ModelError, "too big", False),
        (Fail(httpx.ReadTimeout("slow")), UpstreamTimeout, "no answer within 60 s", True),
        (Fail(httpx.ConnectError("refused")), UpstreamUnavailable, "refused", True),
    ],
)
async def test_failures_map_to_typed_errors(
    reply: Status | Fail, error: type[ModelError], text: str, retryable: bool
) -> None:
    async with chat_on(FakeOpenAI(reply)) as (chat, costs):
        with pytest.raises(error, match=text) as caught:
            await collect(chat)
    assert caught.value.retryable is retryable
    assert costs == []  # nothing was generated, nothing is recorded
    if isinstance(caught.value, CapacityError):
        assert caught.value.retry_after == 3.0


def test_missing_base_url_or_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="base_url and model"):
        OpenAIChat(OpenAISettings(model="m"), prompt=messages)
