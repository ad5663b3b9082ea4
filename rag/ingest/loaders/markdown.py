"""Markdown: one section per ATX heading, heading paths from the heading stack.

The text keeps what the chunker's convention needs (``rag.ingest.chunker``): code
fences, indentation, list markers and table rows stay as written.
"""

from __future__ import annotations

import re
from pathlib import Path

from rag.domain import LoadedDocument
from rag.ingest.loaders.outline import Outline
from rag.ingest.loaders.text import decode_text, normalize_text

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_TITLE = re.compile(r"""^title:\s*(?P<q>["']?)(?P<title>.*?)(?P=q)\s*$""")


def split_front_matter(lines: list[str]) -> tuple[str | None, list[str]]:
    """The ``title:`` of a leading YAML block (if any) and the lines after it."""
    if not lines or lines[0].strip() != "---":
        return None, lines
    for end in range(1, min(len(lines), 200)):
        if lines[end].strip() in ("---", "..."):
            title = None
            for line in lines[1:end]:
                match = _FRONT_TITLE.match(line.strip())
                if match and match.group("title"):
                    title = match.group("title")
                    break
            return title, lines[end + 1 :]
    # No closing marker: a thematic break, not front matter.
    return None, lines


def _opens(line: str) -> str | None:
    """The fence a line opens, if it opens one (a backtick fence's info has no backticks)."""
    match = _FENCE.match(line)
    if match is None:
        return None
    fence = match.group(1)
    info = line.strip()[len(fence) :]
    return None if fence[0] == "`" and "`" in info else fence


def _closes(line: str, fence: str) -> bool:
    """True for a line of at least as many of the same fence characters and nothing else."""
    match = _FENCE.match(line)
    return (
        match is not None
        and match.group(1)[0] == fence[0]
        and len(match.group(1)) >= len(fence)
        and not line.strip().lstrip(fence[0])
    )


def load_markdown(path: Path, data: bytes) -> LoadedDocument:
    """Sections split at headings outside fenced code; the title is the front matter or first H1."""
    raw = decode_text(data, path.suffix.lower()).replace("\r\n", "\n").replace("\r", "\n")
    front_title, lines = split_front_matter(raw.split("\n"))
    outline = Outline()
    first_h1: str | None = None
    fence: str | None = None

    for line in lines:
        if fence is not None:
            if _closes(line, fence):
                fence = None
            outline.line(line)
            continue
        fence = _opens(line)
        if fence is not None:
            # Fences stay: they are how the chunker and the answerer know code.
            outline.line(line)
            continue
        heading = _HEADING.match(line)
        if heading is None:
            outline.line(line)
            continue
        level, title = len(heading.group(1)), normalize_text(heading.group(2) or "")
        if level == 1 and first_h1 is None and title:
            first_h1 = title
        outline.heading(level, title)
    outline.flush()
    title = normalize_text(front_title or "") or first_h1 or path.stem
    return LoadedDocument(title=title, media_type="text/markdown", sections=tuple(outline.sections))
