"""``rag chat`` over piped stdin, on the real service with the fake embedder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_cli import config_env, flat, rag, write_docs

from rag import service as rag_service
from rag.cli import main
from rag.domain import AnswerEvent
from rag.service import RagService
from rag.web.schemas import HISTORY_TURNS_MAX

QUESTIONS = [
    "How do I restore a Quillstore snapshot?",
    "How long are snapshots kept?",
    "How many nodes does a cluster need?",
    "Which port does the server listen on?",
    "Do followers serve reads?",
]


class Recording:
    """The service, noting the history each question is asked with."""

    def __init__(self, service: RagService) -> None:
        self.service = service
        self.asked: list[tuple[str, list[tuple[str, str]]]] = []

    async def health(self) -> dict[str, object]:
        return await self.service.health()

    def ask(
        self, question: str, top_k: int | None = None, history: Sequence[Any] | None = None
    ) -> AsyncIterator[AnswerEvent]:
        self.asked.append((question, [(t.question, t.answer) for t in history or ()]))
        return self.service.ask(question, top_k, history)


@pytest.fixture
def chatting(
    tmp_path: Path, cli_on_fake_embedder: None, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], list[Recording]]:
    """An ingested copy of test_cli's documents, and the services chats open on it."""
    env = config_env(tmp_path / "state", "[server]\nmax_question_chars = 60\n")
    assert rag(env, "ingest", str(write_docs(tmp_path / "docs"))).exit_code == 0
    opened: list[Recording] = []
    on_fake = rag_service.open_service

    @asynccontextmanager
    async def recorded(settings: Any, **options: Any) -> AsyncIterator[Recording]:
        service: AbstractAsyncContextManager[RagService] = on_fake(settings, **options)
        async with service as real:
            opened.append(Recording(real))
            yield opened[-1]

    monkeypatch.setattr(rag_service, "open_service", recorded)
    return env, opened


def chat(env: dict[str, str], lines: Sequence[str]) -> Result:
    text = "".join(f"{line}\n" for line in lines)
    return CliRunner().invoke(main, ["chat"], env=env, input=text, catch_exceptions=False)


def test_each_question_is_answered_with_the_last_turns_as_history(
    chatting: tuple[dict[str, str], list[Recording]],
) -> None:
    env, opened = chatting
    result = chat(env, QUESTIONS)  # ends at the end of the input
    assert result.exit_code == 0, result.output
    [service] = opened
    questions = [question for question, _ in service.asked]
    assert questions == QUESTIONS
    answers = [history[-1][1] for _, history in service.asked[1:]]
    turns = list(zip(QUESTIONS, answers, strict=False))
    for n, (_, history) in enumerate(service.asked):
        assert history == turns[max(0, n - HISTORY_TURNS_MAX) : n]  # oldest first
    # Each answer streamed to stdout, its sources after it; no prompt when piped.
    output = flat(result.stdout)
    assert "run quill restore with the snapshot file" in output
    assert "[1] backup — backup.txt" in output
    assert "at least three nodes" in output
    assert "> " not in result.stdout
    for answer in answers:
        assert flat(answer) in output


def test_an_empty_line_ends_the_chat(chatting: tuple[dict[str, str], list[Recording]]) -> None:
    env, opened = chatting
    result = chat(env, [QUESTIONS[0], "", QUESTIONS[1]])
    assert result.exit_code == 0, result.output
    assert [question for question, _ in opened[0].asked] == [QUESTIONS[0]]


def test_a_refused_question_is_reported_and_the_chat_goes_on(
    chatting: tuple[dict[str, str], list[Recording]],
) -> None:
    env, opened = chatting
    too_long = "Why " + "really " * 12 + "?"
    result = chat(env, [too_long, QUESTIONS[0]])
    assert result.exit_code == 2  # an input error, as for rag ask
    assert f"error: question is too long: {len(too_long)} characters, the limit is 60" in flat(
        result.stderr
    )
    assert "run quill restore" in result.stdout
    # The refused question is no turn of the conversation.
    assert opened[0].asked[1] == (QUESTIONS[0], [])
