"""OCR: text recognised from scanned PDF pages and image files, with its confidence.

* ``page``: what is kept of one page image (orientation, the confidence cut); any engine.
* ``rapid``: the local engine, rapidocr with its bundled models, offline.
* ``worker``: runs in the bounded worker process: renders or decodes a page, reads it.

The parent's side (one worker call per page, each with its own time limit) sits with the
loaders that use it, beside the worker plumbing: ``rag.ingest.loaders.ocr_pages``.

The local engine is an optional install (the ``ocr`` extra); ``unavailable`` says why a
scan cannot be read here, and that reason is what a skipped file records.
"""

from __future__ import annotations

from importlib.util import find_spec

from rag.config import OcrSettings

NEEDED = ("rapidocr", "pypdfium2", "PIL")
"""What the local engine imports: the recogniser, the PDF renderer and the image decoder."""


def unavailable(ocr: OcrSettings) -> str | None:
    """Why OCR cannot run in this installation, or None when it can."""
    if not ocr.enabled:
        return "OCR is turned off (ocr.enabled = false)"
    if ocr.engine == "workers-ai":
        # The loaders then raise NoTextLayer for a scan, which rag.ingest.convert sends to
        # Workers AI's Markdown conversion.
        return 'scans are read by Workers AI (ocr.engine = "workers-ai")'
    missing = [name for name in NEEDED if find_spec(name) is None]
    if missing:
        return "OCR is not installed (pip install 'rag[ocr]')"
    return None
