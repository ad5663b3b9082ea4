"""Scans made at test time from the handbook's own PDFs: a page rendered with pypdfium2,
cropped to its top part (so a page reads in a second or two), kept as a Pillow image to
save as PNG, TIFF or an image-only PDF, or with a stray caption in a text layer."""

from __future__ import annotations

import ctypes
import io
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as raw
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


def captioned(image: Image.Image, caption: str) -> bytes:
    """``image`` as an image-only PDF page with ``caption`` in its text layer, small, at
    the bottom: what a scanner's stamp or a chart's label leaves."""
    buffer = io.BytesIO()
    image.save(buffer, format="PDF", resolution=150)
    document = pdfium.PdfDocument(buffer.getvalue())
    try:
        page = document[0]
        font = raw.FPDFText_LoadStandardFont(document, b"Helvetica")
        text = raw.FPDFPageObj_CreateTextObj(document, font, 9.0)
        utf16 = ctypes.c_char_p((caption + "\0").encode("utf-16-le"))  # what pdfium takes
        raw.FPDFText_SetText(text, ctypes.cast(utf16, ctypes.POINTER(raw.FPDF_WCHAR)))
        raw.FPDFPageObj_Transform(text, 1, 0, 0, 1, 20, 5)
        raw.FPDFPage_InsertObject(page, text)
        raw.FPDFPage_GenerateContent(page)
        out = io.BytesIO()
        document.save(out)
    finally:
        document.close()
    return out.getvalue()
