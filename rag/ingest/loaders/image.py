"""Images (PNG, JPEG, TIFF, WebP): text recognised by OCR, a section per page.

Decoding happens in the OCR worker process, never here: an image is untrusted input, and
a decompression bomb or a decoder crash must cost one file. The first page's call also
counts the pages (a TIFF holds one per frame), so a file over ``ocr.max_pages`` is skipped
after one cheap call, before any more are read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from rag.config import IngestSettings, OcrSettings
from rag.domain import LoadedDocument
from rag.errors import UnreadableDocument, UnsupportedDocument
from rag.ingest import ocr as ocr_engine
from rag.ingest.loaders.ocr_pages import recognise
from rag.ingest.loaders.pdf import MIN_TEXT_CHARS
from rag.ingest.ocr.worker import image_page

MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
}


def load_image(path: Path, settings: IngestSettings, ocr: OcrSettings) -> LoadedDocument:
    """The text OCR finds in every page of an image file; a ``DocumentError`` otherwise."""
    if (cannot := ocr_engine.unavailable(ocr)) is not None:
        raise UnsupportedDocument(f"images are read by OCR, and {cannot}")

    def call(index: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return image_page, (str(path), index, ocr.min_confidence, ocr.max_pages)

    first = recognise([0], call, ocr, settings)
    if 0 not in first.replies:
        raise UnreadableDocument(f"image could not be read: {first.skipped[0]}")
    frames = int(first.replies[0]["frames"])
    if frames > ocr.max_pages:
        raise UnsupportedDocument(
            f"image has {frames} pages, over the {ocr.max_pages} page limit (ocr.max_pages)"
        )
    rest = recognise(range(1, frames), call, ocr, settings)
    sections = first.sections + rest.sections
    if frames == 1:
        # A single picture has no pages to speak of: "page 1" would only be noise.
        sections = [msgspec.structs.replace(section, page=None) for section in sections]
    if sum(len(" ".join(section.text.split())) for section in sections) < MIN_TEXT_CHARS:
        # As for a PDF: a stray glyph (an edge read as "1") is not a document.
        raise UnsupportedDocument("no text recognised in the image")
    return LoadedDocument(
        title=path.stem,
        media_type=MEDIA_TYPES.get(path.suffix.lower(), "image"),
        sections=tuple(sections),
        pages=frames,
        recognised_pages=len(first.replies) + len(rest.replies),
        notes=tuple(rest.notes),
    )
