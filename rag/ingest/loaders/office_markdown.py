"""The Markdown that the Office readers write, so that one parser (``markdown.py``) turns
every format into sections and whatever it learns about lists and tables applies to all.

A table row names its columns ("- Region: EMEA; Revenue: 1.2"): a row read without its
header ("EMEA | 1.2 | 0.9") answers nothing, and a chunk, an embedding or a quoted
sentence holds a few rows, never the whole table. Rows are gathered in groups of up to
``budget`` characters, so that a group fits one chunk (XLSX gives each its own heading).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

_SPECIAL_START = re.compile(r"^\s*(#|```|~~~)")
_SPACE = re.compile(r"\s+")
CHARS_PER_TOKEN = 2
"""Characters a row group may hold per chunk token: tables are dense in numbers and
short codes, which cost a token every two or three characters, not prose's four."""


def cell_text(value: object) -> str:
    """A cell's value as one line of text: whole floats without ``.0``, dates as ISO."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "TRUE" if value else "FALSE"
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        text = str(int(value))
    elif isinstance(value, dt.datetime):
        # Spreadsheets store dates as datetimes at midnight; the time adds only noise.
        text = value.date().isoformat() if value.time() == dt.time() else value.isoformat(" ")
    elif isinstance(value, dt.date | dt.time):
        text = value.isoformat()
    else:
        text = str(value)
    return _SPACE.sub(" ", text).strip()


def line(text: str) -> str:
    """Text of a paragraph, kept from being read as a Markdown heading or fence."""
    text = _SPACE.sub(" ", text).strip()
    return "\\" + text.lstrip() if _SPECIAL_START.match(text) else text


def heading(level: int, text: str) -> str:
    return "#" * min(max(level, 1), 6) + " " + _SPACE.sub(" ", text).strip()


def _row(header: Sequence[str], cells: Sequence[str]) -> str:
    pairs = (
        f"{header[i] if i < len(header) and header[i] else f'Column {i + 1}'}: {cell}"
        for i, cell in enumerate(cells)
        if cell
    )
    text = "; ".join(pairs)
    # A row is a statement; closed like one, the answerer does not take a short row for a
    # title (rag.backends.local.extractive) and the chunker may end a chunk after it.
    return "- " + (text if text[-1:] in ".!?" else text + ".")


def table_groups(rows: Sequence[Sequence[str]], budget: int) -> list[tuple[int, int, str]]:
    """The rows after ``rows[0]`` (the header) as list items that name their columns
    ("- Grade: Senior; Daily allowance: 70 EUR"), in groups of at most ``budget``
    characters (a single longer row gets a group of its own).

    Each group is ``(first, last, text)``: the indices in ``rows`` of its first and last
    row. A table of a header alone is one group of the header's cells, ``(0, 0, text)``.
    """
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    if not body:
        return [(0, 0, " | ".join(cell for cell in header if cell))]
    groups: list[tuple[int, int, str]] = []
    current: list[str] = []
    first = size = 0
    for index, cells in enumerate(body, 1):
        text = _row(header, cells)
        if current and size + 1 + len(text) > budget:
            groups.append((first, index - 1, "\n".join(current)))
            current = []
        if not current:
            first, size = index, 0
        current.append(text)
        size += 1 + len(text)
    groups.append((first, len(body), "\n".join(current)))
    return groups
