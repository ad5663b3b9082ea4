"""The chat fallback chain: move on only before the first token reaches the client."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import pytest
from fakes import ScriptedChat

from rag.answer.chain import ChainStream, FallbackChain, NoProviderAnswered
from rag.answer.flow import answer_events
from rag.domain import DeltaEvent, DoneEvent, ErrorEvent, Hit, SourcesEvent
from rag.errors import CapacityError, DailyLimitExceeded, StreamTruncated
from rag.ports import ChatModel
from rag.retrieval.retriever import Retrieval

HITS = [
    Hit(
        chunk_id="c1",
        document_id="d1",
        source="a.md",
        title="A",
        text="Alpha is the first letter.",
        score=1.0,
        relevance=0.9,
    )
]


async def drain(stream: ChainStream) -> list[str]:
    return [piece async for piece in stream]


async def test_an_error_before_the_first_token_moves_to_the_next_provider() -> None:
    first = ScriptedChat(CapacityError("busy"), name="workers-ai:m")
    second = ScriptedChat("Alpha is the first letter. [1]", name="extractive")
    stream = FallbackChain([first, second]).stream("What is alpha?", HITS)
    assert await drain(stream) == ["Alpha is the first letter. [1]"]
    assert stream.answered_by == "extractive"
    assert stream.passed_over == ["workers-ai:m: failed: busy"]
    assert first.closed and second.closed


@pytest.mark.parametrize("silence", [(), ("",), (" ", "\n")])
async def test_empty_output_moves_on(silence: tuple[str, ...]) -> None:
    first = ScriptedChat(*silence, name="openai:m")
    second = ScriptedChat("Alpha. [1]", name="extractive")
    stream = FallbackChain([first, second]).stream("q", HITS)
    assert await drain(stream) == ["Alpha. [1]"]
    assert stream.answered_by == "extractive"
    assert stream.passed_over == ["openai:m: returned no text"]


async def test_leading_whitespace_is_kept_once_a_real_token_follows() -> None:
    stream = FallbackChain([ScriptedChat("\n", "Alpha", " [1]", name="a")]).stream("q", HITS)
    assert await drain(stream) == ["\nAlpha", " [1]"]
    assert stream.answered_by == "a"


async def test_a_refused_provider_is_never_called_and_the_reason_is_kept() -> None:
    first = ScriptedChat("expensive words", name="workers-ai:m")
    second = ScriptedChat("Alpha. [1]", name="extractive")

    def gate(provider: ChatModel, question: str, sources: Sequence[Hit]) -> str | None:
        return "daily neuron budget spent" if provider.name.startswith("workers-ai") else None

    stream = FallbackChain([first, second], gate).stream("q", HITS)
    assert await drain(stream) == ["Alpha. [1]"]
    assert first.calls == []
    assert stream.passed_over == ["workers-ai:m: daily neuron budget spent"]


async def test_a_failure_after_the_first_token_is_raised_not_fallen_back() -> None:
    first = ScriptedChat("Alpha is", StreamTruncated("cut"), name="workers-ai:m")
    second = ScriptedChat("never", name="extractive")
    stream = FallbackChain([first, second]).stream("q", HITS)
    got: list[str] = []
    with pytest.raises(StreamTruncated):
        async for piece in stream:
            got.append(piece)
    assert got == ["Alpha is"]
    assert second.calls == []
    assert stream.answered_by == "workers-ai:m"


async def test_when_every_provider_fails_the_error_names_them_all() -> None:
    chain = FallbackChain(
        [
            ScriptedChat(DailyLimitExceeded("3036"), name="a"),
            ScriptedChat(CapacityError("busy"), name="b"),
        ]
    )
    with pytest.raises(NoProviderAnswered) as caught:
        await drain(chain.stream("q", HITS))
    assert caught.value.message == "no chat provider could answer: a: failed: 3036; b: failed: busy"
    assert caught.value.retryable  # capacity may come back


async def test_when_every_provider_is_refused_retrying_does_not_help() -> None:
    chain = FallbackChain([ScriptedChat("x", name="a")], lambda p, q, s: "budget spent")
    with pytest.raises(NoProviderAnswered, match="a: budget spent") as caught:
        await drain(chain.stream("q", HITS))
    assert not caught.value.retryable


async def test_when_nobody_has_anything_to_say_the_last_that_ran_is_credited() -> None:
    stream = FallbackChain(
        [ScriptedChat(CapacityError("busy"), name="a"), ScriptedChat(name="b")]
    ).stream("q", HITS)
    assert await drain(stream) == []
    assert stream.answered_by == "b"


async def test_closing_the_chain_stream_closes_the_provider_stream() -> None:
    provider = ScriptedChat("one", "two", "three", name="a")
    stream = FallbackChain([provider]).stream("q", HITS)
    assert await stream.__anext__() == "one"
    await stream.aclose()
    assert provider.closed


def retrieval() -> Retrieval:
    return Retrieval(list(HITS), True, 0.9, 1.0, 0.01)


async def test_the_done_event_names_the_provider_that_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = FallbackChain(
        [
            ScriptedChat(CapacityError("busy"), name="workers-ai:m"),
            ScriptedChat("Alpha. [1]", name="extractive"),
        ]
    )
    assert chain.name == "workers-ai:m > extractive"
    with caplog.at_level(logging.WARNING):
        events = [
            e
            async for e in answer_events(
                "q", retrieval(), chain, time.perf_counter(), trace_id="t-9"
            )
        ]
    assert [type(e) for e in events] == [SourcesEvent, DeltaEvent, DoneEvent]
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.provider == "extractive" and done.grounded
    assert "trace t-9: passed over workers-ai:m: failed: busy; answered by extractive" in (
        caplog.text
    )


async def test_a_provider_failing_after_its_first_token_is_an_error_event() -> None:
    second = ScriptedChat("never", name="extractive")
    chain = FallbackChain(
        [ScriptedChat("Alpha", StreamTruncated("cut"), name="workers-ai:m"), second]
    )
    stream = answer_events("q", retrieval(), chain, time.perf_counter(), trace_id="t")
    events = [e async for e in stream]
    assert [type(e) for e in events] == [SourcesEvent, DeltaEvent, ErrorEvent]
    assert events[-1] == ErrorEvent(code="stream_truncated", message="cut", retryable=True)
    assert second.calls == []
