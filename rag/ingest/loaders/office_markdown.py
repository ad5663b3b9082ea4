"""The Markdown that the Office readers write, so that one parser (``markdown.py``) turns
every format into sections and whatever it learns about lists and tables applies to all.

Tables are cut into row groups that each repeat the header row: a row read without its
header ("EMEA | 1.2 | 0.9") answers nothing, and the chunker may cut a long table
anywhere. A group holds rows up to ``budget`` characters, so that it fits one chunk.
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
    """A cell's value as one line of table text: ``|`` escaped, whole floats without ``.0``."""
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
    return _SPACE.sub(" ", text).strip().replace("|", "\\|")


def line(text: str) -> str:
    """Text of a paragraph, kept from being read as a Markdown heading or fence."""
    text = _SPACE.sub(" ", text).strip()
    return "\\" + text.lstrip() if _SPECIAL_START.match(text) else text


def heading(level: int, text: str) -> str:
    return "#" * min(max(level, 1), 6) + " " + _SPACE.sub(" ", text).strip()


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_groups(rows: Sequence[Sequence[str]], budget: int) -> list[tuple[int, int, str]]:
    """The rows as Markdown tables of at most ``budget`` characters each (a single longer
    row gets a group of its own), every one starting with ``rows[0]`` as its header.

    Each group is ``(first, last, text)``: the indices in ``rows`` of its first and last
    row after the header. A table of a header alone is one group, ``(0, 0, text)``.
    """
    if not rows:
        return []
    width = max(len(row) for row in rows)
    header, *body = (list(row) + [""] * (width - len(row)) for row in rows)
    head = _row(header) + "\n" + _row(["---"] * width)
    if not body:
        return [(0, 0, head)]
    groups: list[tuple[int, int, str]] = []
    current: list[str] = []
    first = size = 0
    for index, row in enumerate(body, 1):
        text = _row(row)
        if current and size + 1 + len(text) > budget:
            groups.append((first, index - 1, "\n".join([head, *current])))
            current = []
        if not current:
            first, size = index, len(head)
        current.append(text)
        size += 1 + len(text)
    groups.append((first, len(body), "\n".join([head, *current])))
    return groups
