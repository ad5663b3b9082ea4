"""AsciiDoc (.adoc, .asciidoc, and .txt whose markup says so, as git's manual sources).

Sections split at titles (``== Title`` lines, or a line underlined with ``=``, ``-``,
``~``, ``^`` or ``+`` of about its length), which build the heading path. Markup is
reduced to its text, in the chunker's convention (``rag.ingest.chunker``):

* macros to their text: ``linkgit:git-show[1]`` is ``git-show(1)``, ``link:url[text]``
  and ``https://url[text]`` are ``text``, ``<<id,text>>`` is ``text`` (``<<id>>`` the
  title the id anchors); anchors (``[[id]]``) go; ``{name}`` is the attribute's value
  where the document or AsciiDoc defines it (git's ``{litdd}`` is ``--``);
* quoted text to its words (``'git clone'``, ``*NOTE*``, ``_x_``, ``+x+`` lose the marks;
  ```literal``` stays as it is);
* definition lists (``term::``, ``term:::``, ``term;;``; consecutive terms share one body)
  to the terms on one line with the definition indented under them; list items
  (``*``, ``-``, ``.``, ``1.``) to ``- `` / ``1. `` items whose wrapped lines are indented
  under them; a ``+`` continuation attaches the next block (a paragraph, a listing, an
  open block) to the item or definition, indented with it;
* listing and literal blocks (``----``, ``....``, ``[source]``/``[verse]`` paragraphs and
  indented paragraphs) to fenced code that keeps its indentation;
* admonitions (``NOTE: x``, ``[NOTE]`` blocks) to ``Note: x``; tables (``|===``) to
  ``| a | b |`` rows;
* comments, attribute entries, block attributes (``[verse]``), conditionals and
  ``include::`` lines go (an included file is a document of its own).

A .txt file is read as AsciiDoc when its markup says so: a title and at least one
AsciiDoc-only sign (a ``linkgit:`` or ``link:`` macro, a ``<<cross reference>>``, an
``include::``/``ifdef::`` line, a ``[[anchor]]``, a block attribute line such as
``[verse]``, a ``+`` continuation, a ``|===`` table, a labelled list's ``term::`` or
``term;;`` with its body on the same or the next line), or three such signs without one.
"""

from __future__ import annotations

import re
import textwrap
from itertools import pairwise
from pathlib import Path

from rag.domain import LoadedDocument
from rag.ingest.loaders.outline import outlined
from rag.ingest.loaders.text import decode_text

_Line = str | tuple[int, str]
"""A converted line of text, or a section title as (level, title)."""

_UNDERLINE_LEVELS = "=-~^+"
_ONE_LINE_TITLE = re.compile(r"(={1,6})[ \t]+(\S.*?)(?:[ \t]+=+)?[ \t]*$")
_DELIMITER = re.compile(r"(-{4,}|\.{4,}|={4,}|\*{4,}|_{4,}|\+{4,}|/{4,}|--|\|={3,})[ \t]*$")
_ATTRIBUTE_ENTRY = re.compile(r":(!?\w[\w-]*!?):(?:[ \t]+(.*?))?[ \t]*$")
_BLOCK_MACRO = re.compile(r"[a-z][\w-]*::[^\s\[]*\[.*\][ \t]*$")
# Preprocessor lines apply everywhere, inside a listing or a paragraph too.
_PREPROCESSOR = re.compile(r"(?:include|ifdef|ifndef|ifeval|endif)::[^\s\[]*\[.*\][ \t]*$")
_BLOCK_ATTRIBUTES = re.compile(r"\[(?:[A-Za-z][\w-]*)?(?:[,=#.%][^\[\]]*)?\][ \t]*$")
_ANCHOR_LINE = re.compile(r"\[\[\[?([\w:.-]+)(?:,[^\]]*)?\]\]\]?[ \t]*$")
_BLOCK_TITLE = re.compile(r"\.([A-Za-z0-9`'\"_*].*?)[ \t]*$")
_TERM = re.compile(r"(\S.*?)(::|:::|::::|;;)(?:[ \t]+(.*?))?[ \t]*$")
_ITEM = re.compile(r"([ \t]*)(-|\*{1,5}|\.{1,5}|\d{1,3}\.)[ \t]+(\S.*)$")
_ADMONITION = re.compile(r"(NOTE|TIP|IMPORTANT|WARNING|CAUTION):[ \t]+(.*)$")
_COMMENT = re.compile(r"//(?!/)")

_LINKGIT = re.compile(r"linkgit:([\w.-]+)\[(\d*)\]")
_LINK = re.compile(r"link:([^\s\[]+)\[([^\]\n]*)\]")
_URL = re.compile(r"((?:https?|ftp|irc|file)://[^\s\[\]<>]+|mailto:([^\s\[\]]+))\[([^\]\n]*)\]")
_XREF = re.compile(r"<<([\w:.-]+)(?:,[ \t]*([^<>\n]+?))?>>|xref:([\w:.-]+)\[([^\]\n]*)\]")
_ANCHOR = re.compile(r"\[\[\[?[\w:.-]+(?:,[^\]]*)?\]\]\]?|anchor:[\w:.-]+\[[^\]\n]*\]")
_PASS = re.compile(r"pass:[a-z,]*\[([^\]\n]*)\]")
_ATTRIBUTE = re.compile(r"(\\?)\{([\w-]+)\}")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_HARD_BREAK = re.compile(r"[ \t]\+$")
# Quoted text: unconstrained pairs (**x**) anywhere, constrained ones (*x*) only between
# word boundaries, so an apostrophe ("don't") or a glob (*.c) is not taken for a mark.
_QUOTES = [
    re.compile(r"(\*\*|__|\+\+|##)(?=\S)(.+?)(?<=\S)\1"),
    *(
        re.compile(
            rf"(?<![\w{m}\\])({re.escape(m)})(?=[^\s{m}])(.*?[^\s{m}\\]|[^\s{m}])\1(?![\w{m}])"
        )
        for m in "*'_+#"
    ),
]

# AsciiDoc's own character attributes (and git's asciidoc.conf ones, such as {litdd}).
_BUILTIN_ATTRIBUTES = {
    "litdd": "--", "caret": "^", "tilde": "~", "asterisk": "*", "startsb": "[",
    "endsb": "]", "plus": "+", "empty": "", "sp": " ", "nbsp": "\u00a0", "amp": "&",
    "lt": "<", "gt": ">", "brvbar": "|", "vbar": "|", "backslash": "\\", "backtick": "`",
    "two-colons": "::", "two-semicolons": ";;", "apos": "'", "quot": '"', "zwsp": "",
}  # fmt: skip
_ADMONITIONS = {
    "NOTE": "Note", "TIP": "Tip", "IMPORTANT": "Important", "WARNING": "Warning",
    "CAUTION": "Caution",
}  # fmt: skip
_CODE_STYLES = frozenset({"source", "listing", "literal", "verse"})
_SIGNS = (
    re.compile(r"linkgit:[\w.-]+\[\d*\]|link:[^\s\[]+\[|<<[\w:.-]+(?:,[^<>]*)?>>"),
    re.compile(r"^(?:include|ifdef|ifndef|ifeval|endif|image)::\S*\[.*\]\s*$"),
    re.compile(r"^\[\[[\w:.-]+\]\]"),
    re.compile(r"^\[(?:verse|NOTE|TIP|WARNING|IMPORTANT|CAUTION|source|listing|literal|"
               r"quote|caption=|cols=|options=|appendix|horizontal|qanda|glossary)[^\]]*\]\s*$"),
    re.compile(r"^\+$|^\|===+\s*$|^Content-type: text/asciidoc\s*$"),
)  # fmt: skip


# A labelled list's term ("--continue::", "`badDate`::", "`araxis`;;") with its body on
# the same line or the next: rST's "::" ends a paragraph and its literal block comes
# after a blank line, so only AsciiDoc writes a line so. Git's option includes
# (rerere-options.txt, fsck-msgids.txt) carry no other sign.
_LABELLED = re.compile(r"^(?!\.\. )[^\s:][^:]*?(?:::|;;)(?:[ \t]+\S.*)?$")


def _labelled(line: str, following: str) -> bool:
    if not _LABELLED.match(line):
        return False
    inline = not line.rstrip().endswith((":", ";"))
    return inline or bool(following.strip())


def looks_like_asciidoc(text: str) -> bool:
    """True for text whose markup is AsciiDoc's (see the module's docstring)."""
    lines = text.splitlines()[:3000]
    signs = sum(1 for line in lines if any(sign.search(line) for sign in _SIGNS))
    signs += sum(1 for line, following in pairwise([*lines, ""]) if _labelled(line, following))
    head = lines[:40]
    titled = any(_ONE_LINE_TITLE.match(line) for line in head) or any(
        _underline_level(text, under) is not None for text, under in pairwise(head)
    )
    return signs >= 3 or (titled and signs >= 1)


def _underline_level(text: str, under: str) -> int | None:
    """The title level when ``under`` underlines ``text`` (same character, length +-2)."""
    under = under.rstrip()
    if (
        len(under) < 2
        or under[0] not in _UNDERLINE_LEVELS
        or under != under[0] * len(under)
        or not text.strip()
        or text[0].isspace()
        or _DELIMITER.match(text)
        or not any(ch.isalnum() for ch in text)
    ):
        return None
    if abs(len(text.rstrip()) - len(under)) > 2:
        return None
    return _UNDERLINE_LEVELS.index(under[0]) + 1


def _fenced(lines: list[str]) -> list[_Line]:
    """Code in a fence, dedented (an attached block is indented under its item later)."""
    code = textwrap.dedent("\n".join(line.expandtabs(8) for line in lines)).split("\n")
    while code and not code[0].strip():
        code.pop(0)
    while code and not code[-1].strip():
        code.pop()
    return ["", "```", *code, "```", ""]


class _Converter:
    def __init__(self, attributes: dict[str, str], titles: dict[str, str]) -> None:
        self.attributes = attributes
        """Attribute values: AsciiDoc's own, then the document's entries as met."""
        self.titles = titles
        """Section titles by the anchor id just above them, for ``<<id>>``."""

    # Inline markup ------------------------------------------------------------------

    def inline(self, text: str) -> str:
        """Inline markup reduced to its text; code spans keep theirs."""
        text = _HARD_BREAK.sub("", text)
        out = []
        position = 0
        for span in _CODE_SPAN.finditer(text):
            out.append(self._marked(text[position : span.start()]))
            out.append(f"`{self._attributes(span.group(2))}`")
            position = span.end()
        out.append(self._marked(text[position:]))
        return "".join(out)

    def _marked(self, text: str) -> str:
        text = _PASS.sub(lambda m: m.group(1), text)
        text = _LINKGIT.sub(
            lambda m: f"{m.group(1)}({m.group(2)})" if m.group(2) else m.group(1), text
        )
        text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
        text = _URL.sub(lambda m: m.group(3) or m.group(2) or m.group(1), text)
        text = _XREF.sub(self._xref, text)
        text = _ANCHOR.sub("", text)
        text = self._attributes(text)
        for quote in _QUOTES:
            text = quote.sub(lambda m: m.group(2), text)
        return text

    def _xref(self, match: re.Match[str]) -> str:
        target = match.group(1) or match.group(3)
        text = match.group(2) or match.group(4)
        return text or self.titles.get(target) or re.sub(r"[-_]+", " ", target).strip()

    def _attributes(self, text: str) -> str:
        def value(match: re.Match[str]) -> str:
            if match.group(1):  # an escaped reference is written as it is
                return match.group()[1:]
            return self.attributes.get(match.group(2), match.group())

        return _ATTRIBUTE.sub(value, text)

    # Blocks ---------------------------------------------------------------------------

    def convert(self, lines: list[str]) -> list[_Line]:
        """Lines of text, and (level, title) for every section title."""
        out: list[_Line] = []
        style = ""  # the block style named by a [style] line just above a block
        i = 0
        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            if not stripped:
                out.append("")
                i += 1
                continue
            if _DELIMITER.match(line) and line.rstrip()[0] == "/":
                i = self._closing(lines, i) + 1  # a comment block
                continue
            if _COMMENT.match(line) or _BLOCK_MACRO.match(line) or _ANCHOR_LINE.match(line):
                i += 1
                continue
            entry = _ATTRIBUTE_ENTRY.match(line)
            if entry:
                name = entry.group(1)
                if name.startswith("!") or name.endswith("!"):
                    self.attributes.pop(name.strip("!"), None)
                else:
                    self.attributes[name] = self.inline(entry.group(2) or "")
                i += 1
                continue
            if _BLOCK_ATTRIBUTES.match(line):
                style = stripped[1:-1].split(",")[0].strip().lower()
                i += 1
                continue
            title = self._title(lines, i)
            if title is not None:
                level, text, used = title
                out.append((level, self.inline(text)))
                i += used
                style = ""
                continue
            block_title = _BLOCK_TITLE.fullmatch(stripped)
            if block_title and i + 1 < len(lines) and lines[i + 1].strip() and line[0] == ".":
                out.extend(["", self.inline(block_title.group(1))])
                i += 1
                continue
            end, converted = self._block(lines, i, style)
            out.extend(converted)
            i, style = end, ""
        return out

    def _block(self, lines: list[str], i: int, style: str) -> tuple[int, list[_Line]]:
        """(index after, converted lines) of the block starting at line ``i``."""
        line = lines[i]
        delimiter = _DELIMITER.match(line)
        if delimiter:
            end = self._closing(lines, i)
            return end + 1, self._delimited(line.strip(), lines[i + 1 : end], style)
        term = _TERM.fullmatch(line)
        item = _ITEM.match(line)
        if (term and not line[0].isspace()) or item:
            return self._list_item(lines, i)
        end = self._paragraph_end(lines, i)
        body = lines[i:end]
        if style in _CODE_STYLES or line[0].isspace():
            if style == "verse":
                body = [self.inline(x) for x in body]
            return end, _fenced(body)
        text = [self.inline(x.strip()) for x in body if not _COMMENT.match(x)] or [""]
        label = _ADMONITIONS.get(style.upper())
        admonition = _ADMONITION.match(text[0])
        if admonition:
            label, text[0] = _ADMONITIONS[admonition.group(1)], admonition.group(2)
        if label:
            text[0] = f"{label}: {text[0]}"
        return end, ["", *text, ""]

    def _closing(self, lines: list[str], i: int) -> int:
        """Index of the line that closes the delimited block opened at line ``i`` (the
        end of the text when none does)."""
        opener = lines[i].rstrip()
        for j in range(i + 1, len(lines)):
            if lines[j].rstrip() == opener:
                return j
        return len(lines)

    def _delimited(self, delimiter: str, body: list[str], style: str) -> list[_Line]:
        kind = delimiter[0]
        if (kind in "-." and delimiter != "--") or style in _CODE_STYLES:
            return _fenced(body)
        if kind in "+/":
            return []  # passthrough (raw HTML or DocBook) and comments
        if kind == "|":
            return self._table(body)
        converted = self.convert(body)
        label = _ADMONITIONS.get(style.upper())
        if label:
            for n, x in enumerate(converted):
                if isinstance(x, str) and x.strip():
                    if not x.lstrip().startswith(("```", "- ")):
                        converted[n] = f"{label}: {x.strip()}"
                    else:
                        converted.insert(n, f"{label}:")
                    break
        return ["", *converted, ""]

    def _table(self, body: list[str]) -> list[_Line]:
        """``| a | b |`` rows; the first line's cells tell how many columns a row has."""
        cells: list[str] = []
        columns = 0
        for line in body:
            if not line.strip():
                continue
            parts = [p.strip() for p in re.split(r"(?<!\\)\|", line)]
            if line.lstrip().startswith("|"):
                parts = parts[1:]
                columns = columns or len(parts)
            elif cells:
                cells[-1] = f"{cells[-1]} {parts.pop(0)}".strip()  # a cell's wrapped line
            cells.extend(parts)
        columns = max(columns, 1)
        rows = [cells[n : n + columns] for n in range(0, len(cells), columns)]
        return ["", *("| " + " | ".join(self.inline(c) for c in row) + " |" for row in rows), ""]

    def _paragraph_end(self, lines: list[str], i: int) -> int:
        """Index after the paragraph that starts at line ``i``."""
        literal = lines[i][:1].isspace()
        end = i + 1
        while end < len(lines):
            line = lines[end]
            if not line.strip() or _DELIMITER.match(line) or line.strip() == "+":
                break
            if not literal and (
                _BLOCK_ATTRIBUTES.match(line)
                or _ANCHOR_LINE.match(line)
                or _ITEM.match(line)
                or (_TERM.fullmatch(line) and not line[0].isspace())
            ):
                break
            end += 1
        return end

    def _list_item(self, lines: list[str], i: int) -> tuple[int, list[_Line]]:
        """A definition (its terms, the body indented under them) or a list item (its
        marker, wrapped lines indented under it), with the blocks attached to it."""
        terms: list[str] = []
        depth = 0
        first: list[str] = []
        while i < len(lines) and (term := _TERM.fullmatch(lines[i])) and not lines[i][0].isspace():
            terms.append(self.inline(term.group(1).strip()))
            depth = {"::": 0, ":::": 1, "::::": 2, ";;": 2}[term.group(2)]
            i += 1
            if term.group(3):
                first.append(term.group(3))
                break
        if terms:
            head = "    " * depth + ", ".join(terms)
            indent = "    " * (depth + 1)
        else:
            item = _ITEM.match(lines[i])
            assert item is not None
            marker = item.group(2)
            level = len(marker) if marker[0] in "*." else 1
            bullet = "1." if marker[0] == "." or marker[0].isdigit() else "-"
            head = "  " * (level - 1) + bullet
            indent = " " * (len(head) + 1)
            first.append(item.group(3))
            i += 1
        # The item's own text: the lines that follow until a blank line or another block;
        # a definition's body may also start after blank lines, indented.
        if terms and not first:
            j = i
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and lines[j][0].isspace() and not _DELIMITER.match(lines[j]):
                i = j
        while i < len(lines) and lines[i].strip() and not self._item_stops(lines[i]):
            if not _COMMENT.match(lines[i]):
                first.append(lines[i])
            i += 1
        text = [self.inline(x.strip()) for x in first]
        out: list[_Line] = []
        if terms:
            out.extend(["", head, *(indent + x for x in text)])
        else:
            out.extend(["", f"{head} {text[0]}" if text else head])
            out.extend(indent + x for x in text[1:])
        # Attached blocks: after a "+" line, or an indented (literal) paragraph after blank lines.
        while i < len(lines):
            j = i
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j >= len(lines):
                break
            if lines[j].strip() == "+" and j == i:
                start = j + 1
                while start < len(lines) and (
                    _BLOCK_ATTRIBUTES.match(lines[start]) or _ANCHOR_LINE.match(lines[start])
                ):
                    start += 1
                if start >= len(lines) or not lines[start].strip():
                    break
                style = ""
                if start > j + 1 and _BLOCK_ATTRIBUTES.match(lines[start - 1]):
                    style = lines[start - 1].strip()[1:-1].split(",")[0].strip().lower()
                end, block = self._block(lines, start, style)
            elif lines[j][0].isspace() and not _DELIMITER.match(lines[j]):
                end = self._paragraph_end(lines, j)
                block = _fenced(lines[j:end])
            else:
                break
            out.extend(_indented(block, indent))
            i = end
        return i, [*_tight(out), ""]

    def _item_stops(self, line: str) -> bool:
        """True for a line that ends an item's own text."""
        return bool(
            line.strip() == "+"
            or _DELIMITER.match(line)
            or _ITEM.match(line)
            or (_TERM.fullmatch(line) and not line[0].isspace())
            or _BLOCK_ATTRIBUTES.match(line)
            or _ANCHOR_LINE.match(line)
        )

    def _title(self, lines: list[str], i: int) -> tuple[int, str, int] | None:
        """(level, text, lines used) when a section title starts at line ``i``."""
        line = lines[i]
        one_line = _ONE_LINE_TITLE.match(line)
        if one_line:
            return len(one_line.group(1)), one_line.group(2), 1
        if i + 1 < len(lines):
            level = _underline_level(line, lines[i + 1])
            if level is not None:
                return level, line.strip(), 2
        return None


def _indented(block: list[_Line], indent: str) -> list[_Line]:
    """An attached block under its item: a blank line, then its lines indented (a title
    inside an item is kept as a line of text)."""
    lines = [x if isinstance(x, str) else x[1] for x in block]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return ["", *(indent + x if x.strip() else "" for x in lines)]


def _tight(lines: list[_Line]) -> list[_Line]:
    """An item's lines without the blank lines between its paragraphs of prose.

    An indented paragraph after a blank line reads as code in Markdown, and so to the
    answerer (``rag.backends.local.answer_units``); joined to the one before it, a
    definition's further paragraph stays prose of the same definition. Blank lines
    around and inside code fences, and before a nested item, stay.
    """
    out: list[_Line] = []
    fenced = False
    for n, line in enumerate(lines):
        if isinstance(line, str) and line.lstrip().startswith("```"):
            fenced = not fenced
        if line != "" or fenced or not out or n + 1 == len(lines):
            out.append(line)
            continue
        before, after = out[-1], lines[n + 1]
        if (
            isinstance(before, str)
            and isinstance(after, str)
            and before.strip()
            and after.strip()
            and not before.lstrip().startswith("```")
            and not after.lstrip().startswith("```")
            and _ITEM.match(after) is None
        ):
            continue
        out.append(line)
    return out


def _anchored_titles(lines: list[str]) -> dict[str, str]:
    """Section titles by the ``[[id]]`` anchor just above them."""
    titles: dict[str, str] = {}
    for i, line in enumerate(lines[:-1]):
        anchor = _ANCHOR_LINE.match(line)
        if not anchor:
            continue
        below = lines[i + 1]
        one_line = _ONE_LINE_TITLE.match(below)
        if one_line:
            titles[anchor.group(1)] = one_line.group(2)
        elif i + 2 < len(lines) and _underline_level(below, lines[i + 2]) is not None:
            titles[anchor.group(1)] = below.strip()
    return titles


def load_asciidoc(path: Path, data: bytes) -> LoadedDocument:
    """Sections split at titles; the document title is the first title, else the stem."""
    raw = decode_text(data, path.suffix.lower()).replace("\r\n", "\n").replace("\r", "\n")
    return asciidoc_document(path, raw)


def asciidoc_document(path: Path, raw: str) -> LoadedDocument:
    """The document ``raw`` AsciiDoc text makes."""
    lines = [line for line in raw.split("\n") if not _PREPROCESSOR.match(line)]
    converter = _Converter(dict(_BUILTIN_ATTRIBUTES), _anchored_titles(lines))
    return outlined(path, converter.convert(lines), "text/asciidoc")
