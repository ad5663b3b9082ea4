"""HTML: visible text split at h1-h6, which also build the heading path.

The text follows the chunker's convention (``rag.ingest.chunker``): list items start
with ``- `` or ``1.`` and their continuation lines are indented under them, tables
become ``| a | b |`` rows (the header row first), ``<pre>`` becomes a fenced code
block with its indentation, and a ``<dd>`` is indented under its ``<dt>``.

Boilerplate never reaches the text: scripts, navigation (``<nav>``, ARIA navigation and
search landmarks, Sphinx's sidebar, "related" bars and breadcrumbs), footers and
permalinks (``¶``). When the page marks its main content (``<main>`` or
``role="main"``, as Sphinx themes do) only that is read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from bs4 import BeautifulSoup
from bs4.element import NavigableString, PageElement, PreformattedString, Tag

from rag.domain import LoadedDocument
from rag.errors import UnsupportedDocument
from rag.ingest.loaders.outline import Outline
from rag.ingest.loaders.text import looks_binary, normalize_text

_DROP = frozenset(
    {
        "script", "style", "nav", "footer", "noscript", "template", "head", "svg", "iframe",
        "button", "input", "select", "textarea",
    }
)  # fmt: skip
# Landmarks that hold a site's chrome, never a page's content.
_DROP_ROLES = frozenset({"navigation", "search", "banner", "contentinfo"})
# Sphinx (basic, alabaster, Read the Docs, pydata, furo) and common site chrome.
_DROP_CLASSES = frozenset(
    {
        "sphinxsidebar", "related", "headerlink", "footer", "breadcrumb", "breadcrumbs",
        "wy-breadcrumbs", "searchbox", "rst-footer-buttons", "prev-next-area",
        "prev-next-footer", "bd-sidebar-primary", "bd-sidebar-secondary", "toc-drawer",
        "sidebar-drawer", "mobile-header", "skip-link", "related-pages", "edit-this-page",
    }
)  # fmt: skip
_PERMALINKS = frozenset({"¶", "#", "§", "🔗", "\uf0c1"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
# Elements that start a new line of text; paragraph-like ones get a blank line.
_PARAGRAPHS = frozenset({"p", "blockquote", "ul", "ol", "dl", "figure", "hr"})
_BLOCKS = _PARAGRAPHS | frozenset(
    {
        "address", "article", "aside", "br", "caption", "details", "div", "dt",
        "fieldset", "figcaption", "header", "main", "section", "summary", "body", "html",
    }
)  # fmt: skip
_WHITESPACE = re.compile(r"\s+")
_LANGUAGE = re.compile(r"(?:highlight|language|lang)-([\w+#.-]+)")


class _Nest(NamedTuple):
    """Entering (or, negated, leaving) a list item or a definition: indent its lines."""

    indent: int


class _Builder:
    """Collects text into sections as the walk meets headings."""

    def __init__(self) -> None:
        self.outline = Outline()
        self.parts: list[str] = []
        self.pending = 0
        """Newlines owed before the next text: the strongest break asked for since."""
        self.indent: list[int] = []
        """The indentation of every list item and definition the walk is inside."""
        self.marked = False
        """A list marker was just written: its item's first block goes on its line."""

    def text(self, text: str, verbatim: bool = False) -> None:
        if self.pending and text.isspace() and not verbatim:
            return  # indentation between blocks; the break already separates them
        if self.pending or not self.parts:
            if self.pending and self.parts:
                self.parts.append("\n" * self.pending + " " * sum(self.indent))
            text = text if verbatim else text.lstrip()
        self.pending = 0
        self.marked = False
        self.parts.append(text)

    def brk(self, newlines: int) -> None:
        if self.marked:
            return
        # Inside a list item or a definition a blank line would end the unit.
        self.pending = max(self.pending, min(newlines, 1) if self.indent else newlines)

    def nest(self, indent: int) -> None:
        if indent > 0:
            self.indent.append(indent)
        else:
            self.indent.pop()

    def code(self, code: str, language: str) -> None:
        if not code.strip():
            return
        self.brk(2)
        self.text("```" + language)
        self.brk(1)
        lines = code.strip("\n").split("\n")
        self.text(("\n" + " " * sum(self.indent)).join(lines), verbatim=True)
        self.brk(1)
        self.text("```")
        self.brk(2)

    def rows(self, rows: list[str]) -> None:
        self.brk(2)
        for row in rows:
            self.text(row)
            self.brk(1)
        self.brk(2)

    def flush(self) -> None:
        self.outline.line("".join(self.parts))
        self.parts.clear()
        self.pending = 0

    def heading(self, level: int, title: str) -> None:
        self.flush()
        self.outline.heading(level, title, written=False)
        if title:
            # Written here, so that the break after it is the next block's own.
            self.parts.append(title)
            self.pending = 1


def _text(node: Tag) -> str:
    return normalize_text(_WHITESPACE.sub(" ", node.get_text(" ")))


def _classes(tag: Tag) -> list[str]:
    value = tag.get("class")
    return value if isinstance(value, list) else str(value or "").split()


def _is_boilerplate(tag: Tag) -> bool:
    if tag.name.lower() in _DROP or str(tag.get("role", "")).lower() in _DROP_ROLES:
        return True
    if "breadcrumb" in str(tag.get("aria-label", "")).lower():
        return True
    if not _DROP_CLASSES.isdisjoint(_classes(tag)):
        return True
    # A permalink: an in-page anchor whose text is only a pilcrow or hash.
    return tag.name == "a" and tag.get_text().strip() in _PERMALINKS


def _marker(item: Tag) -> str:
    """``- `` for a bullet, ``N. `` for the Nth item of an ordered list."""
    parent = item.parent
    if not isinstance(parent, Tag) or parent.name != "ol":
        return "- "
    start = str(parent.get("start", "1"))
    number = int(start) if start.isdigit() else 1
    for sibling in item.find_previous_siblings("li"):
        if sibling.parent is parent:
            number += 1
    return f"{number}. "


def _table_rows(table: Tag) -> list[str]:
    """``| a | b |`` lines, the header row first; a nested table is flattened into its cell."""
    rows = [tr for tr in table.find_all("tr") if tr.find_parent("table") is table]
    # The header row goes first even when the markup puts a <tfoot> or a caption before it.
    rows.sort(key=lambda tr: tr.find_parent("thead") is None)
    out = []
    for tr in rows:
        cells = [_text(cell).replace("|", "\\|") for cell in tr.find_all(["th", "td"])]
        if any(cells):
            out.append("| " + " | ".join(cells) + " |")
    return out


def _language(pre: Tag) -> str:
    """The language a ``<pre>`` (or its Sphinx/Pygments wrapper) is marked with, or ""."""
    node: Tag | None = pre
    for _ in range(3):
        if node is None:
            break
        for name in _classes(node):
            match = _LANGUAGE.fullmatch(name)
            if match and match.group(1) not in ("default", "text", "none"):
                return match.group(1)
        node = node.parent
    code = pre.find("code")
    return _language(code) if isinstance(code, Tag) and code is not pre else ""


def _walk(root: Tag, out: _Builder) -> None:
    # An explicit stack instead of recursion: deeply nested markup must not hit the
    # interpreter's recursion limit.
    todo: list[PageElement | int | _Nest] = [root]
    while todo:
        node = todo.pop()
        if isinstance(node, int):
            out.brk(node)  # the break after a block, pushed below
        elif isinstance(node, _Nest):
            out.nest(node.indent)
        elif isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctype, CDATA
                out.text(_WHITESPACE.sub(" ", node))
        elif isinstance(node, Tag):
            name = node.name.lower()
            if name in _HEADINGS:
                out.heading(_HEADINGS[name], _text(node))
            elif name == "pre":
                out.code(node.get_text(), _language(node))
            elif name == "table":
                out.rows(_table_rows(node))
            elif name in ("li", "dd"):
                out.brk(1)
                indent = 4
                if name == "li":
                    marker = _marker(node)
                    out.text(marker)
                    out.marked = True
                    indent = len(marker)
                out.nest(indent)
                todo.extend((1, _Nest(-indent)))
                todo.extend(reversed(node.contents))
            else:
                newlines = 2 if name in _PARAGRAPHS else 1 if name in _BLOCKS else 0
                if newlines:
                    out.brk(newlines)
                    todo.append(newlines)
                todo.extend(reversed(node.contents))


def _main(soup: BeautifulSoup) -> Tag:
    """The page's main content when it is marked, else the whole page."""
    main = soup.find("main") or soup.find(True, attrs={"role": "main"})
    return main if isinstance(main, Tag) else soup


def load_html(path: Path, data: bytes) -> LoadedDocument:
    """Visible text without scripts, styles, navigation, footers or permalinks; title from
    <title> or h1."""
    if looks_binary(data) and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnsupportedDocument(f"binary content in a {path.suffix.lower()} file")
    soup = BeautifulSoup(data, "html.parser")
    title_tag = soup.find("title")
    title = _text(title_tag) if isinstance(title_tag, Tag) else ""
    for tag in soup.find_all(True):
        if not tag.decomposed and _is_boilerplate(tag):
            tag.decompose()
    if not title:
        h1 = soup.find("h1")
        title = _text(h1) if isinstance(h1, Tag) else ""
    out = _Builder()
    _walk(_main(soup), out)
    out.flush()
    out.outline.flush()
    return LoadedDocument(
        title=title or path.stem, media_type="text/html", sections=tuple(out.outline.sections)
    )
