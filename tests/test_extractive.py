"""The extractive answerer and its sentence splitter, on the deterministic fake embedder."""

from __future__ import annotations

import re

import pytest
from fakes import FakeEmbedder, hit

from rag.backends.local.extractive import ExtractiveAnswerer
from rag.domain import Hit
from rag.text import split_sentences

MARKER = re.compile(r" \[(\d+)\]")

SOURCES = [
    """# Configuration

Settings live in config.toml, e.g. the number of sources. Set top_k to 8 to cite more
sources per answer. Version 1.5 changed the default top_k from 4 to 5.

- Environment variables override config.toml keys.
- Secrets are read from the environment only.""",
    """Cats sleep for most of the day. The top_k setting of the cat is unknown, i.e. nobody
asked. Dr. Smith studied cats in 2019.""",
    """Ingestion reads PDF, Markdown, text and HTML. Unchanged chunks are never re-embedded.
The answer cites its sources with numbered markers.""",
    """This fourth source is beyond max_sources and must never be quoted about top_k.""",
]


def hits(texts: list[str]) -> list[Hit]:
    return [hit(i, t, score=1.0, relevance=1.0) for i, t in enumerate(texts)]


async def answer(answerer: ExtractiveAnswerer, question: str, sources: list[Hit]) -> str:
    return "".join([piece async for piece in answerer.stream(question, sources)])


def quoted(text: str) -> list[tuple[str, int]]:
    """(sentence, n) pairs from an answer: the text before each marker."""
    pairs, previous = [], 0
    for match in MARKER.finditer(text):
        pairs.append((text[previous : match.start()].strip(), int(match.group(1))))
        previous = match.end()
    assert not text[previous:].strip(), "text after the last marker"
    return pairs


@pytest.mark.parametrize(
    "question",
    [
        "How do I change top_k in config.toml?",
        "What do cats do all day?",
        "Which formats does ingestion read?",
        "Where do secrets come from?",
        "something nobody wrote about",
    ],
)
async def test_every_sentence_is_verbatim_and_cited(question: str) -> None:
    sources = hits(SOURCES)
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=4, max_sources=3)
    text = await answer(answerer, question, sources)
    pairs = quoted(text)
    assert 1 <= len(pairs) <= 4
    for sentence, n in pairs:
        assert 1 <= n <= 3  # the fourth source is beyond max_sources
        assert sentence and sentence in sources[n - 1].text
    # Ordered by (source, position in source), so the answer reads in document order.
    positions = [(n, sources[n - 1].text.index(s)) for s, n in pairs]
    assert positions == sorted(positions)
    assert len({s for s, _ in pairs}) == len(pairs)


async def test_picks_the_relevant_sentence_first() -> None:
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=1, max_sources=3)
    text = await answer(answerer, "Where are secrets read from?", hits(SOURCES))
    assert text == "Secrets are read from the environment only. [1]"


async def test_near_duplicates_from_overlapping_chunks_are_quoted_once() -> None:
    repeated = "Unchanged chunks are never re-embedded."
    sources = hits([f"Intro text here. {repeated}", f"{repeated} Other words follow here."])
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=4, max_sources=3)
    text = await answer(answerer, "Are unchanged chunks re-embedded?", sources)
    assert text.count(repeated) == 1


async def test_empty_inputs_yield_nothing() -> None:
    embedder = FakeEmbedder()
    answerer = ExtractiveAnswerer(embedder, max_sentences=3, max_sources=3)
    assert await answer(answerer, "anything?", []) == ""
    assert await answer(answerer, "anything?", hits(["", "   ", "---"])) == ""
    assert await answer(answerer, "   ", hits(SOURCES)) == ""
    assert embedder.calls == []


async def test_deterministic_and_embeds_in_two_calls() -> None:
    embedder = FakeEmbedder()
    answerer = ExtractiveAnswerer(embedder, max_sentences=3, max_sources=3)
    first = await answer(answerer, "What changed in version 1.5?", hits(SOURCES))
    second = await answer(answerer, "What changed in version 1.5?", hits(SOURCES))
    assert first == second
    assert "Version 1.5 changed the default top_k from 4 to 5. [1]" in first
    assert sorted(kind for _, kind in embedder.calls) == ["passage", "passage", "query", "query"]


def units(text: str) -> list[tuple[str, str]]:
    return [(u.kind, text[u.start : u.end]) for u in split_sentences(text)]


def test_splitter_keeps_abbreviations_numbers_and_file_names() -> None:
    text = (
        "Use e.g. config.toml or i.e. the env. Version 1.5 works with Dr. Smith's tool! "
        "Is it v2.0.1? See Fig. 3 and No. 7. J. R. R. Tolkien wrote it. No. The end... Ok."
    )
    assert [s for _, s in units(text)] == [
        "Use e.g. config.toml or i.e. the env.",
        "Version 1.5 works with Dr. Smith's tool!",
        "Is it v2.0.1?",
        "See Fig. 3 and No. 7.",
        "J. R. R. Tolkien wrote it.",
        "No.",
        "The end...",
        "Ok.",
    ]


def test_splitter_structure_units() -> None:
    text = (
        "# Title\n\nA wrapped\nparagraph line. Second one.\n\n"
        "- item one. Two.\n- item two\n  continued\n1) numbered\n\n"
        "| a | b |\n|---|---|\n\n```\ncode line\n```\nTail"
    )
    assert units(text) == [
        ("heading", "Title"),
        ("sentence", "A wrapped\nparagraph line."),
        ("sentence", "Second one."),
        ("item", "item one."),
        ("item", "Two."),
        ("item", "item two\n  continued"),
        ("item", "numbered"),
        ("item", "| a | b |"),
        ("code", "code line"),
        ("sentence", "Tail"),
    ]
    for unit in split_sentences(text):
        assert text[unit.start : unit.end].strip() == text[unit.start : unit.end]
    assert split_sentences("") == [] and split_sentences(" \n--- \n") == []


async def test_overlap_bonus_keeps_answers_verbatim() -> None:
    sources = hits(SOURCES)
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=2, overlap_bonus=1.0)
    for sentence, n in quoted(await answer(answerer, "top_k config.toml default", sources)):
        assert sentence in sources[n - 1].text


async def test_titles_questions_and_echoes_of_the_question_are_not_quoted() -> None:
    source = Hit(
        chunk_id="c1",
        document_id="d1",
        source="faq.md",
        title="FAQ",
        text=(
            "Changing the port\n\n"
            "How do I change the port?\n\n"
            'curl -d \'{"question": "how do I change the port"}\' is an example request.\n\n'
            "Set server.port in config.toml, or pass --port to rag serve."
        ),
        score=1.0,
        relevance=1.0,
        heading_path=("Changing the port",),
    )
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=4)
    text = await answer(answerer, "how do I change the port", [source])
    assert text == "Set server.port in config.toml, or pass --port to rag serve. [1]"
