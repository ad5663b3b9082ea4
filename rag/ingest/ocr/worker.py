"""Runs in the OCR worker process: turn one page of a file into pixels, then read it.

The parent (``pages``) sends one call per page, so each page has its own time limit and
a page that runs over costs that page only. The recogniser is built once per process by
``warm`` (the worker pool's start-up hook), so only the first page of a worker's life
pays the 1-2 s of model loading.

Everything returned is plain data: it crosses a pipe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rag.ingest.ocr.page import read_page
from rag.ingest.ocr.rapid import RapidRecogniser
from rag.ports import Recogniser

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage

MAX_SIDE = 4000
"""Pixels on an image's long side beyond which it is shrunk before reading: the recogniser
shrinks anything over 2,000 anyway, and a poster-sized page at 150 dpi or a 50-megapixel
photo would otherwise cost hundreds of megabytes per copy."""

_recogniser: Recogniser | None = None


def warm() -> None:
    """Load the recogniser now (the pool calls this as the worker starts)."""
    global _recogniser
    recogniser = RapidRecogniser()
    recogniser.warm()
    _recogniser = recogniser


def _read(image: PilImage, min_confidence: float) -> dict[str, Any]:
    if _recogniser is None:
        warm()
    assert _recogniser is not None
    pixels = np.asarray(image, dtype=np.uint8)
    page = read_page(_recogniser, pixels, min_confidence)
    return {"text": page.text, "confidence": page.confidence, "turns": page.turns}


def pdf_page(path: str, index: int, password: str, dpi: int, min_confidence: float) -> Any:
    """Render page ``index`` (0-based) at ``dpi`` and read it."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(path, password=password or None)
    try:
        page = pdf[index]
        width, height = page.get_size()  # points, 1/72 inch
        scale = min(dpi / 72, MAX_SIDE / max(width, height, 1.0))
        image = page.render(scale=scale).to_pil().convert("RGB")
    finally:
        pdf.close()
    return _read(image, min_confidence)


def image_page(path: str, index: int, min_confidence: float, max_pages: int) -> Any:
    """Read frame ``index`` of an image file (a TIFF holds one per page), with the count of
    frames; nothing is read from a file of more than ``max_pages``, which will be skipped."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        frames = int(getattr(opened, "n_frames", 1))
        if frames > max_pages:
            return {"frames": frames, "text": "", "confidence": None, "turns": 0}
        opened.seek(index)
        # JPEG decodes at a fraction of its size for free when asked first.
        opened.draft("RGB", (MAX_SIDE, MAX_SIDE))
        # A camera or phone records "rotate me" in EXIF rather than turning the pixels;
        # the recogniser sees raw pixels, so apply it here.
        image = ImageOps.exif_transpose(opened)
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        image = _on_white(image)
    return {"frames": frames, **_read(image, min_confidence)}


def _on_white(image: PilImage) -> PilImage:
    """RGB, with any transparency laid over white: dark text on a transparent PNG would
    otherwise turn into dark text on black."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
