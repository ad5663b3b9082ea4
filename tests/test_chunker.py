"""Chunker: limits, overlap, word boundaries, headings, pages, determinism, odd input."""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest

from rag.backends.local.tokenizer import WordPieceTokenizer
from rag.domain import ChunkDraft, LoadedDocument, Section
from rag.ingest.chunker import chunk_document, chunker_fingerprint, document_text
from rag.ports import Tokenizer


class WhitespaceTokenizer:
    """One token per run of up to ten non-space characters (longer words split, like subwords)."""

    max_tokens = 512
    special_tokens = 2

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in re.finditer(r"\S{1,10}", text)]

    def count(self, text: str) -> int:
        return len(self.offsets(text))


WORDPIECE = WordPieceTokenizer()
TOKENIZERS: dict[str, Tokenizer] = {"whitespace": WhitespaceTokenizer(), "wordpiece": WORDPIECE}

PROSE = (
    "Retrieval works best when chunks follow the structure of the text. "
    "Each paragraph should stay whole where it can! Does a sentence ever get cut? "
    "Only when a paragraph is longer than a chunk, and then at a sentence end.\n\n"
)
PARAGRAPHS = "".join(f"Paragraph {n}. {PROSE}" for n in range(30)).strip()
UNICODE = (
    "Café déjà vu naïve façade — “quoted” text. Ünïcödé ﬁne. "
    "日本語の文章です。句読点で区切ります。中文文本没有空格也能切分。"
    "Ελληνικά κείμενα και русский текст. مرحبا بالعالم 🙂 emoji.\n\n"
) * 20
# No whitespace for 2,000 characters but hundreds of tokens for either tokenizer (WordPiece
# would make a single [UNK] of a run of one letter over 100 characters).
WORD = "-".join(["abc"] * 500)
LONG_WORD = f"prefix {WORD} suffix words after it"


def chunked(
    d: LoadedDocument, tok: Tokenizer, limit: int, overlap: int, max_chars: int = 100_000
) -> list[ChunkDraft]:
    return chunk_document(d, tok, limit, overlap, max_chars=max_chars)


def doc(*sections: Section) -> LoadedDocument:
    return LoadedDocument(title="t", media_type="text/plain", sections=sections)


def check_invariants(
    d: LoadedDocument, tok: Tokenizer, chunks: list[ChunkDraft], limit: int
) -> None:
    full = document_text(d)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text.strip() and chunk.text == chunk.text.strip()
        assert full[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.token_count == tok.count(chunk.text) <= limit
        assert chunk.token_count + tok.special_tokens <= tok.max_tokens


CASES = [
    ("paragraphs", doc(Section(PARAGRAPHS)), 40, 8),
    ("paragraphs-big", doc(Section(PARAGRAPHS)), 200, 32),
    ("unicode", doc(Section(UNICODE.strip())), 30, 5),
    ("no-overlap", doc(Section(PARAGRAPHS)), 25, 0),
    ("long-word", doc(Section(LONG_WORD)), 20, 4),
]


@pytest.mark.parametrize("tok_name", TOKENIZERS)
@pytest.mark.parametrize(("name", "d", "limit", "overlap"), CASES, ids=[c[0] for c in CASES])
def test_limits_and_offsets(
    tok_name: str, name: str, d: LoadedDocument, limit: int, overlap: int
) -> None:
    tok = TOKENIZERS[tok_name]
    chunks = chunked(d, tok, limit, overlap)
    assert len(chunks) > 1
    check_invariants(d, tok, chunks, limit)
    # Determinism: same input, same chunks.
    assert chunked(d, tok, limit, overlap) == chunks


@pytest.mark.parametrize("tok_name", TOKENIZERS)
@pytest.mark.parametrize(("limit", "overlap"), [(20, 5), (40, 10), (60, 0)])
def test_overlap_and_word_boundaries(tok_name: str, limit: int, overlap: int) -> None:
    tok = TOKENIZERS[tok_name]
    d = doc(Section(PARAGRAPHS))
    full = document_text(d)
    chunks = chunked(d, tok, limit, overlap)
    for prev, chunk in itertools.pairwise(chunks):
        # Never cut inside a word: both edges sit at whitespace or the text's ends.
        assert chunk.char_start == 0 or full[chunk.char_start - 1].isspace()
        assert chunk.char_end == len(full) or full[chunk.char_end].isspace()
        shared = prev.char_end - chunk.char_start
        if overlap and shared > 0:
            assert tok.count(full[chunk.char_start : prev.char_end]) <= overlap
        elif overlap:
            # No overlap only after a chunk that ended early, at a sentence end, before a
            # sentence that fits whole in the next chunk: overlapping would repeat it.
            assert prev.text[-1] in ".!?" and full[prev.char_end : chunk.char_start].isspace()
        else:
            assert shared < 0
    assert chunks[-1].char_end == len(full)


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_prefers_paragraph_breaks(tok_name: str) -> None:
    tok = TOKENIZERS[tok_name]
    paragraph = "word " * 30 + "end."
    d = doc(Section("\n\n".join([paragraph.strip()] * 6)))
    chunks = chunked(d, tok, 75, 0)
    assert all(chunk.text.endswith("end.") for chunk in chunks)


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_headings_are_chunk_boundaries(tok_name: str) -> None:
    tok = TOKENIZERS[tok_name]
    d = doc(
        Section("Intro text before any heading.", heading_path=()),
        Section("A\n" + PROSE * 3, heading_path=("A",)),
        Section("B\n" + PROSE, heading_path=("A", "B")),
        Section("C short", heading_path=("C",)),
    )
    chunks = chunked(d, tok, 40, 10)
    check_invariants(d, tok, chunks, 40)
    paths = [c.heading_path for c in chunks]
    assert paths == sorted(paths, key=[(), ("A",), ("A", "B"), ("C",)].index)
    for chunk in chunks:
        section = next(s for s in d.sections if s.heading_path == chunk.heading_path)
        assert chunk.text in section.text
    assert chunks[-1].text == "C short"


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_pages_tracked(tok_name: str) -> None:
    tok = TOKENIZERS[tok_name]
    pages = [f"Page {n} says something about topic {n}. " * 6 for n in range(1, 8)]
    d = doc(*(Section(text.strip(), page=n) for n, text in enumerate(pages, 1)))
    full = document_text(d)
    starts = [full.index(f"Page {n} says") for n in range(1, 8)]
    chunks = chunked(d, tok, 50, 10)
    check_invariants(d, tok, chunks, 50)
    for chunk in chunks:
        # One page per chunk: a quote from it is on the page it is cited with.
        page = max(n for n, s in enumerate(starts, 1) if s <= chunk.char_start)
        assert chunk.page_start == chunk.page_end == page
        assert chunk.text in pages[page - 1]
    assert {c.page_start for c in chunks} == set(range(1, 8))


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_long_single_word_is_hard_cut(tok_name: str) -> None:
    tok = TOKENIZERS[tok_name]
    d = doc(Section(LONG_WORD))
    chunks = chunked(d, tok, 20, 4)
    check_invariants(d, tok, chunks, 20)
    assert chunks[0].text == "prefix"
    pieces = "".join(c.text for c in chunks[1:] if " " not in c.text)
    assert WORD.startswith(pieces) and len(pieces) > len(WORD) - 60
    assert chunks[-1].text.endswith("suffix words after it")


@pytest.mark.parametrize("tok_name", TOKENIZERS)
@pytest.mark.parametrize(
    "sections", [(), (Section(""),), (Section("   \n\n  "),), (Section(""), Section("one"))]
)
def test_empty_and_blank(tok_name: str, sections: tuple[Section, ...]) -> None:
    chunks = chunked(doc(*sections), TOKENIZERS[tok_name], 10, 2)
    assert [c.text for c in chunks] == (["one"] if sections[-1:] == (Section("one"),) else [])
    if chunks:
        assert (chunks[0].char_start, chunks[0].char_end) == (2, 5)


def test_cjk_without_spaces_is_cut_between_characters() -> None:
    text = "中文文本没有空格也能切分。" * 40
    chunks = chunked(doc(Section(text)), WORDPIECE, 30, 5)
    check_invariants(doc(Section(text)), WORDPIECE, chunks, 30)
    assert all(c.text.endswith("。") for c in chunks[:-1])


def test_sha256_and_fingerprint() -> None:
    chunks = chunked(doc(Section(PARAGRAPHS)), WORDPIECE, 50, 10)

    assert all(c.sha256 == hashlib.sha256(c.text.encode()).hexdigest() for c in chunks)
    fp = chunker_fingerprint(200, 32, "minilm", 2000)
    assert fp == chunker_fingerprint(200, 32, "minilm", 2000) and len(fp) <= 40
    others = {chunker_fingerprint(201, 32, "minilm", 2000), chunker_fingerprint(200, 32, "x", 2000)}
    assert len({fp, *others, chunker_fingerprint(200, 32, "minilm", 2001)}) == 4


@pytest.mark.parametrize(("limit", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_bad_settings(limit: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunked(doc(Section("a b c")), WORDPIECE, limit, overlap)


UNITS = """Install the tools first. Then read on:

- a list item that wraps
  onto a second line and a third
  before it ends.
- a short item.

| key | default |
| chunk_tokens | 200 |
| overlap_tokens | 32 |

Run this:

```python
def main():
    return run(
        fast=True)
```

term
    its definition, indented under it, over
    two lines.
"""


# The units of UNITS as the convention in rag.ingest.chunker draws them.
UNIT_TEXTS = [
    "- a list item that wraps\n  onto a second line and a third\n  before it ends.",
    "| chunk_tokens | 200 |",
    "Run this:\n\n```python\ndef main():\n    return run(\n        fast=True)\n```",
    "term\n    its definition, indented under it, over\n    two lines.",
]


@pytest.mark.parametrize("tok_name", TOKENIZERS)
@pytest.mark.parametrize("limit", [30, 40, 60, 200])
def test_units_are_never_cut_when_they_fit(tok_name: str, limit: int) -> None:
    tok = TOKENIZERS[tok_name]
    d = doc(Section(UNITS.strip()))
    chunks = chunked(d, tok, limit, 8)
    check_invariants(d, tok, chunks, limit)
    for unit in UNIT_TEXTS:
        assert tok.count(unit) <= limit, "the case needs every unit to fit"
        assert any(unit in c.text for c in chunks), unit


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_a_unit_longer_than_a_chunk_is_cut_at_line_ends(tok_name: str) -> None:
    tok = TOKENIZERS[tok_name]
    code = "\n".join(f"    value_{n} = compute({n}, other={n + 1})" for n in range(40))
    d = doc(Section(f"Code:\n\n```\n{code}\n```"))
    chunks = chunked(d, tok, 40, 0)
    check_invariants(d, tok, chunks, 40)
    assert len(chunks) > 2
    lines = set(code.split("\n"))
    for c in chunks[1:-1]:
        # Every middle piece holds whole lines of code (its first one loses its indent).
        assert all(line in lines or "    " + line in lines for line in c.text.split("\n"))


def test_chunks_are_bounded_in_characters() -> None:
    word = "x" * 300_000  # WordPiece makes one [UNK] of it
    d = doc(Section(f"Before it. {word} After it."))
    chunks = chunked(d, WORDPIECE, 200, 32, max_chars=2000)
    check_invariants(d, WORDPIECE, chunks, 200)
    assert all(len(c.text) <= 2000 for c in chunks)
    assert "".join(c.text for c in chunks if c.text.startswith("x")).count("x") >= 300_000 - 20
    prose = chunked(doc(Section(PARAGRAPHS)), WORDPIECE, 200, 32, max_chars=300)
    assert all(len(c.text) <= 300 for c in prose) and len(prose) > 20
