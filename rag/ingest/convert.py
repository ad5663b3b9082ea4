"""Workers AI's Markdown conversion in ingestion (``[ocr] engine = "workers-ai"``), with
the local loaders as the fallback.

What goes to the converter: Office packages, images, and PDFs in which the local loader
finds no text layer (scans). A PDF with a text layer is read locally: exactly, for
free, page by page. An Office file passes the local checks first (size, and the
container's kind and zip-bomb limits, ``ooxml.package_problem``): a file refused here is
never uploaded.

When a conversion fails (the call, after the client's retries, or Cloudflare's answer
for that one file: an outage, the day's neurons spent, degraded mode), the file is read
locally, and the run says so: a "fallback" entry among the run's problems, with the
reason, and a log line. Scans and images are then read by the local OCR engine, when it
is installed (``rag.ingest.ocr``); without it they fail with both reasons, since the
service, not the file, is what went wrong. A TIFF, which the converter does not take, is
read by local OCR from the start.

The converter's Markdown has no pages, so a deck converted remotely is cited without
slide numbers; read locally, it keeps them. Its sections come from ``markdown.py``, the
parser every Markdown file goes through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec

from rag.config import IngestSettings, OcrSettings
from rag.domain import LoadedDocument
from rag.errors import ConversionFailed, NoTextLayer, RagError, UnreadableDocument
from rag.ingest import loaders
from rag.ingest import ocr as ocr_engine
from rag.ingest.loaders import check_file
from rag.ingest.loaders.image import MEDIA_TYPES as IMAGE_TYPES
from rag.ingest.loaders.markdown import load_markdown
from rag.ingest.loaders.office import MEDIA_TYPES
from rag.ingest.loaders.ooxml import package_problem
from rag.ports import DocumentConverter, Loader

IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
"""The images Cloudflare's supported-formats page lists that rag may be given."""
CONVERTED = {**MEDIA_TYPES, **IMAGES}
"""What is sent to the converter at once, by extension, with the media type sent."""


async def load(
    path: Path,
    settings: IngestSettings,
    converter: DocumentConverter,
    local: Loader,
    fell_back: Callable[[str], None],
    ocr: OcrSettings,
) -> LoadedDocument:
    """The file converted, or read by ``local`` (``fell_back`` told why) when that fails;
    scans and images by the local OCR engine under ``ocr``'s other settings."""
    suffix = path.suffix.lower()
    recognise = suffix in IMAGE_TYPES
    scan: NoTextLayer | None = None
    if suffix == ".pdf":
        try:
            return await asyncio.to_thread(local, path, settings)
        except NoTextLayer as exc:
            scan, media_type, recognise = exc, "application/pdf", True
    elif suffix in CONVERTED:
        media_type = CONVERTED[suffix]
        await asyncio.to_thread(_check, path, suffix, settings)
    else:
        return await _locally(path, settings, local, ocr, recognise)
    try:
        data = await asyncio.to_thread(path.read_bytes)
        converted = await converter.convert(path.name, data, media_type)
        doc = load_markdown(path, converted.markdown.encode())
        if not doc.sections:
            raise ConversionFailed(f"{converter.name} returned no text for {path.name}")
    except OSError as exc:
        raise UnreadableDocument(f"could not read file: {exc.strerror or exc}") from exc
    except RagError as exc:
        instead = "by local OCR" if recognise else "locally"
        if recognise and (cannot := ocr_engine.unavailable(local_ocr(ocr))) is not None:
            whose = f"{scan.message}; its" if scan is not None else "the image's"
            raise ConversionFailed(
                f"{whose} conversion failed: {exc.message}; local OCR cannot read it instead:"
                f" {cannot}"
            ) from exc
        fell_back(f"the {converter.name} conversion failed, read {instead} instead: {exc.message}")
        return await _locally(path, settings, local, ocr, recognise)
    return msgspec.structs.replace(doc, media_type=media_type)


def local_ocr(ocr: OcrSettings) -> OcrSettings:
    """``ocr`` with the local engine: what reads a scan or an image here when the
    converter cannot (and, under the workers-ai engine, whether anything can)."""
    return msgspec.structs.replace(ocr, engine="local")


async def _locally(
    path: Path, settings: IngestSettings, local: Loader, ocr: OcrSettings, recognise: bool
) -> LoadedDocument:
    """The file read here: a scan or an image by the local OCR engine, anything else by
    ``local`` (which, under the workers-ai engine, leaves scans to the converter)."""
    if recognise:
        return await asyncio.to_thread(loaders.load, path, settings, local_ocr(ocr))
    return await asyncio.to_thread(local, path, settings)


def _check(path: Path, suffix: str, settings: IngestSettings) -> None:
    """The local loader's own refusals, before anything is uploaded."""
    check_file(path, settings)
    if suffix in MEDIA_TYPES:
        limit = int(settings.office_max_unzipped_mb * 2**20)
        if (problem := package_problem(path, suffix, limit)) is not None:
            raise UnreadableDocument(problem)
