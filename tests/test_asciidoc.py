"""AsciiDoc reduced to text in the chunker's convention, on small samples written here.

The samples have the shapes of a manual page's source (as git's are written): an
underlined title, attribute entries, macros, cross references, definition lists with
continuations, listing and literal blocks, admonitions, a table, comments and
conditionals. What must come out: the text a reader sees, each unit whole in one chunk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.backends.local.answer_units import answer_units
from rag.backends.local.tokenizer import WordPieceTokenizer
from rag.config import IngestSettings
from rag.domain import LoadedDocument
from rag.ingest.chunker import chunk_document, document_text
from rag.ingest.loaders import load
from rag.ingest.loaders.asciidoc import looks_like_asciidoc

SETTINGS = IngestSettings()
TOKENIZER = WordPieceTokenizer()

MANUAL = """tool-fetch(1)
=============
:sep: {litdd}

NAME
----
tool-fetch - Download objects from another place

// a comment line that no reader sees
////
A comment block,
over two lines.
////

SYNOPSIS
--------
[verse]
'tool fetch' [<options>] [<place>]
\t  [--depth <depth>]

DESCRIPTION
-----------
Fetch objects, as linkgit:tool-pull[1] does, from the place named by
<<def_place,a place>> or <<places>>; see link:howto/setup.html[the setup guide] and
https://example.org/tool[the project page]. Use `tool fetch {sep}all` for
every place; *NOTE*: the 'quick' mode skips _nothing_ and +tags+.

include::fetch-options.txt[]
ifdef::tool-fetch[]
-a::
--all::
\tFetch every place.
\tThe places come from the configuration.
+
A second paragraph of the same option.
+
------------
$ tool fetch --all
    indented output line
------------

--depth=<depth>::
\tLimit fetching to the given number of commits
\t(the newest first).
endif::tool-fetch[]

[[places]]
PLACES
------
* A place is a URL or a path that is long enough
to wrap onto a second line.
** A nested item.
. First step.
. Second step.

NOTE: Places are tried in order.

[NOTE]
====
A note in a block.
====

.Example
....
literal   block   kept
....

  an indented literal paragraph

|===
|Name |Meaning
|origin |the place cloned from
|===

== Exit status
Zero on success.
"""


def load_text(tmp_path: Path, name: str, text: str) -> LoadedDocument:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return load(path, SETTINGS)


def chunks(doc: LoadedDocument, chunk_tokens: int) -> list[str]:
    drafts = chunk_document(
        doc, TOKENIZER, chunk_tokens, chunk_tokens // 6, max_chars=SETTINGS.max_chunk_chars
    )
    return [d.text for d in drafts]


@pytest.mark.parametrize("name", ["tool-fetch.txt", "tool-fetch.adoc", "docs/tool.asciidoc"])
def test_asciidoc_is_reduced_to_its_text(tmp_path: Path, name: str) -> None:
    doc = load_text(tmp_path, name, MANUAL)
    assert doc.media_type == "text/asciidoc" and doc.title == "tool-fetch(1)"
    assert [s.heading_path for s in doc.sections] == [
        ("tool-fetch(1)", "NAME"),
        ("tool-fetch(1)", "SYNOPSIS"),
        ("tool-fetch(1)", "DESCRIPTION"),
        ("tool-fetch(1)", "PLACES"),
        ("tool-fetch(1)", "Exit status"),  # "==" is the level a "-" underline is
    ]
    text = document_text(doc)
    for markup in ("linkgit:", "<<", ">>", "link:", "[the", "{sep}", "{litdd}", "include::",
                   "ifdef::", "endif::", "[[", "[verse]", "[NOTE]", "====", "----", "....",
                   "|===", "comment", "*NOTE*", "'quick'", "_nothing_", "+tags+", "\n+\n",
                   "-a::", ":sep:"):  # fmt: skip
        assert markup not in text, markup
    assert (
        "Fetch objects, as tool-pull(1) does, from the place named by\n"
        "a place or PLACES; see the setup guide and\n"
        "the project page. Use `tool fetch --all` for\n"
        "every place; NOTE: the quick mode skips nothing and tags." in text
    )
    units = [
        # A verse paragraph: code with its line breaks and indentation.
        "```\ntool fetch [<options>] [<place>]\n          [--depth <depth>]\n```",
        # A definition: its terms on one line, its paragraphs indented under them, the
        # listing attached by "+" indented with it, keeping its own indentation.
        "-a, --all\n    Fetch every place.\n    The places come from the configuration.\n"
        "    A second paragraph of the same option.\n\n"
        "    ```\n    $ tool fetch --all\n        indented output line\n    ```",
        "--depth=<depth>\n    Limit fetching to the given number of commits\n"
        "    (the newest first).",
        "- A place is a URL or a path that is long enough\n  to wrap onto a second line.",
        "  - A nested item.",
        "1. First step.\n\n1. Second step.",
        "Note: Places are tried in order.",
        "Note: A note in a block.",
        "Example\n\n```\nliteral   block   kept\n```",
        "```\nan indented literal paragraph\n```",
        "| Name | Meaning |\n| origin | the place cloned from |",
    ]
    for unit in units:
        assert unit in text, unit
        assert any(unit in chunk for chunk in chunks(doc, 60)), unit


def test_a_definition_reaches_the_answerer_as_prose_with_its_term(tmp_path: Path) -> None:
    # Its further paragraphs are prose of the same definition, not indented code.
    chunk = chunks(load_text(tmp_path, "tool-fetch.txt", MANUAL), 200)
    option = next(c for c in chunk if "-a, --all" in c)
    kinds = {option[u.start : u.end]: u.kind for u in answer_units(option)}
    assert kinds["A second paragraph of the same option."] == "sentence"
    assert kinds["$ tool fetch --all\n        indented output line"] == "code"


def test_attributes_titles_and_anchored_cross_references(tmp_path: Path) -> None:
    text = """= Tool Manual
:product: Tool
:version!:

[[intro]]
== Getting started
{product} needs nothing; {version} and {unknown} stay as written, \\{product} too.

=== Next steps
Read <<intro>> again.
"""
    doc = load_text(tmp_path, "manual.adoc", text)
    assert doc.title == "Tool Manual"
    assert [s.heading_path for s in doc.sections] == [
        ("Tool Manual", "Getting started"),
        ("Tool Manual", "Getting started", "Next steps"),
    ]
    body = document_text(doc)
    assert "Tool needs nothing; {version} and {unknown} stay as written, {product} too." in body
    assert "Read Getting started again." in body


@pytest.mark.parametrize(
    ("text", "asciidoc"),
    [
        (MANUAL, True),
        # Three signs and no title: an included fragment.
        ("-q::\n\tQuiet.\n+\nMore.\n+\nSee linkgit:tool[1].\n", True),
        # A title alone, a Markdown file, an rST file: not AsciiDoc.
        ("Notes\n=====\n\nA plain file with a title underline.\n", False),
        ("# Notes\n\nSee [the guide](guide.md) and <https://example.org>.\n", False),
        ("Title\n=====\n\nSee :ref:`intro` and ``code``::\n\n    x = 1\n", False),
        # Labelled lists: a term with its body on the same line or the next is AsciiDoc's
        # (git's option includes carry nothing else); rST's "::" is followed by a blank.
        ("--continue::\n\tGo on.\n--abort::\n\tStop.\n--quit::\n--skip::\n\tSkip.\n", True),
        ("`araxis`;; Use Araxis.\n`bc`;; Use Beyond Compare.\n`kdiff3`;; Use KDiff3.\n", True),
        ("For example::\n\n    x = 1\n\nAnd then::\n\n    y = 2\n\nOr::\n\n    z\n", False),
    ],
)
def test_asciidoc_is_recognised_by_its_markup(text: str, asciidoc: bool) -> None:
    assert looks_like_asciidoc(text) is asciidoc


def test_a_plain_txt_stays_plain_and_rst_stays_rst(tmp_path: Path) -> None:
    plain = load_text(tmp_path, "notes.txt", "Notes\n=====\n\nNothing but text [1].\n")
    assert plain.media_type == "text/plain"
    rst = "Title\n=====\n\n.. note::\n\n   See :ref:`intro`.\n"
    assert load_text(tmp_path, "_sources/a.txt", rst).media_type == "text/x-rst"


def test_unclosed_blocks_and_odd_input_never_fail(tmp_path: Path) -> None:
    text = "Title\n=====\n\nlinkgit:x[1]\n\n----\nunclosed listing\n+\n\n-a::\n+\n"
    doc = load_text(tmp_path, "odd.txt", text)
    assert "unclosed listing" in document_text(doc)
