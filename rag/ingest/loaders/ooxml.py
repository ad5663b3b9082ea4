"""Office Open XML containers: which kind a file is, judged by its parts, and whether it is
safe to open.

A ``.docx``, ``.xlsx`` or ``.pptx`` is a ZIP holding ``[Content_Types].xml`` and its main
parts under ``word/``, ``xl/`` or ``ppt/``; the macro-enabled ``.docm``, ``.xlsm`` and
``.pptm`` are the same containers with a ``vbaProject.bin`` beside them, which nothing
here reads, let alone runs. The legacy binary formats (``.doc``, ``.xls``, ``.ppt``) are
OLE2 compound files, and so is a password-protected OOXML file (its package is encrypted
inside an OLE2 ``EncryptedPackage`` stream).

Zip bombs are judged on the central directory before any part is inflated: the member
count and the sum of the sizes the members declare. That bound holds because Python's
``zipfile`` (which python-docx, openpyxl and python-pptx all read through) stops
inflating a member at its declared size and fails its CRC check there, so a member that
lies about its size cannot inflate past it. The worker's memory limit
(``pdf_worker``) stays behind this as a second line.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
MAX_MEMBERS = 10_000
"""More parts than any real Office file has (a 500-slide deck has a few thousand)."""

MAIN_FOLDER = {
    ".docx": "word/",
    ".docm": "word/",
    ".xlsx": "xl/",
    ".xlsm": "xl/",
    ".pptx": "ppt/",
    ".pptm": "ppt/",
}
"""The folder a package of each extension keeps its main parts in."""

LEGACY = {".doc": ".docx", ".xls": ".xlsx", ".ppt": ".pptx"}
"""The legacy binary extensions and the format to save them as."""

_KIND = {"word/": "a Word document", "xl/": "an Excel workbook", "ppt/": "a PowerPoint deck"}


def legacy_reason(suffix: str) -> str:
    """Why a legacy binary Office file is skipped, and what to do about it."""
    return f"legacy binary Office format ({suffix}); save it as {LEGACY[suffix]}"


def ole2_reason(suffix: str) -> str:
    """Why an OLE2 file named like an OOXML one cannot be read."""
    return (
        f"the {suffix} file is an OLE2 container, not a ZIP package: a password-protected "
        "Office file (remove the password) or a legacy binary file renamed "
        "(save it in the current format)"
    )


def package_problem(path: Path, suffix: str, max_unzipped_bytes: int) -> str | None:
    """Why ``path`` is not a safe ``suffix`` package to open, or None when it is.

    Reads only the ZIP's central directory: nothing is inflated.
    """
    with path.open("rb") as handle:
        head = handle.read(len(OLE2_MAGIC))
    if head.startswith(OLE2_MAGIC):
        return ole2_reason(suffix)
    if not head.startswith(ZIP_MAGIC):
        return f"the {suffix} file is not a ZIP package (every Office Open XML file is one)"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        return f"the {suffix} file is a damaged ZIP package ({exc})"
    if len(members) > MAX_MEMBERS:
        return f"the {suffix} package has {len(members)} parts, over the limit of {MAX_MEMBERS:,}"
    names = {member.filename for member in members}
    folder = MAIN_FOLDER[suffix]
    if "[Content_Types].xml" not in names or not any(n.startswith(folder) for n in names):
        found = next((_KIND[f] for f in _KIND if any(n.startswith(f) for n in names)), None)
        what = f"it holds {found}" if found else "it is some other ZIP archive"
        return f"the {suffix} file is not {_KIND[folder]}: {what}"
    declared = sum(member.file_size for member in members)
    if declared > max_unzipped_bytes:
        return (
            f"the {suffix} package unpacks to {declared / 2**20:,.0f} MB, over the "
            f"{max_unzipped_bytes / 2**20:,.0f} MB limit (ingest.office_max_unzipped_mb)"
        )
    return None
