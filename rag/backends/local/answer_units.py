"""Answer units: the pieces of a chunk the extractive answerer may quote whole.

A unit is what answers a question on its own, never less: a sentence; a list item with
its continuation lines; a table row, quoted after its header row; a sentence, item or
code block of a definition's body, quoted after its term (``-n, --dry-run``); a code
block; and a lead-in sentence ending in ":" together with the list, table or code it
introduces (the lead-in alone promises an answer and gives none). Headings are not
units. Every unit is a span of the chunk text, so a quote stays verbatim (up to white
space, which the answerer collapses in prose).

Lines are read as Markdown-like shapes, whatever the loader: ``- ``, ``* ``, ``1. ``
items, ``|`` rows, fenced or indented code. A line of today's loaders that lost its
indentation is still read as code when it looks like a command or a setting (a shell
command word, ``key = value``, a ``[section]``), and an unindented line right after an
item continues it (Markdown's lazy continuation), which is how a wrapped item reaches
the chunk: "must be under half of `chunk_tokens` (with the default" / "200, at most 99)."
is one item, not an item and a fragment.

``SPLITTER`` names these rules: stored units of another version are computed again.
"""

from __future__ import annotations

import re
from typing import Final, Literal, NamedTuple

from rag.text import TERM_CHARS, TERM_LINES, split_sentences

SPLITTER: Final = "units-8"

UnitKind = Literal["sentence", "item", "row", "code", "lead"]


class AnswerUnit(NamedTuple):
    start: int
    end: int
    kind: UnitKind
    header: tuple[int, int] | None = None
    """A table row's header row (its span), quoted before it."""


LEAD_BLOCK_CHARS: Final = 700
"""Most characters of a lead-in and the block it introduces quoted as one unit; a longer
block is cut after the last whole element that fits (at least one)."""

_FENCE = re.compile(r"[ \t]*(?:```|~~~)")
_ITEM = re.compile(r"[ \t]*(?:[-*+•▪‣◦–]|\(?\d{1,3}[.)])[ \t]+(?=\S)")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}[ \t]+(?=\S)")
_SEPARATOR = re.compile(r"[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(?:\|[ \t]*:?-{2,}:?[ \t]*)*\|?[ \t]*")
_RULE = re.compile(r"[ \t]*(?:[-=*_~]{3,})[ \t]*")
# Lines that are code even when a loader took their indentation: a command, an
# assignment or a TOML section. Prose rarely starts with a command word and a space.
_COMMAND = re.compile(
    r"[ \t]*(?:\$ |(?:sqlite3|curl|pip|python3?|git|export|sudo|systemctl|docker|"
    r"\.venv/bin/\w+|flock|crontab)[ \t]+\S|(?:\.venv/bin/)?rag[ \t]+(?:serve|ingest|ask|"
    r"chat|search|config|db|eval|keys|usage|doctor|audit|vectorize)\b|"
    r"[\w.\-]+[ \t]*=[ \t]*\S|\[[\w.\- ]+\][ \t]*$|(?:const|let|var|def|class)[ \t]+\w|"
    r"(?:from[ \t]+[\w.]+[ \t]+)?import[ \t]+\w|[\w.]+\(.*\);?[ \t]*$|[{}\])][,;]?[ \t]*$)"
)

# A line that starts like a command but reads as a sentence: six words or more, the last
# ending one (a period or colon on a word, not a lone "." path). Python's venv tutorial,
# its code markup gone: "python -m pip show will display information about a particular
# package:" is the lead-in of the command below it, not code.
_READS_AS_SENTENCE = re.compile(r"^\s*(?:\S+\s+){5,}\S*\w[`'\")]*[.:!?]\s*$")

_ENDED = re.compile(r"[.!?:;…][\"'”’)\]*_`]*[ \t]*$")

LineKind = Literal[
    "blank", "fence", "code", "row", "separator", "item", "heading", "text", "partial"
]
"""``partial``: the tail of a code block that began in the chunk before (``_starts_in_code``)."""


def answer_units(text: str) -> list[AnswerUnit]:
    """The units of ``text`` in order of their start."""
    lines = _classified(text)
    units: list[AnswerUnit] = []
    i = 0
    while i < len(lines):
        kind, start, _ = lines[i]
        if (definition := _definition(lines, i, text)) is not None:
            block, i = definition
            units.extend(block)
        elif kind in ("code", "row", "item"):
            block, i = _block(lines, i, text)
            units.extend(block)
        elif kind == "text":
            j = i
            # A run of text ends where a definition starts: the HTML loader writes a
            # definition list with no blank line between one body and the next term.
            while (
                j + 1 < len(lines)
                and lines[j + 1][0] == "text"
                and _definition(lines, j + 1, text) is None
            ):
                j += 1
            units.extend(_sentences(text, start, lines[j][2]))
            i = j + 1
        else:
            i += 1
    return _with_leads(text, units)


def _classified(text: str) -> list[tuple[LineKind, int, int]]:
    lines: list[tuple[LineKind, int, int]] = []
    in_fence = partial = _starts_in_code(text)
    position = 0
    for raw in text.splitlines(keepends=True):
        start, end = position, position + len(raw.rstrip("\r\n"))
        position += len(raw)
        line = text[start:end]
        kind: LineKind
        if _FENCE.match(line):
            in_fence, partial, kind = not in_fence, False, "fence"
        elif partial:
            kind = "partial"  # quoted neither as code (it is cut) nor as prose
        elif in_fence:
            kind = "code" if line.strip() else "blank"
        elif not line.strip():
            kind = "blank"
        elif line.lstrip().startswith("|"):
            kind = "separator" if _SEPARATOR.fullmatch(line) else "row"
        elif _HEADING.match(line) or _RULE.fullmatch(line):
            kind = "heading"
        elif _ITEM.match(line):
            kind = "item"
        elif (_COMMAND.match(line) and not _READS_AS_SENTENCE.search(line)) or (
            # Indented after a blank line or more code: an indented code block.
            line.startswith(("    ", "\t")) and lines and lines[-1][0] in ("blank", "code")
        ):
            kind = "code"
        else:
            kind = "text"
        lines.append((kind, start, end))
    return lines


def _starts_in_code(text: str) -> bool:
    """Whether ``text`` starts inside a fenced code block: a chunk's overlap reached back
    into one ("'~/envs/tutorial-env/lib/python3.5/site-packages']" / ">>>" / "```" /
    "To deactivate a virtual environment, type:" / "```" / "deactivate" / "```"). Read
    from the top, the fences pair up wrongly: the lead-in became code, quoted alone, and
    the command prose. Its fence lines are odd in number and the first is a bare one
    right below text, as a closing fence is (an opening fence may name a language, and
    the loaders put a blank line before it)."""
    lines = text.splitlines()
    fences = [i for i, line in enumerate(lines) if _FENCE.match(line)]
    if len(fences) % 2 == 0:
        return False
    first = fences[0]
    return first > 0 and lines[first].strip() in ("```", "~~~") and bool(lines[first - 1].strip())


def _block(
    lines: list[tuple[LineKind, int, int]], i: int, text: str
) -> tuple[list[AnswerUnit], int]:
    """The units of the code block, table or list starting at line ``i``, and the next line."""
    kind = lines[i][0]
    if kind == "code":
        j = i
        # A blank line inside a code block keeps it going when code follows.
        while j + 1 < len(lines) and (
            lines[j + 1][0] == "code"
            or (lines[j + 1][0] in ("blank", "fence") and _code_follows(lines, j + 1))
        ):
            j += 1
        return [AnswerUnit(*_trim(text, lines[i][1], lines[j][2]), "code")], j + 1
    if kind == "row":
        header: tuple[int, int] | None = None
        units: list[AnswerUnit] = []
        j = i
        while j < len(lines) and lines[j][0] in ("row", "separator"):
            row_kind, start, end = lines[j]
            if row_kind == "separator" and units and header is None:
                header = (units[0].start, units[0].end)
                units = []  # the header row is quoted with each row, not on its own
            elif row_kind == "row":
                units.append(AnswerUnit(*_trim(text, start, end), "row", header))
            j += 1
        # A chunk that starts inside a table may start inside a row: fewer cells than the
        # row after it, the rest of that row belongs to the chunk before.
        if header is None and len(units) > 1 and _cells(text, units[0]) < _cells(text, units[1]):
            units = units[1:]
        return units, j
    units = []
    j = i
    while j < len(lines) and lines[j][0] == "item":
        start, end = lines[j][1], lines[j][2]
        j += 1
        # Indented lines continue the item; an unindented text line does only while the
        # item is cut mid-sentence (Markdown's lazy continuation). PDFs have no blank
        # lines, so the text after an item's last sentence is a paragraph of its own.
        while j < len(lines) and (
            (lines[j][0] in ("text", "code") and text[lines[j][1]] in " \t")
            or (lines[j][0] == "text" and not _ENDED.search(text, start, end))
        ):
            end = lines[j][2]
            j += 1
        marker = _ITEM.match(text, start)
        body = marker.end() if marker else start
        units.append(AnswerUnit(*_trim(text, body, end), "item"))
    return units, j


def _definition(
    lines: list[tuple[LineKind, int, int]], i: int, text: str
) -> tuple[list[AnswerUnit], int] | None:
    """The units of the definition whose term starts at line ``i``, and the next line; or
    None when no definition starts there.

    A definition is one or more unindented term lines that do not end a sentence
    (``-n, --dry-run``, ``--timeout <seconds>``, ``user.name``), after a blank line, the
    body of the definition before or a line that ends a sentence (a chunk that starts
    inside a body has lost that line's indentation), then a body indented below them: the
    shape the AsciiDoc, rST and HTML loaders give definition lists. Every unit of the body
    is quoted after its term, as a table row after its header; alone, "Don't actually
    remove anything, just show what would be done." does not say which option does it.
    """
    if i > 0 and not (
        lines[i - 1][0] == "blank"
        or _indented(text, lines[i - 1])
        or _ENDED.search(text, lines[i - 1][1], lines[i - 1][2])
    ):
        return None
    j = i
    while (
        j < len(lines)
        and j - i < TERM_LINES
        and lines[j][0] in ("text", "code")
        and not _indented(text, lines[j])
        and lines[j][2] - lines[j][1] <= TERM_CHARS
        and not _ENDED.search(text, lines[j][1], lines[j][2])
    ):
        j += 1
    if j == i or j >= len(lines) or lines[j][0] == "blank" or not _indented(text, lines[j]):
        return None
    if text[lines[j][1] : lines[j][2]].lstrip()[:1].islower():
        return None  # a sentence wrapped with a hanging indent: "stores in a" / "  file in"
    term = (lines[i][1], lines[j - 1][2])
    end = j
    while end < len(lines) and (lines[end][0] == "blank" or _indented(text, lines[end])):
        end += 1
    while end > j and lines[end - 1][0] == "blank":
        end -= 1  # blank lines after the body belong to what follows
    base = _indent(text, lines[j])
    units: list[AnswerUnit] = []
    k = j
    while k < end:
        if lines[k][0] == "blank":
            k += 1
            continue
        first = k
        if lines[k][0] == "fence":
            k += 1  # a fenced block runs to its closing fence, blank lines and all
            while k < end and lines[k][0] != "fence":
                k += 1
            k = min(k + 1, end)
            inner = [line for line in lines[first:k] if line[0] != "fence"]
            if inner:
                units.append(_defined(text, inner[0][1], inner[-1][2], "code", term))
            continue
        while k < end and lines[k][0] not in ("blank", "fence"):
            k += 1
        start, stop = lines[first][1], lines[k - 1][2]
        if _indent(text, lines[first]) > base:
            units.append(_defined(text, start, stop, "code", term))
        elif lines[first][0] == "item":
            units.extend(_defined_items(lines[first:k], text, term))
        else:
            units.extend(u._replace(header=term) for u in _sentences(text, start, stop))
    return units, end


def _defined(text: str, start: int, end: int, kind: UnitKind, term: tuple[int, int]) -> AnswerUnit:
    return AnswerUnit(*_trim(text, start, end), kind, term)


def _defined_items(
    lines: list[tuple[LineKind, int, int]], text: str, term: tuple[int, int]
) -> list[AnswerUnit]:
    """The items of a list inside a definition's body, each with its continuation lines."""
    units: list[AnswerUnit] = []
    for kind, start, end in lines:
        marker = _ITEM.match(text, start)
        if kind == "item" and marker:
            units.append(_defined(text, marker.end(), end, "item", term))
        elif units:
            units[-1] = _defined(text, units[-1].start, end, "item", term)
    return units


def _indented(text: str, line: tuple[LineKind, int, int]) -> bool:
    return line[0] != "blank" and text[line[1]] in " \t"


def _indent(text: str, line: tuple[LineKind, int, int]) -> int:
    start, end = line[1], line[2]
    return len(text[start:end]) - len(text[start:end].lstrip(" \t"))


def _cells(text: str, unit: AnswerUnit) -> int:
    return text.count("|", unit.start, unit.end)


def _code_follows(lines: list[tuple[LineKind, int, int]], j: int) -> bool:
    while j < len(lines) and lines[j][0] in ("blank", "fence"):
        if lines[j][0] == "fence":
            return False  # a closing fence ends the block
        j += 1
    return j < len(lines) and lines[j][0] == "code"


def _sentences(text: str, start: int, end: int) -> list[AnswerUnit]:
    return [
        AnswerUnit(start + u.start, start + u.end, "sentence")
        for u in split_sentences(text[start:end])
        if u.kind != "heading"
    ]


def _with_leads(text: str, units: list[AnswerUnit]) -> list[AnswerUnit]:
    """Each sentence ending in ":" joined to the block after it; the lead-in alone goes."""
    out: list[AnswerUnit] = []
    for index, unit in enumerate(units):
        if unit.kind != "sentence" or not text[unit.start : unit.end].endswith(":"):
            out.append(unit)
            continue
        following = units[index + 1 : index + 1 + 12]
        block_kind = following[0].kind if following else None
        if block_kind not in ("item", "row", "code"):
            continue  # a lead-in that introduces nothing quotable: never quoted
        end = following[0].end
        for other in following[1:]:
            if other.kind != block_kind or other.end - unit.start > LEAD_BLOCK_CHARS:
                break
            end = other.end
        out.append(
            AnswerUnit(unit.start, _past_closing_fence(text, unit.start, end), "lead", unit.header)
        )
    return out


def _past_closing_fence(text: str, start: int, end: int) -> int:
    """``end``, or the end of the fence line that closes a block opened in
    ``text[start:end]`` when it directly follows: a lead-in is quoted with its fenced
    block closed ("type:" / "```" / "deactivate" / "```"), so the answer after it is not
    read as code, and the quote is still the source's own text."""
    if len(FENCE_LINES.findall(text, start, end)) % 2 == 0:
        return end
    closing = FENCE_LINES.match(text, end + 1) if text[end : end + 1] == "\n" else None
    return closing.end() if closing else end


FENCE_LINES: Final = re.compile(r"^[ \t]*(?:```|~~~)[^\n]*", re.MULTILINE)
"""Every fence line of a text (``findall``, ``sub``), the language it names included."""


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
