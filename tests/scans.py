"""Scans made at test time from the handbook's own PDFs: a page rendered with pypdfium2,
cropped to its top part (so a page reads in a second or two), kept as a Pillow image to
save as PNG, TIFF or an image-only PDF."""

from __future__ import annotations

from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image

CORPUS = Path(__file__).parents[1] / "corpus"


def top_of_page(pdf: str, page: int = 0, share: float = 0.4) -> Image.Image:
    """The top ``share`` of a handbook page, rendered at 150 dpi like a scan."""
    document = pdfium.PdfDocument(CORPUS / pdf)
    try:
        image: Image.Image = document[page].render(scale=150 / 72).to_pil().convert("RGB")
    finally:
        document.close()
    return image.crop((0, 0, image.width, int(image.height * share)))


def words(text: str) -> str:
    return " ".join(text.lower().split())
