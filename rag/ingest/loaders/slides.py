"""PPTX (and PPTM) to Markdown with python-pptx, one text per slide: runs in the bounded
worker process.

A slide is a page, so a citation names its slide number. Its title (the title
placeholder; "Slide N" without one) is its heading; then the text of its shapes in
the order the slide stores them (group shapes opened, list levels indented), its
table rows naming their columns, and its speaker notes last, under
"Speaker notes:" so a passage says where it came from. Macros in a ``.pptm`` are never
read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rag.ingest.loaders.office_markdown import heading, line, table_groups


def _shapes(shapes: Any) -> Iterator[Any]:
    """Every shape, group shapes opened (an explicit stack: groups may nest deeply)."""
    todo = list(reversed(list(shapes)))
    while todo:
        shape = todo.pop()
        if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
            todo.extend(reversed(list(shape.shapes)))
        else:
            yield shape


def _text_frame(frame: Any) -> str:
    lines = []
    for paragraph in frame.paragraphs:
        text = line(paragraph.text)
        if text:
            lines.append("  " * paragraph.level + "- " + text if paragraph.level else text)
    return "\n".join(lines)


def _slide(slide: Any, number: int, budget: int) -> str:
    title_shape = slide.shapes.title
    title = line(title_shape.text_frame.text) if title_shape is not None else ""
    blocks = [heading(1, title or f"Slide {number}")]
    for shape in _shapes(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        if getattr(shape, "has_table", False):
            rows = [[line(cell.text) for cell in row.cells] for row in shape.table.rows]
            rows = [row for row in rows if any(row)]
            blocks.extend(text for _, _, text in table_groups(rows, budget))
        elif getattr(shape, "has_text_frame", False) and (text := _text_frame(shape.text_frame)):
            blocks.append(text)
    if slide.has_notes_slide:
        frame = slide.notes_slide.notes_text_frame
        notes = _text_frame(frame) if frame is not None else ""
        if notes:
            blocks.append("Speaker notes: " + notes)
    return "\n\n".join(blocks)


def extract(path: str, budget: int) -> dict[str, Any]:
    """``{"title", "parts": [markdown of each slide]}``: part n is slide n + 1."""
    from pptx import Presentation

    deck = Presentation(path)
    parts = [_slide(slide, number, budget) for number, slide in enumerate(deck.slides, 1)]
    title = (deck.core_properties.title or "").strip()
    # python-pptx stamps this on every deck it creates: it names no deck.
    if title == "PowerPoint Presentation":
        title = ""
    if not title and deck.slides and deck.slides[0].shapes.title is not None:
        title = line(deck.slides[0].shapes.title.text_frame.text)
    return {"title": title, "parts": parts, "paged": True}
