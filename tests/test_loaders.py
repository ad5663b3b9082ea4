"""Loaders: every format, every refusal reason, and the PDF worker's limits."""

from __future__ import annotations

import functools
import io
import operator
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import address_hog
import pytest
from fakes import make_pdf
from pypdf import PdfReader, PdfWriter
from pypdf.generic import DictionaryObject, NameObject, PdfObject

from rag.config import IngestSettings, load_settings
from rag.errors import DocumentError, NoTextLayer, UnreadableDocument, UnsupportedDocument
from rag.ingest.loaders import load, pdf, supported
from rag.ingest.loaders.pdf_worker import (
    WorkerCrashed,
    WorkerError,
    WorkerMemoryExceeded,
    WorkerPool,
    WorkerTimeout,
)
from rag.ingest.loaders.text import normalize_text

SETTINGS = IngestSettings()


def rewrite(
    pdf: bytes, *, blank: bool = False, user: str | None = None, algorithm: str = "RC4-128"
) -> bytes:
    """The PDF re-written by pypdf: a blank page only, or encrypted with ``user``."""
    writer = PdfWriter() if blank else PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    if blank:
        writer.add_blank_page(612, 792)
    if user is not None:
        writer.encrypt(user_password=user, owner_password="owner", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


TWO_PAGES = make_pdf(
    [["Page one talks about apples.", "A second line."], ["Page two talks about pears."]],
    title="Fruit Report",
)

MARKDOWN = """---
title: "Front Title"
tags: [a, b]
---
Preamble   paragraph.

# Guide

Intro text.

## Install

```bash
# not a heading
pip install rag
```

### Linux ###

Use apt.

## Use

Run it.
"""

HTML = """<!doctype html><html><head><title>Page Title</title>
<style>body { color: red }</style><script>alert("x")</script></head>
<body><nav><a href="/">Home</a></nav>
<h1>Main</h1><p>First   paragraph
 continues.</p><div>Block one</div><div>Block two<br>after break</div>
<h2>Details</h2><ul><li>item a</li><li>item b</li></ul>
<!-- a comment -->
<footer>Copyright</footer></body></html>"""


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    pool = WorkerPool()
    yield pool
    pool.close()


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_markdown(tmp_path: Path) -> None:
    doc = load(write(tmp_path, "guide.md", MARKDOWN), SETTINGS)
    assert doc.title == "Front Title" and doc.media_type == "text/markdown"
    got = [(s.heading_path, s.text) for s in doc.sections]
    assert got == [
        ((), "Preamble paragraph."),
        (("Guide",), "Guide\n\nIntro text."),
        (("Guide", "Install"), "Install\n\n```bash\n# not a heading\npip install rag\n```"),
        (("Guide", "Install", "Linux"), "Linux\n\nUse apt."),
        (("Guide", "Use"), "Use\n\nRun it."),
    ]


def test_markdown_title_falls_back_to_h1_then_stem(tmp_path: Path) -> None:
    assert load(write(tmp_path, "a.markdown", "text\n# First\n# Second\n"), SETTINGS).title == (
        "First"
    )
    assert load(write(tmp_path, "notes.md", "## Only h2\nbody"), SETTINGS).title == "notes"


def test_html(tmp_path: Path) -> None:
    doc = load(write(tmp_path, "page.html", HTML), SETTINGS)
    assert doc.title == "Page Title" and doc.media_type == "text/html"
    got = [(s.heading_path, s.text) for s in doc.sections]
    assert got == [
        (("Main",), "Main\n\nFirst paragraph continues.\n\nBlock one\nBlock two\nafter break"),
        (("Main", "Details"), "Details\n\n- item a\n- item b"),
    ]
    text = " ".join(s.text for s in doc.sections)
    for hidden in ("alert", "color", "Home", "Copyright", "comment"):
        assert hidden not in text


@pytest.mark.parametrize(
    ("name", "data", "media_type", "text"),
    [
        ("a.txt", "Hello\r\nworld\x00"[:-1] + "\n\n\n\nnext  para\t x", "text/plain", None),
        ("c.txt", "\ufeffBOM text", "text/plain", "BOM text"),
        ("d.txt", "caf\xe9 latin-1".encode("latin-1"), "text/plain", "café latin-1"),
        ("e.txt", "utf16 text".encode("utf-16"), "text/plain", "utf16 text"),
        ("f.txt", "Cafe\u0301 nfc\u00adsoft\x07bell", "text/plain", "Café nfcsoftbell"),
    ],
)
def test_plain_text(
    tmp_path: Path, name: str, data: str | bytes, media_type: str, text: str | None
) -> None:
    doc = load(write(tmp_path, name, data), SETTINGS)
    assert doc.media_type == media_type and doc.title == Path(name).stem
    assert [s.text for s in doc.sections] == [text or "Hello\nworld\n\nnext para x"]


@pytest.mark.parametrize(
    ("name", "data", "error", "reason"),
    [
        ("empty.txt", b"", UnsupportedDocument, "empty file"),
        ("blank.md", "  \n\n\t\n", UnsupportedDocument, "no text in the file"),
        (
            "bin.txt",
            b"\x7fELF\x02\x01\x00\x00" * 50,
            UnsupportedDocument,
            "binary content in a .txt",
        ),
        ("ctl.txt", bytes(range(1, 32)) * 40, UnsupportedDocument, "binary content in a .txt"),
        ("bin.html", b"<html>\x00\x00\x00", UnsupportedDocument, "binary content in a .html"),
        ("a.odt", b"PK\x03\x04", UnsupportedDocument, "unsupported file type '.odt'"),
        ("a.docx", b"PK\x03\x04", UnreadableDocument, "the .docx file is a damaged ZIP"),
        ("garbage.pdf", bytes(range(256)) * 8, UnreadableDocument, "PDF could not be opened: "),
        ("cut.pdf", TWO_PAGES[: len(TWO_PAGES) // 2], UnreadableDocument, "PDF could not be"),
        ("enc.pdf", rewrite(TWO_PAGES, user="secret"), UnreadableDocument, "PDF is encrypted"),
        ("blank.pdf", rewrite(TWO_PAGES, blank=True), NoTextLayer, "PDF has no text layer"),
    ],
)
def test_refusals(
    tmp_path: Path, name: str, data: bytes | str, error: type[DocumentError], reason: str
) -> None:
    with pytest.raises(error) as caught:
        load(write(tmp_path, name, data), SETTINGS)
    assert type(caught.value) is error
    assert caught.value.message.startswith(reason), caught.value.message
    # A blank PDF (NoTextLayer) is skipped too: it holds no text, nothing went wrong.
    skipped = issubclass(error, UnsupportedDocument)
    assert caught.value.status == ("skipped" if skipped else "failed")


def test_reasons_read_well(tmp_path: Path) -> None:
    tiny = IngestSettings(max_file_mb=0.001)
    with pytest.raises(UnsupportedDocument, match=r"^file is 0\.0 MB, over the 0\.001 MB limit"):
        load(write(tmp_path, "big.txt", "x" * 5000), tiny)
    with pytest.raises(UnsupportedDocument, match="over the 1 page limit"):
        load(write(tmp_path, "long.pdf", TWO_PAGES), IngestSettings(pdf_max_pages=1))
    with pytest.raises(UnreadableDocument, match="could not read file"):
        load(tmp_path / "missing.txt", SETTINGS)


def test_supported() -> None:
    assert supported(Path("a.PDF"), SETTINGS) and supported(Path("x/b.md"), SETTINGS)
    assert supported(Path("a.docx"), SETTINGS) and supported(Path("old.XLS"), SETTINGS)
    assert not supported(Path("a.odt"), SETTINGS) and not supported(Path("README"), SETTINGS)
    assert not supported(Path("a.pdf"), IngestSettings(extensions=(".md",)))


def test_pdf(tmp_path: Path) -> None:
    doc = load(write(tmp_path, "fruit.pdf", TWO_PAGES), SETTINGS)
    assert (doc.title, doc.media_type, doc.pages) == ("Fruit Report", "application/pdf", 2)
    assert [(s.page, s.text) for s in doc.sections] == [
        (1, "Page one talks about apples.\nA second line."),
        (2, "Page two talks about pears."),
    ]


def test_pdf_with_empty_user_password_opens(tmp_path: Path) -> None:
    untitled = make_pdf([["Only the owner password is set on this file."]])
    doc = load(write(tmp_path, "perm.pdf", rewrite(untitled, user="")), SETTINGS)
    assert doc.title == "perm"
    assert [s.text for s in doc.sections] == ["Only the owner password is set on this file."]


def test_pdf_aes256_opens_with_a_configured_password_only(tmp_path: Path) -> None:
    secret = "s3cret-Pa55"
    path = write(tmp_path, "aes.pdf", rewrite(TWO_PAGES, user=secret, algorithm="AES-256"))
    node: PdfObject = PdfReader(path).trailer
    for key in ("/Encrypt", "/CF", "/StdCF", "/CFM"):
        assert isinstance(node, DictionaryObject), key
        node = node[key]
    assert isinstance(node, NameObject) and node == "/AESV3"

    doc = load(path, IngestSettings(pdf_passwords=("wrong", secret)))
    assert doc.title == "Fruit Report" and doc.pages == 2
    assert [s.page for s in doc.sections] == [1, 2]
    assert doc.sections[0].text.startswith("Page one talks about apples.")

    with pytest.raises(UnreadableDocument) as none_configured:
        load(path, SETTINGS)
    assert none_configured.value.message == (
        "PDF is encrypted and needs a password; none is configured (ingest.pdf_passwords)"
    )
    wrong = IngestSettings(pdf_passwords=("wrong", "", "also-wrong", "wrong"))
    with pytest.raises(UnreadableDocument) as none_opens:
        load(path, wrong)
    assert none_opens.value.message == (
        "PDF is encrypted and none of the 2 configured passwords opens it (ingest.pdf_passwords)"
    )
    assert "wrong" not in none_opens.value.message


def test_pdf_passwords_from_the_environment(tmp_path: Path) -> None:
    environ = {"RAG_INGEST__PDF_PASSWORDS": '["a b", "c\\"d"]'}
    settings = load_settings(write(tmp_path, "c.toml", "[ingest]\n"), environ)
    assert settings.ingest.pdf_passwords == ("a b", 'c"d')


def test_pdf_timeout_is_enforced(tmp_path: Path) -> None:
    # About two seconds of pypdf work; the limit is a twentieth of that.
    slow = make_pdf([[f"word {n}" for n in range(20000)]])
    path = write(tmp_path, "slow.pdf", slow)
    began = time.monotonic()
    with pytest.raises(UnreadableDocument, match=r"^PDF extraction timed out after 0\.1 s$"):
        load(path, IngestSettings(pdf_timeout_s=0.1))
    assert time.monotonic() - began < 1.5
    # The killed worker is replaced: the next file loads.
    assert load(write(tmp_path, "ok.pdf", TWO_PAGES), SETTINGS).pages == 2


def test_worker_timeout_and_recovery(pool: WorkerPool) -> None:
    with pytest.raises(WorkerTimeout):
        pool.call(time.sleep, (30,), timeout_s=0.2, memory_mb=512)
    assert pool.call(operator.add, (2, 3), timeout_s=10, memory_mb=512) == 5


def test_worker_reports_errors_and_stays_up(pool: WorkerPool) -> None:
    with pytest.raises(WorkerError, match="ZeroDivisionError"):
        pool.call(operator.truediv, (1, 0), timeout_s=10, memory_mb=512)
    assert pool.call(normalize_text, ("a  b",), timeout_s=10, memory_mb=512) == "a b"


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_worker_memory_limit(pool: WorkerPool) -> None:
    hog = functools.partial(operator.mul, b"x", 2**31)  # 2 GiB, written, not just reserved
    with pytest.raises(WorkerMemoryExceeded, match="512 MB"):
        pool.call(hog, (), timeout_s=30, memory_mb=512)
    assert pool.call(operator.add, (1, 1), timeout_s=10, memory_mb=512) == 2


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_the_memory_limit_counts_from_what_a_ready_worker_holds() -> None:
    # A warm OCR worker maps 1.3-1.6 GB for 0.2-0.7 GB resident: counted from zero, a
    # 1,536 MB limit left a page a few hundred megabytes of address space, then none.
    reserving = WorkerPool(preload=("address_hog:reserve",))
    try:
        assert reserving.call(address_hog.use, (300,), timeout_s=60, memory_mb=512) == 300 << 20
        with pytest.raises(WorkerMemoryExceeded, match="512 MB"):
            reserving.call(address_hog.use, (2048,), timeout_s=60, memory_mb=512)
    finally:
        reserving.close()


def test_a_worker_whose_call_raised_can_be_retired() -> None:
    retiring = WorkerPool(retire_on_error=True)
    try:
        first = retiring.call(os.getpid, (), timeout_s=30, memory_mb=512)
        with pytest.raises(WorkerError, match="ZeroDivisionError"):
            retiring.call(operator.truediv, (1, 0), timeout_s=30, memory_mb=512)
        assert retiring.call(os.getpid, (), timeout_s=30, memory_mb=512) != first
    finally:
        retiring.close()


def test_worker_crash_is_reported_and_replaced(pool: WorkerPool) -> None:
    with pytest.raises(WorkerCrashed, match="exit code 3"):
        pool.call(os._exit, (3,), timeout_s=10, memory_mb=512)
    assert pool.call(operator.add, (1, 2), timeout_s=10, memory_mb=512) == 3


def test_pdf_reasons_mask_passwords() -> None:
    error = ValueError("cannot use 'hunter22' or 'hunter2'\nsecond line")
    assert pdf._short(error, ("", "hunter2", "hunter22")) == "cannot use '***' or '***'"
