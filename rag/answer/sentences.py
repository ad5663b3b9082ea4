"""A rule-based sentence splitter that returns spans, so every unit is an exact substring.

Headings, list items, table rows and code lines are units of their own and never merge
with the prose around them; wrapped prose lines join into one paragraph. Inside a
paragraph a sentence ends at ``.``, ``!``, ``?`` or ``…`` followed by white space and a
word that does not start in lower case, unless the dot belongs to an abbreviation
("e.g.", "Dr.", "Fig. 3") or an initial ("J. Smith"). Dots without white space after
them (1.5, config.toml, v2.0.1) never end a sentence.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

UnitKind = Literal["sentence", "item", "heading", "code"]


class Unit(NamedTuple):
    start: int
    end: int
    kind: UnitKind


_HEADING = re.compile(r"[ \t]{0,3}#{1,6}[ \t]+(?=\S)")
_ITEM = re.compile(r"[ \t]*(?:[-*+•▪‣◦–]|\(?\d{1,3}[.)]|\(?[a-z][)])[ \t]+(?=\S)")
_RULE = re.compile(r"[ \t]*(?:[-=*_~:|+ \t]{3,}|[-=*_]{2,})[ \t]*")
_FENCE = re.compile(r"[ \t]*(?:```|~~~)")
_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_INNER_DOTS = re.compile(r"(?:[a-z]\.)+[a-z]")  # e.g, i.e, u.s, a.m

# Always abbreviations: a capital letter after them starts a name, not a sentence.
_ABBREVIATIONS_TEXT = "mr mrs ms dr prof sr jr st vs cf viz al approx ca incl resp esp dept corp"
_ABBREVIATIONS = frozenset(_ABBREVIATIONS_TEXT.split())
# Abbreviations only before a number: "No. 5", "Fig. 3", "p. 12"; "No. The" ends a sentence.
_BEFORE_NUMBER_TEXT = "no nos fig figs eq eqs p pp vol sec ch art ref nr"
_BEFORE_NUMBER = frozenset(_BEFORE_NUMBER_TEXT.split())


def split_sentences(text: str) -> list[Unit]:
    """Units of ``text`` in order; ``text[u.start:u.end]`` is the unit, trimmed of white space."""
    units: list[Unit] = []
    paragraph: tuple[int, int] | None = None  # span of the prose lines seen so far
    item: tuple[int, int] | None = None  # a list item and its indented continuation
    in_code = False

    def flush() -> None:
        nonlocal paragraph, item
        if paragraph is not None:
            units.extend(_prose(text, *paragraph, "sentence"))
        if item is not None:
            units.extend(_prose(text, *item, "item"))
        paragraph = item = None

    for start, end in _lines(text):
        line = text[start:end]
        if _FENCE.match(line):
            flush()
            in_code = not in_code
            continue
        if in_code:
            units.extend(_trimmed(text, start, end, "code"))
            continue
        if not line.strip() or _RULE.fullmatch(line):
            flush()
            continue
        heading = _HEADING.match(line)
        bullet = _ITEM.match(line)
        if heading:
            flush()
            units.extend(_trimmed(text, start + heading.end(), end, "heading"))
        elif bullet:
            flush()
            item = (start + bullet.end(), end)
        elif line.lstrip().startswith("|"):
            flush()
            units.extend(_trimmed(text, start, end, "item"))
        elif item is not None and line[:1] in " \t":
            item = (item[0], end)
        else:
            if item is not None:
                flush()
            paragraph = (start, end) if paragraph is None else (paragraph[0], end)
    flush()
    return units


def _lines(text: str) -> list[tuple[int, int]]:
    spans = []
    position = 0
    for line in text.splitlines(keepends=True):
        spans.append((position, position + len(line.rstrip("\r\n"))))
        position += len(line)
    return spans


def _prose(text: str, start: int, end: int, kind: UnitKind) -> list[Unit]:
    units = []
    cut = start
    for match in _END.finditer(text, start, end):
        if _is_boundary(text, match, end):
            units.extend(_trimmed(text, cut, match.end(), kind))
            cut = match.end()
    units.extend(_trimmed(text, cut, end, kind))
    return units


def _is_boundary(text: str, match: re.Match[str], end: int) -> bool:
    following = text[match.end() : end].lstrip()
    if not following:
        return False  # the paragraph's end closes the last sentence anyway
    if following[0].islower():
        return False
    if match.group()[0] != ".":
        return True  # ! ? … are not used in abbreviations
    # Only the last few characters matter; searching the whole text would be quadratic.
    before = text[max(0, match.start() - 32) : match.start()]
    word = before.split()[-1] if before and not before[-1].isspace() else ""
    word = word.lower().lstrip("([\"'“‘")
    if len(word) == 1 and word.isalpha():
        return False  # an initial: "J. Smith"
    if word in _ABBREVIATIONS or _INNER_DOTS.fullmatch(word):
        return False
    return not (word in _BEFORE_NUMBER and following[0].isdigit())


def _trimmed(text: str, start: int, end: int, kind: UnitKind) -> list[Unit]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if not any(ch.isalnum() for ch in text[start:end]):
        return []
    return [Unit(start, end, kind)]
