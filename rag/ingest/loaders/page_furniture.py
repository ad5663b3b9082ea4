"""Running headers, footers and page numbers: the lines a PDF repeats at its page edges.

They say nothing about the page they are on, yet an index holding them quotes them
("Page 1 of 4") and ranks every page a little closer to any question that names the
document's title. Only a page's first and last few lines are looked at: a line found
there is furniture when it is a page number ("7", "- 7 -", "Page 7", "Page 7 of 12",
"7 / 12") or when, its page's own number aside, it stands at the edge of most pages of a
document of three pages or more.
"""

from __future__ import annotations

import re
from collections import Counter

EDGE_LINES = 3
"""Lines at the top and at the bottom of a page that may be furniture."""

MIN_PAGES = 3
"""Fewer pages than this cannot tell a running header from a repeated first sentence."""

_PAGE_NUMBER = re.compile(
    r"(?:page|p\.|seite|pág\.?|página)?\s*[-–—(\[]?\s*\d{1,4}\s*[-–—)\]]?"
    r"(?:\s*(?:of|/|von|de)\s*\d{1,4})?",
    re.IGNORECASE,
)


def _key(line: str, page: int) -> str:
    """A line as it repeats: the same words, its page's own number ("Guide - 7") aside.

    Only the page's number is blanked, not every digit: "Step 3 of the install" at the
    top of several pages is content, a header that counts pages is not.
    """
    return re.sub(rf"(?<!\d){page}(?!\d)", "#", " ".join(line.split()).lower())


def _edges(lines: list[str]) -> set[int]:
    """Indexes of the first and last ``EDGE_LINES`` non-blank lines."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    return {*filled[:EDGE_LINES], *filled[-EDGE_LINES:]}


def strip_furniture(pages: list[str]) -> list[str]:
    """The pages' texts without running headers, footers and page numbers at their edges."""
    split = [text.split("\n") for text in pages]
    repeated: set[str] = set()
    if len(pages) >= MIN_PAGES:
        seen = Counter(
            key
            for page, lines in enumerate(split, 1)
            for key in {_key(lines[i], page) for i in _edges(lines)}
        )
        repeated = {key for key, count in seen.items() if count * 2 > len(pages)}
    out = []
    for page, lines in enumerate(split, 1):
        edges = _edges(lines)
        numbers = {i for i in edges if _PAGE_NUMBER.fullmatch(lines[i].strip())}
        same = {i for i in edges if _key(lines[i], page) in repeated}
        # Only lines at the very edge go; a match below kept text is the page's content.
        gone = _outermost(lines, numbers | same)
        if all(i in gone for i, line in enumerate(lines) if line.strip()):
            # A page that is nothing but its "running header" (the same slide title or
            # label on every page) says that on purpose: only its page number goes.
            gone = _outermost(lines, numbers)
        out.append("\n".join(line for i, line in enumerate(lines) if i not in gone).strip("\n"))
    return out


def _outermost(lines: list[str], drop: set[int]) -> set[int]:
    """The lines of ``drop`` reached from the top or the bottom over blank or dropped lines."""
    outer: set[int] = set()
    for order in (range(len(lines)), range(len(lines) - 1, -1, -1)):
        for i in order:
            if i in drop:
                outer.add(i)
            elif lines[i].strip():
                break
    return outer
