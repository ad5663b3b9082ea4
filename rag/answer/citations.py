"""Find the ``[n]`` markers in an answer and what each one cites."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.domain import Citation, Hit

MARKER = re.compile(r"\s*\[(\d{1,3})\]")


def extract_citations(answer: str, sources: Sequence[Hit]) -> tuple[Citation, ...]:
    """One citation per valid marker, quoting the text between it and the marker before.

    Markers naming no source are dropped: a citation is never invented. The quote is
    kept only when it occurs verbatim in the cited source (always, for extractive
    answers); otherwise the citation stands with an empty quote.
    """
    citations = []
    previous_end = 0
    for match in MARKER.finditer(answer):
        n = int(match.group(1))
        segment = answer[previous_end : match.start()].strip()
        previous_end = match.end()
        if not 1 <= n <= len(sources):
            continue
        source = sources[n - 1]
        quote = segment if segment and segment in source.text else ""
        citations.append(
            Citation(
                n=n,
                chunk_id=source.chunk_id,
                document=source.source,
                page=source.page_start,
                quote=quote,
            )
        )
    return tuple(citations)
