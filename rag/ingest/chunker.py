"""Cut a loaded document into overlapping chunks bounded in tokens and in characters.

Offsets: a document's full text is its sections' texts joined with ``"\\n\\n"``
(``document_text``); every chunk's ``char_start``/``char_end`` index into that string,
and ``text == document_text(doc)[char_start:char_end]``.

Consecutive sections with the same heading path and page form a run; a chunk never
crosses from one run into another, so a Markdown or HTML heading always starts a new
chunk and a PDF chunk holds text of one page only (``page_start == page_end``), which is
the page every quote from it is cited with. A chunk covering a page read by OCR records
the lowest confidence among such pages, so a passage is never shown as more trustworthy
than its weakest part.

The text convention the loaders write and this module keeps (Markdown-like, so the
answerer can find its units in chunk text):

* a line's indentation is kept; a line indented deeper than the line that starts its
  unit continues that unit (a wrapped list item, a definition under its term), even
  after a blank line (a further paragraph of the item or definition);
* list items start with ``- `` (or ``*``, ``+``) or ``1.``/``1)``; table rows are lines
  starting with ``|`` (``| a | b |``), the header row first when the source has one;
* code is fenced by lines starting with ```` ``` ```` (an opening fence may name the
  language); inside a fence every line break belongs to the code;
* a definition is a term line with its definition indented below it, or one
  ``term: definition`` line; an admonition is one paragraph starting ``Note:`` etc.;
* headings are lines of their own at a section's start; paragraphs are separated by a
  blank line.

Units are sentences of prose and, whole, list items, table rows, code blocks and
definitions; a line ending in ``:`` stays with what it introduces. A chunk is never cut
inside a unit unless the unit alone exceeds the chunk; then it is cut at a sentence end
or line break inside it, else between words, else (a "word" longer than the chunk, e.g.
a base64 blob) between tokens.

Each run is tokenised once with ``tokenizer.offsets``; cut points are chosen among the
gaps between tokens, so a chunk's token count is known without tokenising it again.
Every gap gets a level (``_level``). Within the window of ``chunk_tokens`` tokens and
``max_chars`` characters a cut takes the highest level in the second half of the window,
the latest of equals; when the second half holds no unit boundary but the first half
does, and the unit after it fits in a chunk, the chunk ends early there rather than cut
that unit. Pieces cut between tokens of one word are counted again with
``tokenizer.count`` and shortened until they fit. The next chunk starts up to
``overlap_tokens`` tokens before the cut, at the first unit boundary there, else at the
first word boundary; but right at the cut when, started earlier, it would end there again
(a chunk that ended early before a unit: the overlap would only repeat it).
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right

from rag.domain import ChunkDraft, LoadedDocument, Section
from rag.ports import Tokenizer

CHUNKER_VERSION = "chunker-4"
"""Bumped whenever the loaders' output or the chunk boundaries change for the same file
and settings: a stored document chunked under another version is read and chunked again."""
JOINER = "\n\n"

# Gap levels, lowest first. _UNIT and above end a unit; below it a cut splits one.
_HARD, _WORD, _WRAP, _INNER, _UNIT, _LINE, _PARAGRAPH = range(7)
_SENTENCE_END = frozenset(".!?…")
_CJK_SENTENCE_END = frozenset("。！？")
_CLOSERS = frozenset("\"')]}”’»")
# A line that starts a unit of its own: a list item, a table row or grid rule, a heading.
_UNIT_START = re.compile(r"(?:[-*+•]|\d{1,3}[.)]|#{1,6})(?:[ \t]|$)|[|+]")
_FENCE = re.compile(r"[ \t]*(?:```|~~~)")
_ITEM = re.compile(r"(?:[-*+•]|\d{1,3}[.)])(?:[ \t]|$)")


def document_text(doc: LoadedDocument) -> str:
    """The full text that ``char_start``/``char_end`` index into."""
    return JOINER.join(section.text for section in doc.sections)


def chunker_fingerprint(
    chunk_tokens: int, overlap_tokens: int, tokenizer_id: str, max_chars: int
) -> str:
    """Short id of everything that decides where chunks fall; changes force re-chunking."""
    key = f"{chunk_tokens}:{overlap_tokens}:{tokenizer_id}:{max_chars}".encode()
    return f"{CHUNKER_VERSION}:{hashlib.sha256(key).hexdigest()[:16]}"


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return code >= 0x3000 and (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x2FA1F
        or 0x3000 <= code <= 0x303F  # CJK punctuation
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
    )


class _Run:
    """One run's text and tokens, with the boundary level of every gap between tokens."""

    def __init__(self, text: str, spans: list[tuple[int, int]]) -> None:
        self.text = text
        self.spans = spans
        self.ends = [end for _, end in spans]
        self.line_starts, self.line_kinds, self.breaks = _lines(text)
        # levels[k] / spaced[k] describe the gap before token k (k = 0 is the run start).
        self.levels = [_PARAGRAPH] * len(spans)
        self.spaced = [True] * len(spans)
        for k in range(1, len(spans)):
            self.levels[k], self.spaced[k] = self._level(spans[k - 1][1], spans[k][0])

    def _level(self, end: int, start: int) -> tuple[int, bool]:
        text = self.text
        last = text[end - 1]
        if end == start:  # no gap: inside a word, or beside punctuation or CJK
            if last in _CJK_SENTENCE_END:
                return _UNIT, False
            if _is_cjk(last) or _is_cjk(text[start]):
                return _WORD, False
            return _HARD, False
        gap = text[end:start]
        if gap != " " and not any(ch.isspace() for ch in gap):
            return _HARD, False
        if "\n" in gap:
            newline = end + gap.index("\n")
            return self.breaks.get(newline, _PARAGRAPH if "\n\n" in gap else _WRAP), True
        closed = last in _CLOSERS and end >= 2 and text[end - 2] in _SENTENCE_END
        if last in _SENTENCE_END or closed:
            kind = self.line_kinds[bisect_right(self.line_starts, end - 1) - 1]
            return {"prose": _UNIT, "item": _INNER, "row": _INNER}.get(kind, _WORD), True
        return _WORD, True

    def start_char(self, k: int) -> int:
        """Where a chunk starting with token k begins: just after the gap's last whitespace."""
        if k == 0:
            return self.spans[0][0] - len(self.text[: self.spans[0][0]].lstrip())
        lo, hi = self.spans[k - 1][1], self.spans[k][0]
        if not self.spaced[k]:
            return hi
        gap = self.text[lo:hi]
        return lo + max(i for i, ch in enumerate(gap) if ch.isspace()) + 1

    def end_char(self, k: int) -> int:
        """Where a chunk ending before token k ends: at the gap's first whitespace."""
        if k == len(self.spans):
            return len(self.text.rstrip())
        lo, hi = self.spans[k - 1][1], self.spans[k][0]
        if not self.spaced[k]:
            return hi
        return lo + next(i for i, ch in enumerate(self.text[lo:hi]) if ch.isspace())


def _lines(text: str) -> tuple[list[int], list[str], dict[int, int]]:
    """Where each line starts, its kind (prose, item, row, code), and the level of the break
    before each non-blank line, keyed by where the previous non-blank line ends."""
    starts: list[int] = []
    kinds: list[str] = []
    breaks: dict[int, int] = {}
    position = 0
    previous: str | None = None  # the last non-blank line
    previous_end = 0
    blank = False
    fence = False
    unit_indent, unit_kind = 0, "prose"
    previous_code = False  # the last non-blank line was inside a fence or opened one
    for line in text.split("\n"):
        starts.append(position)
        body = line.lstrip()
        indent = len(line) - len(body)
        in_code, nested = fence, False
        if fence:
            level = _WRAP  # every break inside a fence, blank lines too, belongs to the code
            fence = _FENCE.match(line) is None
            unit_kind = "code" if fence else "closed"
        elif not body:
            blank = True
            kinds.append(unit_kind)
            position += len(line) + 1
            continue
        elif nested := unit_kind == "item" and indent > unit_indent and _starts(line):
            # A nested list or code block belongs to the item it is indented under.
            level, fence = _INNER, _FENCE.match(line) is not None
        elif _FENCE.match(line):
            level, fence, unit_kind, unit_indent = _LINE, True, "code", indent
        elif _UNIT_START.match(body):
            level, unit_indent = _LINE, indent
            unit_kind = "item" if _ITEM.match(body) else "row" if body[0] in "|+" else "prose"
        elif blank and previous is not None and indent > unit_indent:
            level = _INNER  # a further paragraph of an item or a definition
        elif blank or previous is None:
            level, unit_kind, unit_indent = _PARAGRAPH, "prose", indent
        elif indent > unit_indent:
            level = _WRAP  # a continuation line: a wrapped item, a definition under its term
        elif unit_kind == "item" and previous.rstrip()[-1:] not in _SENTENCE_END:
            level = _WRAP  # a lazy continuation (PDF text loses the indentation of items)
        elif unit_kind != "prose":
            level, unit_kind, unit_indent = _LINE, "prose", indent
        elif previous.rstrip()[-1:] in _SENTENCE_END:
            level = _UNIT
        else:
            level = _WRAP  # a wrapped line of a paragraph
        if blank and not in_code and not nested and level != _INNER:
            level = max(level, _PARAGRAPH)
        if previous is not None:
            if previous.endswith(":") and level > _INNER and not previous_code:
                level = _INNER  # a lead-in stays with what it introduces
            breaks[previous_end] = level
        kinds.append(unit_kind)
        previous, previous_end, blank = line, position + len(line), False
        previous_code = in_code or fence
        position += len(line) + 1
    return starts, kinds, breaks


def _starts(line: str) -> bool:
    """True for a line that opens a unit of its own: an item, a row, a heading, a fence."""
    return _FENCE.match(line) is not None or _UNIT_START.match(line.lstrip()) is not None


def _cut(run: _Run, first: int, limit: int, max_chars: int) -> int:
    """Index of the token after the last one of the chunk that starts at ``first``."""
    n = len(run.spans)
    # Tokens that end within max_chars of the chunk's start; _split_long makes it >= 1.
    fits = bisect_right(run.ends, run.start_char(first) + max_chars, lo=first + 1)
    last = min(first + limit, fits)
    if last >= n:
        return n
    half = first + max(1, (last - first) // 2)
    best = max(range(half, last + 1), key=lambda k: (run.levels[k], k))
    if run.levels[best] >= _UNIT:
        return best
    units = [k for k in range(first + 1, half) if run.levels[k] >= _UNIT]
    if units and _fits(run, units[-1], limit, max_chars):
        return units[-1]  # end early rather than cut a unit that would fit in a chunk
    if run.levels[best] > _HARD:
        return best
    early = [k for k in range(first + 1, half) if run.levels[k] > _HARD]
    return early[-1] if early else last


def _fits(run: _Run, first: int, limit: int, max_chars: int) -> bool:
    """True when the unit that starts at token ``first`` ends within one chunk."""
    fits = bisect_right(run.ends, run.start_char(first) + max_chars, lo=first + 1)
    last = min(first + limit, fits, len(run.spans))
    return last == len(run.spans) or any(run.levels[k] >= _UNIT for k in range(first + 1, last + 1))


def _next_start(run: _Run, first: int, end: int, overlap: int) -> int:
    window = range(max(end - overlap, first + 1), end)
    for floor in (_UNIT, _WORD):
        for k in window:
            if run.levels[k] >= floor:
                return k
    return end


def _split_long(spans: list[tuple[int, int]], max_chars: int) -> list[tuple[int, int]]:
    """Spans with any token longer than ``max_chars`` (WordPiece makes a single [UNK] of a
    word over 100 characters) cut into pieces that fit."""
    if all(end - start <= max_chars for start, end in spans):
        return spans
    out: list[tuple[int, int]] = []
    for start, end in spans:
        out.extend((lo, min(lo + max_chars, end)) for lo in range(start, end, max_chars))
    return out


def _runs(sections: tuple[Section, ...]) -> list[tuple[int, list[Section]]]:
    """(offset in the document text, sections) of each run of equal heading paths and pages."""
    runs: list[tuple[int, list[Section]]] = []
    offset = 0
    for section in sections:
        previous = runs[-1][1][-1] if runs else None
        if previous and (previous.heading_path, previous.page) == (
            section.heading_path,
            section.page,
        ):
            runs[-1][1].append(section)
        else:
            runs.append((offset, [section]))
        offset += len(section.text) + len(JOINER)
    return runs


def _weakest(confidences: list[float | None]) -> float | None:
    """A chunk's OCR confidence: its least trusted recognised page (None: none recognised)."""
    recognised = [c for c in confidences if c is not None]
    return min(recognised) if recognised else None


def chunk_document(
    doc: LoadedDocument,
    tokenizer: Tokenizer,
    chunk_tokens: int,
    overlap_tokens: int,
    *,
    max_chars: int,
) -> list[ChunkDraft]:
    """Chunks of at most ``chunk_tokens`` tokens (special tokens excluded) and ``max_chars``
    characters, in order."""
    if chunk_tokens < 1 or not 0 <= overlap_tokens < chunk_tokens or max_chars < 1:
        raise ValueError(
            "need chunk_tokens >= 1, 0 <= overlap_tokens < chunk_tokens and max_chars >= 1"
        )
    drafts: list[ChunkDraft] = []
    for base, sections in _runs(doc.sections):
        text = JOINER.join(section.text for section in sections)
        spans = _split_long(tokenizer.offsets(text), max_chars)
        if not spans:
            continue
        run = _Run(text, spans)
        starts, pages, confidences = [], [], []
        offset = 0
        for section in sections:
            starts.append(offset)
            pages.append(section.page)
            confidences.append(section.confidence)
            offset += len(section.text) + len(JOINER)
        first = 0
        while first < len(spans):
            end = _cut(run, first, chunk_tokens, max_chars)
            lo, hi = run.start_char(first), run.end_char(end)
            count = end - first
            if not (run.spaced[first] and (end == len(spans) or run.spaced[end])):
                # Cut between tokens of one word (or beside CJK): its pieces may
                # tokenise differently alone, so count them for real.
                count = tokenizer.count(text[lo:hi])
                while count > chunk_tokens and end > first + 1:
                    end -= 1
                    hi = run.end_char(end)
                    count = tokenizer.count(text[lo:hi])
            piece = text[lo:hi]
            if piece.strip():
                first_section = bisect_right(starts, lo) - 1
                last_section = bisect_right(starts, max(lo, hi - 1)) - 1
                drafts.append(
                    ChunkDraft(
                        ordinal=len(drafts),
                        text=piece,
                        token_count=count,
                        sha256=hashlib.sha256(piece.encode()).hexdigest(),
                        char_start=base + lo,
                        char_end=base + hi,
                        page_start=pages[first_section],
                        page_end=pages[last_section],
                        heading_path=sections[0].heading_path,
                        confidence=_weakest(confidences[first_section : last_section + 1]),
                    )
                )
            if end == len(spans):
                break
            start = _next_start(run, first, end, overlap_tokens)
            if start < end and _cut(run, start, chunk_tokens, max_chars) <= end:
                # A chunk ended early before a unit: overlapping it would only repeat it.
                start = end
            first = start
    return drafts
