"""DOCX (and DOCM) to Markdown with python-docx: runs in the bounded worker process.

Headings come from paragraph styles ("Title", "Heading 1" ... "Heading 9"), list items
from list styles or numbering (indented by their level), and table rows name the columns
of the table's first row; all in document order. Headers, footers, comments and tracked
deletions are left out: they repeat on every page or are not the document's text. A
macro-enabled file's main part is read as the document part it is (python-docx knows
only the plain content type, and ``Document()`` refuses the other); the VBA project is
never read.
"""

from __future__ import annotations

import re
from typing import Any

from rag.ingest.loaders.office_markdown import heading, line, table_groups

DOCM_MAIN = "application/vnd.ms-word.document.macroEnabled.main+xml"
_HEADING_STYLE = re.compile(r"^heading (\d)$", re.IGNORECASE)
_LIST_STYLE = re.compile(r"^list\b(?:.*\s(\d)$)?", re.IGNORECASE)


def _style(paragraph: Any, names: dict[str, str]) -> str:
    # python-docx's ``paragraph.style`` looks the default style up by scanning every
    # style, for every paragraph without its own: minutes on a long document. The id
    # a paragraph names, mapped once per document, says the same.
    style_id = paragraph._p.style
    return names.get(style_id, "") if style_id else ""


def _level(name: str) -> int | None:
    """The heading level a paragraph's style gives it, or None for body text: "Title"
    above "Heading 1", so the title stays at the head of every heading path."""
    if name.lower() == "title":
        return 1
    match = _HEADING_STYLE.match(name)
    return int(match.group(1)) + 1 if match else None


def _list_depth(paragraph: Any, name: str) -> int | None:
    """How deep a list item sits (0 = top), or None when the paragraph is not one."""
    ppr = paragraph._p.pPr
    numbering = ppr.numPr if ppr is not None else None
    if numbering is not None and numbering.ilvl is not None:
        return int(numbering.ilvl.val)
    # "List Bullet 2" and its kind number their level in the style's name.
    match = _LIST_STYLE.match(name)
    if match is not None:
        return int(match.group(1)) - 1 if match.group(1) else 0
    return 0 if numbering is not None else None


def _table_rows(table: Any) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            # A merged cell is returned once per grid column it spans: keep it once.
            if cell._tc is not previous:
                cells.append(line(cell.text))
            previous = cell._tc
        rows.append(cells)
    return [row for row in rows if any(row)]


def extract(path: str, budget: int) -> dict[str, Any]:
    """``{"title", "parts": [markdown]}``: the whole document as one Markdown text."""
    from docx.opc.part import PartFactory
    from docx.package import Package
    from docx.parts.document import DocumentPart
    from docx.table import Table

    # In the worker process only: its python-docx serves nobody else.
    PartFactory.part_type_for.setdefault(DOCM_MAIN, DocumentPart)
    document = Package.open(path).main_document_part.document
    names = {style.style_id: style.name or "" for style in document.styles}
    blocks: list[str] = []
    items: list[str] = []
    first_heading = ""

    def close_list() -> None:
        if items:
            blocks.append("\n".join(items))
            items.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            close_list()
            blocks.extend(text for _, _, text in table_groups(_table_rows(block), budget))
            continue
        text = line(block.text)
        if not text:
            continue
        name = _style(block, names)
        level, depth = _level(name), _list_depth(block, name)
        if level is not None:
            close_list()
            first_heading = first_heading or text
            blocks.append(heading(level, text))
        elif depth is not None:
            items.append("  " * depth + "- " + text)
        else:
            close_list()
            blocks.append(text)
    close_list()
    title = (document.core_properties.title or "").strip() or first_heading
    return {"title": title, "parts": ["\n\n".join(blocks)]}
