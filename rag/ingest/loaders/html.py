"""HTML: visible text split at h1-h6, which also build the heading path."""

from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup
from bs4.element import NavigableString, PageElement, PreformattedString, Tag

from rag.domain import LoadedDocument, Section
from rag.errors import UnsupportedDocument
from rag.ingest.loaders.text import looks_binary, normalize_text

_DROP = frozenset(
    {"script", "style", "nav", "footer", "noscript", "template", "head", "svg", "iframe"}
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
# Elements that start a new line of text; paragraph-like ones get a blank line.
_PARAGRAPHS = frozenset({"p", "pre", "blockquote", "table", "ul", "ol", "dl", "figure", "hr"})
_BLOCKS = _PARAGRAPHS | frozenset(
    {
        "address", "article", "aside", "br", "caption", "dd", "details", "div", "dt",
        "fieldset", "figcaption", "form", "header", "li", "main", "section", "summary",
        "tbody", "td", "tfoot", "th", "thead", "tr", "body", "html",
    }
)  # fmt: skip
_WHITESPACE = re.compile(r"\s+")


class _Builder:
    """Collects text into sections as the walk meets headings."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.stack: list[tuple[int, str]] = []
        self.parts: list[str] = []
        self.pending = 0
        """Newlines owed before the next text: the strongest break asked for since."""

    def text(self, text: str) -> None:
        if self.pending and text.isspace():
            return  # indentation between blocks; the break already separates them
        if self.pending and self.parts:
            self.parts.append("\n" * self.pending)
        self.pending = 0
        self.parts.append(text)

    def brk(self, newlines: int) -> None:
        self.pending = max(self.pending, newlines)

    def flush(self) -> None:
        text = normalize_text("".join(self.parts))
        heading = self.stack[-1][1] if self.stack else None
        # A heading with nothing under it lives on in the paths of what follows.
        if text and text != heading:
            path = tuple(title for _, title in self.stack)
            self.sections.append(Section(text=text, heading_path=path))
        self.parts.clear()
        self.pending = 0

    def heading(self, level: int, title: str) -> None:
        self.flush()
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        if title:
            self.stack.append((level, title))
            self.parts.append(title)
            self.pending = 1


def _text(node: Tag) -> str:
    return normalize_text(_WHITESPACE.sub(" ", node.get_text(" ")))


def _walk(root: Tag, out: _Builder) -> None:
    # An explicit stack instead of recursion: deeply nested markup must not hit the
    # interpreter's recursion limit.
    todo: list[PageElement | int] = [root]
    while todo:
        node = todo.pop()
        if isinstance(node, int):
            out.brk(node)  # the break after a block, pushed below
        elif isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctype, CDATA
                inside_pre = node.find_parent("pre") is not None
                out.text(str(node) if inside_pre else _WHITESPACE.sub(" ", node))
        elif isinstance(node, Tag):
            name = node.name.lower()
            if name in _DROP:
                continue
            if name in _HEADINGS:
                out.heading(_HEADINGS[name], _text(node))
                continue
            newlines = 2 if name in _PARAGRAPHS else 1 if name in _BLOCKS else 0
            if newlines:
                out.brk(newlines)
                todo.append(newlines)
            todo.extend(reversed(node.contents))


def load_html(path: Path, data: bytes) -> LoadedDocument:
    """Visible text without scripts, styles, navigation or footers; title from <title> or h1."""
    if looks_binary(data) and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnsupportedDocument(f"binary content in a {path.suffix.lower()} file")
    soup = BeautifulSoup(data, "html.parser")
    title_tag = soup.find("title")
    title = _text(title_tag) if isinstance(title_tag, Tag) else ""
    if not title:
        h1 = soup.find("h1")
        title = _text(h1) if isinstance(h1, Tag) else ""
    out = _Builder()
    _walk(soup, out)
    out.flush()
    return LoadedDocument(
        title=title or path.stem, media_type="text/html", sections=tuple(out.sections)
    )
