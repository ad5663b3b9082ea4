"""A document's opening: the NAME line a manual page starts with to say what it is.

"git-shortlog - Summarize 'git log' output": a name (or several, comma-separated), a
dash, and what it is. An answer quoting that page's OPTIONS ("-s, --summary" and what it
does) never says which command the options belong to, and the NAME line that does ranks
low: its cosine to "What does git rerere do?" is 0.50 with all-MiniLM-L6, the SYNOPSIS's
0.67. So the answer flow asks the retriever for the first source's opening beside the
ranked sources (``Retriever.retrieve(opening=True)``), and the extractive answerer quotes
it first when the question asks what to use or what something is.

Only that form counts. Any short first line would take a Sphinx page's "Author: Vinay
Sajip <...>" (the Python HOWTOs) or a version line for a summary. Measured on git's
manual (the HTML pages and their AsciiDoc sources): 27 of the 41 answerable questions'
first sources have an opening; none of the handbook's pages, nor of Python's tutorial
and HOWTOs, has one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

OPENING_WORDS = 30
"""At most this many words: a NAME line runs 5 to 15."""

_NAME_LINE = re.compile(r"[\w.+-]+(?:, ?[\w.+-]+)* +[-–—] +\S")
"""A manual page's NAME line (man-pages(7)): the names, a dash, a short description."""


def opening_line(text: str, headings: Sequence[str]) -> str | None:
    """The line a document's first chunk holds below its headings, as the chunk has it,
    when it is the document's NAME line; else None."""
    titles = {" ".join(h.split()) for h in headings}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    while lines and " ".join(lines[0].split()) in titles:
        lines.pop(0)
    if len(lines) != 1 or len(lines[0].split()) > OPENING_WORDS:
        return None
    return lines[0] if _NAME_LINE.match(lines[0]) else None
