"""Find the ``[n]`` markers in an answer and what each one cites."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.domain import Citation, Hit

MARKER = re.compile(r"\s*\[(\d{1,3})\]")


def extract_citations(answer: str, sources: Sequence[Hit]) -> tuple[Citation, ...]:
    """One citation per valid marker, quoting the text between it and the marker before.

    Markers naming no source are dropped: a citation is never invented. The quote is
    kept only when it occurs in the cited source (always, for extractive answers), up to
    white space: the answer may join a sentence's wrapped lines, and the quote is then
    the source's own text, line breaks and all, so it can be found and shown there.
    Otherwise the citation stands with an empty quote.

    A ``[1]`` may be part of the quoted text itself (a man page reference such as
    ``git-show[1]``, a footnote mark): when the text before a marker is not in the
    source it names but the text up to a later marker is in that one's source, the
    markers in between were text, and the quote runs to the later marker.
    """
    markers = list(MARKER.finditer(answer))
    citations = []
    previous_end = 0
    i = 0
    while i < len(markers):
        match = markers[i]
        segment = answer[previous_end : match.start()].strip()
        quote = _quote(segment, int(match.group(1)), sources)
        if quote is None:
            for j in range(i + 1, len(markers)):
                longer = answer[previous_end : markers[j].start()].strip()
                if (found := _quote(longer, int(markers[j].group(1)), sources)) is not None:
                    i, match, quote = j, markers[j], found
                    break
        i += 1
        n = int(match.group(1))
        previous_end = match.end()
        if not 1 <= n <= len(sources):
            continue
        source = sources[n - 1]
        citations.append(
            Citation(
                n=n,
                chunk_id=source.chunk_id,
                document=source.source,
                page=source.page_start,
                quote=quote or "",
            )
        )
    return tuple(citations)


def _quote(segment: str, n: int, sources: Sequence[Hit]) -> str | None:
    """``segment`` as source ``n`` (1-based) has it, up to white space, or None."""
    return _verbatim(segment, sources[n - 1].text) if 1 <= n <= len(sources) else None


def _verbatim(segment: str, text: str) -> str | None:
    """``segment`` as ``text`` has it: the span of ``text`` that differs from ``segment``
    in white space only, or None."""
    if not segment:
        return None
    if segment in text:
        return segment
    words = segment.split()
    found = re.search(r"\s+".join(map(re.escape, words)), text)
    return found.group(0) if found else None
