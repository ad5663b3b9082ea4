"""What an uploaded file is, judged by its bytes: the stored type must match the content.

Signatures are checked where their formats put them, at byte 0, never "somewhere in
the first KiB":

* A PDF starts with ``%PDF-``. ISO 32000 puts the header on the file's first line, and
  pypdf reads it at offset 0 (a leading BOM, whitespace or anything else is what its
  strict mode rejects). Acrobat's tolerance of up to 1 KiB of junk first is what
  polyglot files (a PDF that is also an executable or an HTML page) rely on, so it is
  not copied here: no prefix at all.
* Executables are refused whatever their extension: ELF (``\\x7fELF``), Mach-O (the
  four magics and the fat header) and PE (``MZ`` *and* a ``PE\\0\\0`` header where its
  DOS stub points). ``MZ`` alone is not enough: a text file may well start with it.
* Text formats must decode the way the text loader decodes them (no NUL byte, not
  mostly control characters), and must not be another format in disguise (a PDF or a
  ZIP named ``.txt``). A script starting with ``#!`` is text: it is stored as text
  (never with an executable bit), which is exactly what it is.
* Office files are ZIP packages (``PK\\x03\\x04`` at byte 0) whose directory holds
  ``[Content_Types].xml`` and the main parts of the kind the extension names (``word/``
  for ``.docx`` and ``.docm``, ``xl/``, ``ppt/``): a ``.docx`` that holds a workbook, or
  any other ZIP, is refused. Only the ZIP's central directory is read here; the loader
  applies the zip-bomb limits (``rag.ingest.loaders.ooxml``).
* Legacy binary Office files (``.doc``, ``.xls``, ``.ppt``; OLE2, ``D0 CF 11 E0``) are
  refused with the format to save them as: a folder ingest records them as skipped,
  but an upload can say so at once, and nothing is stored.
* Images (read by OCR) start with their format's signature: PNG's eight bytes, JPEG's
  start-of-image marker, TIFF's byte-order mark and 42, WebP's RIFF header naming WEBP.
  A JPEG named ``.png`` is still an image the decoder reads, so any image signature is
  accepted under any image extension; what is checked is that it is an image at all.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from rag.errors import RagError, UnsupportedDocument
from rag.ingest.loaders.image import MEDIA_TYPES as IMAGE_TYPES
from rag.ingest.loaders.ooxml import (
    LEGACY,
    MAIN_FOLDER,
    OLE2_MAGIC,
    ZIP_MAGIC,
    legacy_reason,
    package_problem,
)
from rag.ingest.loaders.text import decode_text

HEAD_BYTES = 4096

_MACHO = (
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # fat (universal) binary; Java classes share it, and are no text either
)
_IMAGES = {
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
}
_CONTAINERS = {ZIP_MAGIC: "a ZIP archive", OLE2_MAGIC: "an OLE2 file"}


class UnsupportedMedia(RagError):
    status_code = 415
    code = "unsupported_media_type"


def executable(head: bytes) -> str | None:
    """The kind of executable ``head`` starts, or None."""
    if head.startswith(b"\x7fELF"):
        return "an ELF executable"
    if head.startswith(_MACHO):
        return "a Mach-O executable"
    if head.startswith(b"MZ") and len(head) >= 0x40:
        (offset,) = struct.unpack_from("<I", head, 0x3C)
        if head[offset : offset + 4] == b"PE\x00\x00":
            return "a Windows (PE) executable"
    return None


def image_format(head: bytes) -> str | None:
    """The image format ``head`` starts, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    return next((name for magic, name in _IMAGES.items() if head.startswith(magic)), None)


def other_format(head: bytes) -> str | None:
    """A binary document format ``head`` starts, or None."""
    if head.startswith(b"%PDF-"):
        return "a PDF"
    if (image := image_format(head)) is not None:
        return image
    return next((name for magic, name in _CONTAINERS.items() if head.startswith(magic)), None)


def _pdf(path: Path, head: bytes, suffix: str) -> None:
    if not head.startswith(b"%PDF-"):
        raise UnsupportedMedia(
            "the file is not a PDF: a PDF starts with %PDF- at its first byte, and this one "
            "does not"
        )


def _image(path: Path, head: bytes, suffix: str) -> None:
    if image_format(head) is None:
        raise UnsupportedMedia(
            f"the file is not an image: {suffix} files must start with a PNG, JPEG, TIFF or "
            "WebP signature, and this one does not"
        )


def _text(path: Path, head: bytes, suffix: str) -> None:
    if (kind := other_format(head)) is not None:
        raise UnsupportedMedia(f"the content is {kind}, not {suffix} text")
    try:
        decode_text(path.read_bytes(), suffix)  # the text loader's own test for "is text"
    except UnsupportedDocument as exc:
        raise UnsupportedMedia(f"the content is not text: {exc.message}") from None


def _office(path: Path, head: bytes, suffix: str) -> None:
    # The size limit is the loader's business: here only the kind is judged.
    if (problem := package_problem(path, suffix, max_unzipped_bytes=2**63)) is not None:
        raise UnsupportedMedia(problem)


def _legacy(path: Path, head: bytes, suffix: str) -> None:
    raise UnsupportedMedia(legacy_reason(suffix))


_CHECKS: dict[str, Callable[[Path, bytes, str], None]] = {
    ".pdf": _pdf,
    **dict.fromkeys(IMAGE_TYPES, _image),
    **dict.fromkeys(MAIN_FOLDER, _office),
    **dict.fromkeys(LEGACY, _legacy),
}
"""Checkers by extension; every other extension a loader reads is text."""


def check_content(path: Path, suffix: str) -> None:
    """Refuse (415) content that does not match its extension. Blocking: reads the file."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    if (kind := executable(head)) is not None:
        raise UnsupportedMedia(f"the file is {kind}, not a document")
    _CHECKS.get(suffix, _text)(path, head, suffix)
