"""Sections from lines and headings: the shape every heading-structured format shares."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rag.domain import LoadedDocument, Section
from rag.ingest.loaders.text import normalize_text


class Outline:
    """Collects lines into sections; each heading starts one, whose heading path is the
    stack of headings above it (a heading of level n closes those of level n and deeper)."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._stack: list[tuple[int, str]] = []
        self._body: list[str] = []

    def line(self, line: str) -> None:
        self._body.append(line)

    def heading(self, level: int, title: str, written: bool = True) -> None:
        """Start a section under ``title`` (already normalised; empty: only close deeper ones).

        ``written``: the title is the section's first line; else the caller writes it.
        """
        self.flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        if title:
            self._stack.append((level, title))
            if written:
                self._body.append(title)

    def flush(self) -> None:
        text = normalize_text("\n".join(self._body))
        # A heading with nothing under it lives on in the paths of what follows.
        if text and (not self._stack or text != self._stack[-1][1]):
            path = tuple(title for _, title in self._stack)
            self.sections.append(Section(text=text, heading_path=path))
        self._body.clear()


def outlined(path: Path, items: Iterable[str | tuple[int, str]], media_type: str) -> LoadedDocument:
    """The document a converter's lines and (level, title) headings make; its title is
    the first heading, else the file's stem."""
    outline = Outline()
    title: str | None = None
    for item in items:
        if isinstance(item, str):
            outline.line(item)
            continue
        level, heading = item
        heading = normalize_text(heading)
        title = title or heading
        outline.heading(level, heading)
    outline.flush()
    return LoadedDocument(
        title=title or path.stem, media_type=media_type, sections=tuple(outline.sections)
    )
