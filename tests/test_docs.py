"""Citations of the design notes resolve: the file exists and has the heading cited.

Code comments point at ``docs/<file>.md#<anchor>`` for the reasoning behind them, and
the notes link to each other; a renamed heading or a moved file must fail here rather
than leave a comment pointing nowhere.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CITING = [ROOT / "rag", ROOT / "tests", ROOT / "README.md"]
SUFFIXES = {".py", ".md", ".js", ".css", ".html", ".toml"}
CITATION = re.compile(r"\bdocs/([\w/.-]+?\.md)#([\w-]+)")
# A Markdown link inside the notes: (file.md#anchor) or (#anchor) on the same page.
LINK = re.compile(r"\]\(([\w/.-]*?\.md)?#([\w-]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    found: set[str] = set()
    seen: Counter[str] = Counter()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if heading:
            anchor = github_anchor(heading.group(1))
            # A repeated heading gets -1, -2... as on GitHub.
            found.add(f"{anchor}-{seen[anchor]}" if seen[anchor] else anchor)
            seen[anchor] += 1
    return frozenset(found)


def citing_files() -> list[Path]:
    files = [p for p in CITING if p.is_file()]
    for folder in (p for p in CITING if p.is_dir()):
        files += [p for p in folder.rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return sorted(files)


def citations() -> list[tuple[str, Path, str]]:
    """(where, cited file, anchor) for every citation in the code, tests and README."""
    found = []
    for path in citing_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            found.append((where, DOCS / match.group(1), match.group(2)))
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for match in LINK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            target = path.parent / match.group(1) if match.group(1) else path
            found.append((f"{path.relative_to(ROOT)}:{line}", target, match.group(2)))
    return found


CITATIONS = citations()


def test_the_code_cites_the_notes() -> None:
    from_code = {target.name for where, target, _ in CITATIONS if where.startswith("rag/")}
    assert "cloudflare.md" in from_code
    assert {"design.md", "cloudflare.md"} <= {target.name for _, target, _ in CITATIONS}


@pytest.mark.parametrize(("where", "target", "anchor"), CITATIONS, ids=[c[0] for c in CITATIONS])
def test_every_citation_resolves(where: str, target: Path, anchor: str) -> None:
    assert target.is_file(), f"{where} cites {target.relative_to(ROOT)}, which does not exist"
    assert anchor in anchors(target), (
        f"{where} cites #{anchor}, not a heading of {target.relative_to(ROOT)}: "
        f"{sorted(anchors(target))}"
    )


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Answer stream", "answer-stream"),
        ("Ingestion: idempotent and resumable", "ingestion-idempotent-and-resumable"),
        ("Cost, budget and fallback", "cost-budget-and-fallback"),
        ("Vectorize v2", "vectorize-v2"),
        ("The `done` event", "the-done-event"),
    ],
)
def test_anchors_are_made_as_github_makes_them(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor
