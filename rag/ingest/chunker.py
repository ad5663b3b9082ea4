"""Cut a loaded document into token-bounded, overlapping chunks.

Offsets: a document's full text is its sections' texts joined with ``"\\n\\n"``
(``document_text``); every chunk's ``char_start``/``char_end`` index into that string,
and ``text == document_text(doc)[char_start:char_end]``.

Consecutive sections with the same heading path form a run (all pages of a PDF, say);
a chunk never crosses from one run into another, so a Markdown or HTML heading always
starts a new chunk, while a PDF chunk may cross pages and records ``page_start`` and
``page_end``. A chunk covering a page read by OCR records the lowest confidence among
such pages, so a passage is never shown as more trustworthy than its weakest part.

Each run is tokenised once with ``tokenizer.offsets``; cut points are chosen among the
gaps between tokens, so a chunk's token count is known without tokenising it again.
Within the window of ``chunk_tokens`` tokens a cut prefers a paragraph break, then a
line or sentence end, then any whitespace (or a boundary beside a CJK character, which
has no spaces), taking the latest such boundary in the second half of the window. Only
when the window holds no boundary at all (a single "word" longer than ``chunk_tokens``
tokens, e.g. a base64 blob) is it hard-cut between two tokens; such pieces are counted
again with ``tokenizer.count`` and shortened until they fit. The next chunk starts about
``overlap_tokens`` tokens before the cut, at a word boundary.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right

from rag.domain import ChunkDraft, LoadedDocument, Section
from rag.ports import Tokenizer

CHUNKER_VERSION = "chunker-1"
JOINER = "\n\n"

_HARD, _WORD, _SENTENCE, _PARAGRAPH = 0, 1, 2, 3
_SENTENCE_END = frozenset(".!?…")
_CJK_SENTENCE_END = frozenset("。！？")
_CLOSERS = frozenset("\"')]}”’»")


def document_text(doc: LoadedDocument) -> str:
    """The full text that ``char_start``/``char_end`` index into."""
    return JOINER.join(section.text for section in doc.sections)


def chunker_fingerprint(chunk_tokens: int, overlap_tokens: int, tokenizer_id: str) -> str:
    """Short id of everything that decides where chunks fall; changes force re-chunking."""
    key = f"{chunk_tokens}:{overlap_tokens}:{tokenizer_id}".encode()
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
                return _SENTENCE, False
            if _is_cjk(last) or _is_cjk(text[start]):
                return _WORD, False
            return _HARD, False
        gap = text[end:start]
        if gap != " " and not any(ch.isspace() for ch in gap):
            return _HARD, False
        if "\n\n" in gap:
            return _PARAGRAPH, True
        closed = last in _CLOSERS and end >= 2 and text[end - 2] in _SENTENCE_END
        if last in _SENTENCE_END or closed or "\n" in gap:
            return _SENTENCE, True
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


def _cut(run: _Run, first: int, limit: int) -> int:
    """Index of the token after the last one of the chunk that starts at ``first``."""
    n = len(run.spans)
    if first + limit >= n:
        return n
    window = range(first + max(1, limit // 2), first + limit + 1)
    best = max(window, key=lambda k: (run.levels[k], k))
    if run.levels[best] > _HARD:
        return best
    early = [k for k in range(first + 1, window.start) if run.levels[k] > _HARD]
    return early[-1] if early else first + limit


def _next_start(run: _Run, first: int, end: int, overlap: int) -> int:
    for k in range(max(end - overlap, first + 1), end):
        if run.levels[k] > _HARD:
            return k
    return end


def _runs(sections: tuple[Section, ...]) -> list[tuple[int, list[Section]]]:
    """(offset in the document text, sections) of each run of equal heading paths."""
    runs: list[tuple[int, list[Section]]] = []
    offset = 0
    for section in sections:
        if runs and runs[-1][1][-1].heading_path == section.heading_path:
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
    doc: LoadedDocument, tokenizer: Tokenizer, chunk_tokens: int, overlap_tokens: int
) -> list[ChunkDraft]:
    """Chunks of at most ``chunk_tokens`` tokens (special tokens excluded), in order."""
    if chunk_tokens < 1 or not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError("need chunk_tokens >= 1 and 0 <= overlap_tokens < chunk_tokens")
    drafts: list[ChunkDraft] = []
    for base, sections in _runs(doc.sections):
        text = JOINER.join(section.text for section in sections)
        spans = tokenizer.offsets(text)
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
            end = _cut(run, first, chunk_tokens)
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
            first = _next_start(run, first, end, overlap_tokens)
    return drafts
