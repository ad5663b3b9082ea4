"""Loaders: one file in, a ``LoadedDocument`` of normalised sections out.

``load`` checks what every format shares (extension, size, emptiness) and hands the
bytes to the format's module; PDFs, images and Office files go to bounded worker
processes instead (images, and PDF pages without text, are read by OCR: ``rag.ingest.ocr``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rag.config import IngestSettings, OcrSettings
from rag.domain import LoadedDocument
from rag.errors import UnreadableDocument, UnsupportedDocument
from rag.ingest.loaders import ocr_pages, office, pdf
from rag.ingest.loaders.asciidoc import asciidoc_document, load_asciidoc, looks_like_asciidoc
from rag.ingest.loaders.html import load_html
from rag.ingest.loaders.image import MEDIA_TYPES, load_image
from rag.ingest.loaders.markdown import load_markdown
from rag.ingest.loaders.pdf import load_pdf
from rag.ingest.loaders.rst import load_rst, looks_like_rst, rst_document
from rag.ingest.loaders.text import decode_text, load_text

__all__ = ["check_file", "close", "load", "readable_extensions", "supported"]


def _load_txt(path: Path, data: bytes) -> LoadedDocument:
    """Plain text, or rST when Sphinx published it (``_sources``) or its markup says so,
    or AsciiDoc when its markup says so (git's manual sources are .txt files)."""
    text = decode_text(data, path.suffix.lower())
    if looks_like_rst(path, text):
        return rst_document(path, text)
    if looks_like_asciidoc(text):
        return asciidoc_document(path, text)
    return load_text(path, data)


_BY_SUFFIX: dict[str, Callable[[Path, bytes], LoadedDocument]] = {
    ".txt": _load_txt,
    ".rst": load_rst,
    ".adoc": load_asciidoc,
    ".asciidoc": load_asciidoc,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".html": load_html,
    ".htm": load_html,
}


_IN_WORKERS: dict[str, Callable[[Path, IngestSettings, OcrSettings], LoadedDocument]] = {
    ".pdf": load_pdf,
    **dict.fromkeys(MEDIA_TYPES, load_image),
    **dict.fromkeys(
        office.EXTENSIONS, lambda path, settings, _ocr: office.load_office(path, settings)
    ),
}
"""Formats parsed in a bounded worker process: they read the file themselves (PDFs and
images with OCR where a page has no text)."""


def close() -> None:
    """Stop the PDF, OCR and Office worker processes (they also stop at interpreter exit)."""
    pdf.close()
    ocr_pages.close()
    office.close()


def readable_extensions(settings: IngestSettings) -> list[str]:
    """The configured extensions that a loader reads (or skips with a reason: legacy
    Office files), lower-case and sorted."""
    return sorted({ext.lower() for ext in settings.extensions} & {*_BY_SUFFIX, *_IN_WORKERS})


def supported(path: Path, settings: IngestSettings) -> bool:
    """True when the extension is configured and a loader reads it."""
    return path.suffix.lower() in readable_extensions(settings)


def check_file(path: Path, settings: IngestSettings) -> None:
    """What every file must pass before it is read: a configured extension a loader
    reads, a file there, not empty, within ``ingest.max_file_mb``. Raises a ``DocumentError``."""
    suffix = path.suffix.lower()
    if not supported(path, settings):
        raise UnsupportedDocument(f"unsupported file type {suffix or '(no extension)'!r}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnreadableDocument(f"could not read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise UnsupportedDocument("empty file")
    limit = settings.max_file_mb
    if size > limit * 1024 * 1024:
        raise UnsupportedDocument(
            f"file is {size / 2**20:.1f} MB, over the {limit:g} MB limit (ingest.max_file_mb)"
        )


def load(path: Path, settings: IngestSettings, ocr: OcrSettings | None = None) -> LoadedDocument:
    """Read one file; raises ``UnsupportedDocument`` (skipped) or ``UnreadableDocument`` (failed).

    Synchronous and possibly slow (a PDF or an Office file may take up to
    ``ingest.pdf_timeout_s``, and OCR ``ocr.page_timeout_s`` a page): async callers run it
    in a thread. Safe to call from several threads at once. ``ocr`` defaults to the
    built-in ``[ocr]`` settings.
    """
    check_file(path, settings)
    suffix = path.suffix.lower()
    if suffix in _IN_WORKERS:
        doc = _IN_WORKERS[suffix](path, settings, ocr or OcrSettings())
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UnreadableDocument(f"could not read file: {exc.strerror or exc}") from exc
        doc = _BY_SUFFIX[suffix](path, data)
    if not doc.sections:
        raise UnsupportedDocument("no text in the file (only whitespace or markup)")
    return doc
