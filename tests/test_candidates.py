"""What never becomes a retrieval candidate (a chunk too thin to answer, in a longer
document), and what an answer gets beside the candidates: the first one's opening line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.domain import SourcesEvent
from rag.retrieval.opening import opening_line
from rag.service import RagService

ANIMALS = [
    "llama", "alpaca", "camel", "yak", "bison", "moose",
    "otter", "badger", "heron", "falcon", "lynx", "marten",
]  # fmt: skip
FOOTER = "## About\n\nPart of the example suite of animal pages.\n"


def write_pages(folder: Path) -> None:
    folder.mkdir()
    for animal in ANIMALS:
        shared = (
            "## Wool\n\nThe llama and alpaca pages share this paragraph about fine wool.\n\n"
            if animal in ("llama", "alpaca")
            else ""
        )
        (folder / f"{animal}.md").write_text(
            f"# The {animal}\n\nThe {animal} lives in many places and eats what it finds "
            f"there; this page describes the {animal} and its habits.\n\n{shared}"
            f"## Synopsis\n\n`{animal} *`\n\n{FOOTER}"
        )


async def test_a_chunk_too_thin_to_answer_is_never_a_candidate(
    service: RagService, tmp_path: Path
) -> None:
    write_pages(tmp_path / "pages")
    await service.ingest([tmp_path / "pages"])
    hits, _ = await service.retriever.candidates_for("llama synopsis")
    assert any(h.source == "llama.md" for h in hits)
    # "Synopsis / `llama *`" has two content words: nothing to quote, nothing to cite.
    assert not [h.text for h in hits if h.text.strip().startswith("Synopsis")]


async def test_a_document_that_is_one_short_chunk_is_still_found(
    service: RagService, tmp_path: Path
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("# Notes\n\nOur own meeting notes.\n")
    await service.ingest([tmp_path / "mine"])
    hits, _ = await service.retriever.candidates_for("meeting notes")
    assert [h.source for h in hits] == ["notes.md"]


MANUAL = """# git-frob(1)

## NAME

git-frob - Frobnicate the widgets of a repository

## OPTIONS

-q, --quiet
    Report nothing while the widgets are frobnicated, not even errors.

-n, --dry-run
    Show which widgets would be frobnicated without touching them.
"""
GUIDE = """# Widget guide

Widgets are the small parts a repository keeps beside its files. This guide says how
to look after them, and which commands change them.

## Quiet work

Frobnicating widgets quietly keeps the terminal clear of reports.
"""


async def test_an_answer_gets_the_first_sources_opening_line_a_search_does_not(
    service: RagService, tmp_path: Path
) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "git-frob.md").write_text(MANUAL)
    (tmp_path / "docs" / "guide.md").write_text(GUIDE)
    await service.ingest([tmp_path / "docs"])
    question = "How do I frobnicate the widgets and report nothing, not even errors?"
    ranked = await service.retriever.retrieve(question, 1)
    opened = await service.retriever.retrieve(question, 1, opening=True)
    assert ranked.hits[0].source == "git-frob.md" and "--quiet" in ranked.hits[0].text
    assert opened.hits[:1] == ranked.hits and not ranked.hits[0].opening
    [opening] = opened.hits[1:]
    assert opening.opening and opening.document_id == ranked.hits[0].document_id
    assert "git-frob - Frobnicate the widgets of a repository" in opening.text
    assert not any(h.opening for h in await service.search(question, 5))
    # The guide opens with a paragraph: no opening when it is the first source.
    guide = await service.retriever.retrieve("look after widgets beside files", 1, opening=True)
    assert [h.source for h in guide.hits] == ["guide.md"]

    # Ranked below the first, it is marked in its place.
    deeper = (await service.retriever.retrieve(question, 5, opening=True)).hits
    assert [h.opening for h in deeper] == [h.chunk_id == opening.chunk_id for h in deeper]
    assert [h.chunk_id for h in deeper] == [
        h.chunk_id for h in (await service.retriever.retrieve(question, 5)).hits
    ]

    # The answer flow lists it among the sources the answer may cite (the extractive
    # answerer quotes it when it is near enough the question: tests/test_extractive.py).
    events = [event async for event in service.ask(question)]
    assert isinstance(events[0], SourcesEvent)
    assert [s.chunk_id for s in events[0].sources] == [h.chunk_id for h in deeper]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "NAME\n\ngit-shortlog - Summarize 'git log' output",
            "git-shortlog - Summarize 'git log' output",
        ),
        (
            "NAME\n\ngit-receive-pack, git-upload-pack - Serve a push",
            "git-receive-pack, git-upload-pack - Serve a push",
        ),
        ("NAME\n\nls — list directory contents", "ls — list directory contents"),
        ("Logging HOWTO\n\nAuthor: Vinay Sajip <vinay_sajip at red-dove dot com>", None),
        ("Release notes\n\nVersion 2 - released in May", None),
        ("NAME\n\ngit-frob - Frobnicate\n\nSYNOPSIS\n\ngit frob", None),  # more than one line
        ("Guide\n\nWidgets are small - and useful to keep.", None),  # a sentence, not a name
    ],
)
def test_only_a_name_line_is_an_opening(text: str, line: str | None) -> None:
    headings = tuple(text.split("\n\n")[:1])
    assert opening_line(text, headings) == line
