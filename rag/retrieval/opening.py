"""A document's opening: the one line it starts with to say what it is.

A manual page's NAME section is the model: "git-shortlog - Summarize 'git log' output".
An answer quoting that page's OPTIONS ("-s, --summary" and what it does) never says which
command the options belong to, and the NAME line that does ranks low: its cosine to
"What does git rerere do?" is 0.50 with all-MiniLM-L6, the SYNOPSIS's 0.67. So the answer
flow asks the retriever for the first source's opening beside the ranked sources
(``Retriever.retrieve(opening=True)``), and the extractive answerer quotes it first when
the question asks what to use or what something is.

Measured on git's manual (the HTML pages and their AsciiDoc sources): 27 of the 41
answerable questions' first sources have an opening. None of the handbook's pages has
one: their first chunk is a paragraph.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.text import has_content_words

OPENING_WORDS = 30
"""A document's first chunk is its opening when, below its headings, it is one line of
at most this many words (a NAME line runs 5 to 15) and at least ``OPENING_CONTENT_WORDS``
content words; a paragraph, a list or a table is not a one-line summary."""
OPENING_CONTENT_WORDS = 3


def opening_line(text: str, headings: Sequence[str]) -> str | None:
    """The line a document's first chunk holds below its headings, as the chunk has it,
    when the chunk is an opening (``OPENING_WORDS``); else None."""
    titles = {" ".join(h.split()) for h in headings}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    while lines and " ".join(lines[0].split()) in titles:
        lines.pop(0)
    if len(lines) != 1 or len(lines[0].split()) > OPENING_WORDS:
        return None
    return lines[0] if has_content_words(lines[0], OPENING_CONTENT_WORDS) else None
