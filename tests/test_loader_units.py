"""Loaders keep the units that carry meaning, drop boilerplate, and chunks keep them whole.

Every format on small inline fixtures: a wrapped list item, indented code, a table with
its header, a definition with its term, a Sphinx HTML page with its sidebar and
permalinks, a Sphinx ``_sources`` .txt with roles and directives, a PDF with a running
header, footer and page numbers; then the handbook PDFs' chunks against their pages.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import make_pdf
from pypdf import PdfReader

from rag.backends.local.tokenizer import WordPieceTokenizer
from rag.config import IngestSettings
from rag.domain import LoadedDocument
from rag.ingest.chunker import chunk_document, document_text
from rag.ingest.loaders import load
from rag.ingest.loaders.page_furniture import strip_furniture

SETTINGS = IngestSettings()
TOKENIZER = WordPieceTokenizer()
CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def text_of(doc: LoadedDocument) -> str:
    return document_text(doc)


def chunk_texts(doc: LoadedDocument, chunk_tokens: int = 200) -> list[str]:
    drafts = chunk_document(
        doc, TOKENIZER, chunk_tokens, chunk_tokens // 6, max_chars=SETTINGS.max_chunk_chars
    )
    return [d.text for d in drafts]


def assert_in_one_chunk(doc: LoadedDocument, unit: str, chunk_tokens: int) -> None:
    assert unit in text_of(doc), unit
    assert any(unit in text for text in chunk_texts(doc, chunk_tokens)), unit


# Markdown and plain text: the same units, written as people write them.

MARKDOWN = """# Setup

Filler sentence number one about nothing in particular. Another filler sentence here.

- The first item is long enough that it wraps
  onto a second line, which belongs to it.
- A second item.

| setting | default | meaning |
|---------|---------|---------|
| chunk_tokens | 200 | tokens per chunk |
| overlap_tokens | 32 | tokens shared by neighbours |

Install it like this:

    python3 -m venv .venv
    if true; then
        .venv/bin/pip install rag
    fi

chunk size
    How many tokens a chunk holds at most,
    counted by the embedding model's tokenizer.

overlap: how many tokens two neighbouring chunks share.
"""

MARKDOWN_UNITS = [
    "- The first item is long enough that it wraps\n  onto a second line, which belongs to it.",
    "| setting | default | meaning |\n|---------|---------|---------|\n"
    "| chunk_tokens | 200 | tokens per chunk |",
    "    if true; then\n        .venv/bin/pip install rag\n    fi",
    "chunk size\n    How many tokens a chunk holds at most,\n"
    "    counted by the embedding model's tokenizer.",
    "overlap: how many tokens two neighbouring chunks share.",
]


@pytest.mark.parametrize("name", ["guide.md", "guide.txt"])
def test_markdown_and_text_keep_units(tmp_path: Path, name: str) -> None:
    doc = load(write(tmp_path, name, MARKDOWN), SETTINGS)
    for unit in MARKDOWN_UNITS:
        # Small chunks: the units must still come out whole, each in some chunk.
        assert_in_one_chunk(doc, unit, 60)


def test_markdown_fenced_code_keeps_fences_and_spacing(tmp_path: Path) -> None:
    text = "# Code\n\nRun:\n\n```python\ndef f():\n    return {'a':   1}\n```\n"
    doc = load(write(tmp_path, "code.md", text), SETTINGS)
    code = "```python\ndef f():\n    return {'a':   1}\n```"
    assert code in text_of(doc)
    # The lead-in ending in ":" stays with the code it introduces.
    assert any(f"Run:\n\n{code}" in t for t in chunk_texts(doc, 40))


# HTML, Sphinx-generated.

SPHINX_HTML = """<!DOCTYPE html>
<html><head><title>4. Control Flow &#8212; Docs 3.11</title></head>
<body>
<div class="related" role="navigation" aria-label="related navigation">
  <h3>Navigation</h3>
  <ul><li><a href="genindex.html">index</a></li><li><a href="py-modindex.html">modules</a> |</li>
  <li><a href="next.html">next</a> |</li><li><a href="prev.html">previous</a> |</li>
  <li><a href="index.html">Docs</a> &#187;</li></ul>
</div>
<div class="document"><div class="documentwrapper"><div class="bodywrapper">
<div class="body" role="main">
<section id="control-flow">
<h1>4. Control Flow<a class="headerlink" href="#control-flow" title="Permalink">¶</a></h1>
<p>Use the <a class="reference internal" href="#"><code>with</code></a> statement.</p>
<ul class="simple">
<li><p>The first item is long enough that it wraps
onto a second line, which belongs to it.</p></li>
<li><p>A second item.</p>
<ol><li>nested first</li><li>nested second</li></ol></li>
</ul>
<table class="docutils"><thead><tr><th>setting</th><th>default</th></tr></thead>
<tbody><tr><td>chunk_tokens</td><td>200</td></tr><tr><td>overlap_tokens</td><td>32</td></tr>
</tbody></table>
<p>For example:</p>
<div class="highlight-python3 notranslate"><div class="highlight"><pre><span></span>
<span class="k">def</span> <span class="nf">f</span><span class="p">():</span>
    <span class="k">return</span>   <span class="mi">1</span>
</pre></div></div>
<dl class="py function">
<dt class="sig sig-object py" id="os.path.join"><span class="sig-name">join</span>(<em>path</em>, <em>*paths</em>)<a class="headerlink" href="#os.path.join">¶</a></dt>
<dd><p>Join one or more path segments.</p></dd>
</dl>
</section>
</div></div></div>
<div class="sphinxsidebar" role="navigation" aria-label="main navigation">
<div class="sphinxsidebarwrapper"><h3>This Page</h3><ul class="this-page-menu">
<li><a href="bugs.html">Report a Bug</a></li><li><a href="_sources/x.rst.txt">Show Source</a></li>
</ul><div id="searchbox" role="search"><h3>Quick search</h3><form><input type="text"/></form></div>
</div></div></div>
<div class="footer">&copy; Copyright 2001-2023. <a href="#">Found a bug</a>?</div>
</body></html>
"""  # noqa: E501 - markup as Sphinx writes it


def test_sphinx_html_keeps_units_and_drops_navigation(tmp_path: Path) -> None:
    doc = load(write(tmp_path, "controlflow.html", SPHINX_HTML), SETTINGS)
    text = text_of(doc)
    assert doc.sections[0].heading_path == ("4. Control Flow",)
    for junk in ("¶", "This Page", "Report a Bug", "Show Source", "Navigation", "previous",
                 "modules", "Quick search", "Copyright", "Found a bug"):  # fmt: skip
        assert junk not in text, junk
    units = [
        "- The first item is long enough that it wraps onto a second line, which belongs to it.",
        "- A second item.\n  1. nested first\n  2. nested second",
        "| setting | default |\n| chunk_tokens | 200 |\n| overlap_tokens | 32 |",
        "For example:\n\n```python3\ndef f():\n    return   1\n```",
        "join(path, *paths)\n    Join one or more path segments.",
    ]
    for unit in units:
        assert_in_one_chunk(doc, unit, 40)


def test_html_without_a_main_landmark_still_drops_chrome(tmp_path: Path) -> None:
    page = (
        "<html><body><div role='navigation'>Home | Docs</div>"
        "<nav aria-label='Breadcrumb'>Docs &gt; Guide</nav>"
        "<h2 id='x'>Guide<a href='#x'>#</a></h2><p>Body text.</p></body></html>"
    )
    doc = load(write(tmp_path, "plain.html", page), SETTINGS)
    assert [(s.heading_path, s.text) for s in doc.sections] == [(("Guide",), "Guide\n\nBody text.")]


# rST, and the .txt copies Sphinx publishes under _sources.

SPHINX_SOURCE = """.. _tut-flow:

****************
4. Control Flow
****************

.. index::
   single: statement; with

Use the :keyword:`with` statement, see :ref:`the tutorial <tut-intro>`,
:func:`~os.path.join` and :class:`!Path`; ``x = 1`` is a literal and
`PEP 8 <https://peps.python.org/pep-0008/>`_ a link [#]_. A role may wrap, as
:ref:`this one
<wrapped-target>` does.

Using lists
===========

* The first item is long enough that it wraps
  onto a second line, which belongs to it.
* A second item.

.. note::

   Unlike other languages, special characters such as ``\\n`` have the
   same meaning with both quotes.

.. versionadded:: 3.2

.. code-block:: python
   :linenos:

   def f():
       return   1

For example::

   >>> f()
   1

.. function:: join(path, *paths)

   Join one or more path segments.

   :param path: the first segment

chunk size
   How many tokens a chunk holds at most.

.. toctree::
   :maxdepth: 2

   intro

.. [#] A footnote.
"""


@pytest.mark.parametrize(
    "name", ["flow.rst", "_sources/tutorial/flow.rst.txt", "html/_sources/flow.txt"]
)
def test_rst_and_sphinx_sources_reduce_markup_to_text(tmp_path: Path, name: str) -> None:
    doc = load(write(tmp_path, name, SPHINX_SOURCE), SETTINGS)
    assert doc.media_type == "text/x-rst" and doc.title == "4. Control Flow"
    assert [s.heading_path for s in doc.sections] == [
        ("4. Control Flow",),
        ("4. Control Flow", "Using lists"),
    ]
    text = text_of(doc)
    for markup in (":keyword:", ":ref:", ":func:", "``x", ".. ", "::", "tut-", "<https", "[#]_",
                   "toctree", "maxdepth", "single:", "linenos"):  # fmt: skip
        assert markup not in text, markup
    assert (
        "Use the with statement, see the tutorial,\njoin and Path; `x = 1` is a literal and\n"
        "PEP 8 a link. A role may wrap, as\nthis one does." in text
    )
    units = [
        "* The first item is long enough that it wraps\n  onto a second line, which belongs to it.",
        "Note: Unlike other languages, special characters such as `\\n` have the\n"
        "same meaning with both quotes.",
        "New in version 3.2.",
        "```python\ndef f():\n    return   1\n```",
        "For example:\n\n```\n>>> f()\n1\n```",
        "join(path, *paths)\n    Join one or more path segments.\n\n"
        "    param path: the first segment",
        "chunk size\n   How many tokens a chunk holds at most.",
    ]
    for unit in units:
        assert_in_one_chunk(doc, unit, 40)


def test_plain_txt_is_not_taken_for_rst(tmp_path: Path) -> None:
    text = "Notes\n=====\n\nA plain file with a title underline: nothing else of rST.\n"
    doc = load(write(tmp_path, "notes.txt", text), SETTINGS)
    assert doc.media_type == "text/plain" and doc.sections[0].text == text.strip()


# PDF: running headers, footers and page numbers.


def running_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A PDF whose pages carry a running header, "Page N of M" and a bare page number."""
    total = len(pages)
    path.write_bytes(
        make_pdf(
            [
                ["ACME Handbook - Confidential", *lines, f"Page {n} of {total}", str(n)]
                for n, lines in enumerate(pages, 1)
            ]
        )
    )
    return path


FRUIT = ["Apples grow on trees.", "Pears ripen late.", "Plums are stone fruit.", "Figs like heat."]


def test_pdf_running_header_footer_and_page_numbers_are_dropped(tmp_path: Path) -> None:
    pages = [[fruit, f"Harvest {fruit.split()[0].lower()} in season {n}."] for n, fruit in
             enumerate(FRUIT, 1)]  # fmt: skip
    doc = load(running_pdf(tmp_path / "acme.pdf", pages), SETTINGS)
    assert [(s.page, s.text) for s in doc.sections] == [
        (n, "\n".join(lines)) for n, lines in enumerate(pages, 1)
    ]


def test_page_furniture_keeps_pages_that_are_only_their_repeated_line() -> None:
    # Slides or image pages whose only text is the same label: that is their content.
    assert strip_furniture(["habibi", "habibi\n2", "habibi", "habibi"]) == ["habibi"] * 4


def test_page_furniture_keeps_content_that_only_looks_like_it() -> None:
    pages = [f"Intro {n}\nThe body of page {n}.\n42\nThe end of page {n}." for n in range(3)]
    # A number inside the page is content; only the edges are furniture.
    assert strip_furniture(pages) == pages
    two = ["Same first line\nbody one", "Same first line\nbody two"]
    assert strip_furniture(two) == two  # two pages cannot tell a running header


def test_handbook_pdf_chunks_hold_one_page_each() -> None:
    for name in ("operations-runbook.pdf", "release-notes.pdf"):
        doc = load(CORPUS / name, SETTINGS)
        pages = [" ".join(page.extract_text().split()) for page in PdfReader(CORPUS / name).pages]
        drafts = chunk_document(
            doc, TOKENIZER, SETTINGS.chunk_tokens, SETTINGS.overlap_tokens,
            max_chars=SETTINGS.max_chunk_chars,
        )  # fmt: skip
        assert drafts
        for draft in drafts:
            assert draft.page_start == draft.page_end
            # Any quote from the chunk is on the page the chunk names.
            assert draft.page_start is not None
            quote = " ".join(draft.text.split())
            assert quote in pages[draft.page_start - 1]
            assert "Page " not in quote or " of " not in quote.split("Page ", 1)[1][:6]
            assert "rag handbook -" not in quote
