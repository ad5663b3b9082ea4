"""Loaders: one file in, a ``LoadedDocument`` of normalised sections out.

``load`` checks what every format shares (extension, size, emptiness) and hands the
bytes to the format's module; PDFs and images go to bounded worker processes instead
(images, and PDF pages without text, are read by OCR: ``rag.ingest.ocr``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rag.config import IngestSettings, OcrSettings
from rag.domain import LoadedDocument
from rag.errors import UnreadableDocument, UnsupportedDocument
from rag.ingest.loaders import ocr_pages, pdf
from rag.ingest.loaders.html import load_html
from rag.ingest.loaders.image import MEDIA_TYPES, load_image
from rag.ingest.loaders.markdown import load_markdown
from rag.ingest.loaders.pdf import load_pdf
from rag.ingest.loaders.text import load_text

__all__ = ["close", "load", "readable_extensions", "supported"]

_BY_SUFFIX: dict[str, Callable[[Path, bytes], LoadedDocument]] = {
    ".txt": load_text,
    ".rst": load_text,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".html": load_html,
    ".htm": load_html,
}


def readable_extensions(settings: IngestSettings) -> list[str]:
    """The configured extensions that a loader reads, lower-case and sorted."""
    readable = {*_BY_SUFFIX, ".pdf", *MEDIA_TYPES}
    return sorted({ext.lower() for ext in settings.extensions} & readable)


def close() -> None:
    """Stop the PDF and OCR worker processes (they also stop at interpreter exit)."""
    pdf.close()
    ocr_pages.close()


def supported(path: Path, settings: IngestSettings) -> bool:
    """True when the extension is configured and a loader reads it."""
    return path.suffix.lower() in readable_extensions(settings)


def load(path: Path, settings: IngestSettings, ocr: OcrSettings | None = None) -> LoadedDocument:
    """Read one file; raises ``UnsupportedDocument`` (skipped) or ``UnreadableDocument`` (failed).

    Synchronous and possibly slow (a PDF may take up to ``ingest.pdf_timeout_s``, and OCR
    ``ocr.page_timeout_s`` a page): async callers run it in a thread. Safe to call from
    several threads at once. ``ocr`` defaults to the built-in ``[ocr]`` settings.
    """
    ocr = ocr or OcrSettings()
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
    if suffix == ".pdf":
        doc = load_pdf(path, settings, ocr)
    elif suffix in MEDIA_TYPES:
        doc = load_image(path, settings, ocr)
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UnreadableDocument(f"could not read file: {exc.strerror or exc}") from exc
        doc = _BY_SUFFIX[suffix](path, data)
    if not doc.sections:
        raise UnsupportedDocument("no text in the file (only whitespace or markup)")
    return doc
