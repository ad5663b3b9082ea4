"""The evidence gate: cosine and question-term coverage must both clear their thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_settings
from fakes import FakeEmbedder

from rag.domain import DoneEvent, SourcesEvent
from rag.registry import Overrides
from rag.retrieval.gate import question_terms, term_coverage
from rag.service import open_service


@pytest.mark.parametrize(
    ("question", "texts", "expected"),
    [
        ("How do I change the port?", ["Set server.port to change the port."], 1.0),
        ("Can I post answers to Slack?", ["Answers stream over HTTP."], 1 / 3),
        ("kubernetes helm chart", ["Install with pip."], 0.0),
        ("How do I configure it?", ["The configuration file is config.toml."], 1.0),
        ("what is it?", ["anything"], 1.0),  # only stop words: nothing to check
        ("Überprüfung der Dokumente", ["Die Überprüfung läuft."], 1 / 3),
    ],
)
def test_term_coverage(question: str, texts: list[str], expected: float) -> None:
    assert term_coverage(question, texts) == pytest.approx(expected)


def test_question_terms_drop_stop_words_and_single_letters() -> None:
    assert question_terms("How do I set a PDF password in the config?") == [
        "set",
        "pdf",
        "password",
        "config",
    ]


async def test_uncovered_question_is_refused_without_citations(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "server.md").write_text(
        "# Server\n\nThe server listens on port 8000. Change the port with --port.\n"
    )
    settings = make_settings(tmp_path, retrieval={"min_relevance": 0.0, "min_term_coverage": 0.5})
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        await service.ingest([docs])
        covered = [e async for e in service.ask("How do I change the port?")]
        uncovered = [e async for e in service.ask("Does the server post to Slack channels?")]
    done = covered[-1]
    assert isinstance(done, DoneEvent) and done.grounded and done.citations
    assert isinstance(uncovered[0], SourcesEvent) and uncovered[0].sources == ()
    refused = uncovered[-1]
    assert isinstance(refused, DoneEvent)
    assert not refused.grounded and refused.citations == ()
    assert "do not cover" in refused.answer


async def test_a_bare_identifier_found_verbatim_opens_the_gate(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "errors.md").write_text(
        "# Errors\n\nError 3036 means the daily free allocation is used up; it is not retried.\n"
    )
    # A cosine bar no question can clear: only the identifier rule can open the gate.
    settings = make_settings(tmp_path, retrieval={"min_relevance": 1.1})
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        await service.ingest([docs])
        found = [e async for e in service.ask("3036")]
        missing = [e async for e in service.ask("9999")]
        prose = [e async for e in service.ask("daily free allocation")]
    assert isinstance(found[-1], DoneEvent) and found[-1].grounded
    assert isinstance(missing[-1], DoneEvent) and not missing[-1].grounded
    assert isinstance(prose[-1], DoneEvent) and not prose[-1].grounded
