"""Follow-ups on ``backend = "cloudflare"``: the chat model condenses them, the rule backs it up.

Through the in-process fake Cloudflare, as in ``test_cloudflare_service``: every request
is checked against Cloudflare's schemas, and the condense call is the one chat request
sent with ``stream: false``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cf_fake import FakeCloudflare
from cf_service import cloudflare_service, write_server_docs
from sqlalchemy import select

from rag.answer.condense import accept_rewrite, condense, condense_with
from rag.db.tables import UsageCall
from rag.domain import AnswerEvent, DoneEvent
from rag.errors import UpstreamUnavailable
from rag.prompts import CONDENSE_ANSWER_CHARS, CONDENSE_MAX_TOKENS, build_condense_messages
from rag.service import RagService

LLAMA = "workers-ai:@cf/meta/llama-3.1-8b-instruct-fast"
FOLLOW_UP = "How do I change it?"
REWRITE = "How do I change the port the server listens on?"


class T(NamedTuple):
    question: str
    answer: str = ""


PORT = T("Which port does the server listen on?", "The server listens on port 8000 [1].")
LOCAL = condense(FOLLOW_UP, [PORT])  # "port server listen: How do I change it?"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_server_docs(tmp_path / "docs")


class Spy:
    """What retrieval was asked, on a running service."""

    def __init__(self, service: RagService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.queries: list[str] = []
        retrieve = service.retriever.retrieve

        async def spy(query: str, k: int, **options: bool) -> Any:
            self.queries.append(query)
            return await retrieve(query, k, **options)

        monkeypatch.setattr(service.retriever, "retrieve", spy)


async def ask(service: RagService, question: str, history: list[T] | None) -> DoneEvent:
    events: list[AnswerEvent] = [e async for e in service.ask(question, history=history)]
    done = events[-1]
    assert isinstance(done, DoneEvent), events
    return done


def condense_calls(fake: FakeCloudflare) -> list[dict[str, Any]]:
    bodies = [r.json() for r in fake.calls("/ai/run/@cf/meta/llama")]
    return [b for b in bodies if b.get("stream") is False]


@pytest.fixture
async def ready(
    tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FakeCloudflare, RagService, Spy]]:
    fake = FakeCloudflare()
    async with cloudflare_service(fake, tmp_path, cache={"enabled": False}) as service:
        await service.ingest([docs])
        fake.vectorize.process()
        yield fake, service, Spy(service, monkeypatch)
    assert fake.violations() == []


async def test_the_model_rewrites_a_follow_up_and_retrieval_uses_it(
    ready: tuple[FakeCloudflare, RagService, Spy],
) -> None:
    fake, service, spy = ready
    fake.script_chat(text=f'"{REWRITE}"\n', neurons=7.25)
    done = await ask(service, FOLLOW_UP, [PORT])
    assert spy.queries == [REWRITE]
    assert done.provider == LLAMA
    [body] = condense_calls(fake)
    assert body["max_tokens"] == CONDENSE_MAX_TOKENS and body["temperature"] == 0
    user = body["messages"][-1]["content"]
    assert PORT.question in user and PORT.answer in user and FOLLOW_UP in user
    # Its cost is the answer's: in the done event and in the ledger, as a chat call.
    async with service.sessions() as session:
        rows = (
            await session.scalars(select(UsageCall).where(UsageCall.trace_id == done.trace_id))
        ).all()
    assert sorted(r.kind for r in rows) == ["chat", "chat", "embed", "rerank"]
    assert 7.25 in [r.neurons for r in rows if r.kind == "chat"]
    assert {r.purpose for r in rows} == {"ask"}
    assert done.usage.neurons == pytest.approx(sum(r.neurons for r in rows))
    assert done.usage.neurons > 7.25


async def test_a_standalone_question_makes_no_condense_call(
    ready: tuple[FakeCloudflare, RagService, Spy],
) -> None:
    fake, service, spy = ready
    await ask(service, "What files does ingestion read?", [PORT])
    await ask(service, FOLLOW_UP, None)  # a follow-up without history: nothing to add
    assert condense_calls(fake) == []
    assert spy.queries == ["What files does ingestion read?", FOLLOW_UP]


@pytest.mark.parametrize(("status", "code"), [(500, None), (429, 3036), (503, 3040)])
async def test_a_failed_call_falls_back_to_the_rule_at_once(
    ready: tuple[FakeCloudflare, RagService, Spy],
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: int | None,
) -> None:
    fake, service, spy = ready
    fake.fail_next("llama", status, code)
    done = await ask(service, FOLLOW_UP, [PORT])
    assert spy.queries == [LOCAL] and done.provider == LLAMA
    assert len(condense_calls(fake)) == 1 and fake.sleeps == []  # no retry before the answer
    assert "local rule" in caplog.text and FOLLOW_UP not in caplog.text


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   ",
        '""',
        "How do I change the port?\nThe port is set with --port.",
        " ".join(["port"] * 60),  # one line, far longer than the turn it rewrites
    ],
)
async def test_an_unusable_rewrite_falls_back_to_the_rule(
    ready: tuple[FakeCloudflare, RagService, Spy], reply: str
) -> None:
    fake, service, spy = ready
    fake.script_chat(text=reply)
    await ask(service, FOLLOW_UP, [PORT])
    assert spy.queries == [LOCAL] and len(condense_calls(fake)) == 1


async def test_over_budget_there_is_no_condense_call(
    tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCloudflare()
    async with cloudflare_service(fake, tmp_path) as service:
        await service.ingest([docs])  # spends more than one neuron
        fake.vectorize.process()
    async with cloudflare_service(fake, tmp_path, budget={"daily_neurons": 1}) as service:
        spy = Spy(service, monkeypatch)
        done = await ask(service, FOLLOW_UP, [PORT])
    assert condense_calls(fake) == []
    assert spy.queries == [LOCAL] and done.provider == "extractive"
    assert fake.violations() == []


async def test_a_cached_answer_still_reports_what_condensing_cost(
    tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCloudflare()
    async with cloudflare_service(fake, tmp_path) as service:
        await service.ingest([docs])
        fake.vectorize.process()
        spy = Spy(service, monkeypatch)
        fake.script_chat(text=REWRITE, neurons=3.0)
        first = await ask(service, FOLLOW_UP, [PORT])
        fake.script_chat(text=REWRITE, neurons=3.0)
        again = await ask(service, FOLLOW_UP, [PORT])
        assert not first.cached and again.cached and again.answer == first.answer
        assert again.usage.neurons == pytest.approx(3.0) and again.trace_id != first.trace_id
        # Asked standalone, the rewrite is the same cache entry, and free.
        plain = await ask(service, REWRITE, None)
        assert plain.cached and plain.usage.neurons == 0
        assert spy.queries == [REWRITE]
        assert len(condense_calls(fake)) == 2
    assert fake.violations() == []


async def test_the_local_backend_never_calls_a_model(tmp_path: Path) -> None:
    class Exploding:
        name = "boom"

        async def condense(self, question: str, history: Any) -> str:
            raise AssertionError("no model call for a standalone question")

    # condense_with with no model is the rule; with one, standalone questions skip it.
    assert await condense_with(None, FOLLOW_UP, [PORT]) == LOCAL
    assert await condense_with(Exploding(), "What files does ingestion read?", [PORT]) == (
        "What files does ingestion read?"
    )


async def test_condense_with_falls_back_on_any_model_error() -> None:
    class Failing:
        name = "failing"

        async def condense(self, question: str, history: Any) -> str:
            raise UpstreamUnavailable("down")

    assert await condense_with(Failing(), FOLLOW_UP, [PORT]) == LOCAL


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (REWRITE, REWRITE),
        (f"  “{REWRITE}”  ", REWRITE),
        (f"Standalone question: {REWRITE}", REWRITE),
        (f"'{REWRITE}'\n", REWRITE),
        ("", None),
        ("\u201c\u201d", None),
        (f"{REWRITE}\nIt is 8000.", None),
        ("x" * 301, None),
    ],
)
def test_accept_rewrite(reply: str, expected: str | None) -> None:
    assert accept_rewrite(reply, FOLLOW_UP, [PORT]) == expected


def test_accept_rewrite_bounds_length_by_the_turn() -> None:
    # "Why?" after a short question: 3 x (4 + 12) characters at most.
    short = [T("Which port?")]
    assert accept_rewrite("Why is the port 8000?", "Why?", short) == "Why is the port 8000?"
    assert accept_rewrite("Why " + "really " * 7 + "?", "Why?", short) is None


def test_condense_messages_carry_the_turns_and_cut_long_answers() -> None:
    long = T("What does ingestion read?", "word " * 500)
    messages = build_condense_messages(FOLLOW_UP, [PORT, long])
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert user.index(PORT.question) < user.index(long.question) < user.index(FOLLOW_UP)
    assert len(user) < 2 * CONDENSE_ANSWER_CHARS + 300
