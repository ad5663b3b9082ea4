"""Follow-up questions made standalone: the rule table, and the service using it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import make_settings
from fakes import FakeEmbedder

from rag.answer.condense import condense, needs_context
from rag.domain import DoneEvent
from rag.registry import Overrides
from rag.service import RagService, open_service
from rag.text import content_words


class T(NamedTuple):
    question: str
    answer: str = ""


CHUNKS = T("What are the default chunk size and overlap?", "200 tokens with 32 of overlap [1].")
PORT = T("Which port does the server listen on?", "Port 7070 [1].")

# (history, question, what retrieval sees)
TABLE: list[tuple[list[T], str, str]] = [
    # No history: nothing to carry over, whatever the question.
    ([], "What about it?", "What about it?"),
    # A complete question stays as it is, even right after another topic.
    ([CHUNKS], "Which port does the server listen on?", "Which port does the server listen on?"),
    # "what about" / "how about" / "and ..." open a follow-up.
    ([CHUNKS], "What about the maximum?", "default chunk size overlap: What about the maximum?"),
    ([PORT], "How about TLS?", "port server listen: How about TLS?"),
    ([PORT], "And the host?", "port server listen: And the host?"),
    # A back reference in a short question.
    ([PORT], "How do I change it?", "port server listen: How do I change it?"),
    ([CHUNKS], "Where are those set?", "default chunk size overlap: Where are those set?"),
    # No content word at all.
    ([CHUNKS], "Why?", "default chunk size overlap: Why?"),
    # A single ordinary word leans on the topic; a lone identifier stands on its own.
    ([CHUNKS], "maximum?", "default chunk size overlap: maximum?"),
    ([CHUNKS], "3036", "3036"),
    ([CHUNKS], "RAG_RETRIEVAL__TOP_K", "RAG_RETRIEVAL__TOP_K"),
    # "that" as a conjunction in a long, specific question is not a back reference.
    (
        [CHUNKS],
        "How can I check that ingestion finished before serving new queries?",
        "How can I check that ingestion finished before serving new queries?",
    ),
    # Words the question already has are not repeated.
    ([CHUNKS], "And the overlap?", "default chunk size: And the overlap?"),
    # A chain of follow-ups keeps the topic of the turn that named it.
    ([CHUNKS, T("And the overlap?")], "Why?", "overlap default chunk size: Why?"),
    # ... but stops there: the older, finished topic is not dragged along.
    ([PORT, CHUNKS], "Why?", "default chunk size overlap: Why?"),
    # Only the last three turns count.
    ([PORT, T("Why?"), T("How?"), T("And?")], "Really?", "Really?"),
]


@pytest.mark.parametrize(("history", "question", "expected"), TABLE)
def test_condense_rule(history: list[T], question: str, expected: str) -> None:
    assert condense(question, history) == expected


def test_condense_is_deterministic_and_strips() -> None:
    assert condense("  Why?  ", [CHUNKS]) == condense("Why?", [CHUNKS])
    assert condense("Why?", None) == "Why?"


def test_content_words_keep_identifiers_and_drop_stop_words() -> None:
    assert content_words("What's the max for retrieval.top_k in /v1/ask?") == [
        "max",
        "retrieval.top_k",
        "v1/ask",
    ]
    assert content_words("Why isn't it working?") == ["working"]


def test_needs_context_examples() -> None:
    assert needs_context("what about that")
    assert not needs_context("How many nodes does a Quillstore cluster need?")


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[RagService]:
    # The evidence gate is not what this is about: the fake embedder's cosines are low.
    settings = make_settings(tmp_path, retrieval={"min_relevance": 0.0, "min_term_coverage": 0.0})
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as svc:
        yield svc


async def test_the_service_retrieves_and_caches_the_condensed_question(
    service: RagService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text(
        "# Guide\n\n## Ports\n\nThe server listens on port 7070 by default. Change the port "
        "with the listen setting in the server section.\n",
        encoding="utf-8",
    )
    await service.ingest([docs])
    seen: list[str] = []
    retrieve = service.retriever.retrieve

    async def spy(query: str, k: int, **options: bool) -> Any:
        seen.append(query)
        return await retrieve(query, k, **options)

    monkeypatch.setattr(service.retriever, "retrieve", spy)
    history = [T("Which port does the server listen on?", "Port 7070 [1].")]

    events = [e async for e in service.ask("How do I change it?", history=history)]
    assert seen == ["port server listen: How do I change it?"]
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.grounded and not done.cached

    # The cache is keyed on the condensed question: the same follow-up is a hit...
    events = [e async for e in service.ask("How do I change it?", history=history)]
    assert isinstance(events[-1], DoneEvent) and events[-1].cached
    # ... and without history the bare follow-up is a different question.
    [e async for e in service.ask("How do I change it?")]
    assert seen[-1] == "How do I change it?"
