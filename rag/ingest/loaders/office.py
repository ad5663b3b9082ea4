"""Word, Excel and PowerPoint files: read in the bounded worker process, parsed as Markdown.

The container is checked first (``ooxml.package_problem``: its kind by its parts, and
zip-bomb limits on the central directory), then python-docx, openpyxl or python-pptx
run in a ``pdf_worker`` child under the PDF limits (``ingest.pdf_timeout_s`` and
``pdf_memory_mb``), so a file that loops or swells costs itself, not the batch. The
child returns Markdown (``word``, ``excel``, ``slides``); ``markdown.py`` makes the
sections, so headings, lists and tables follow one set of rules whatever the format.
Legacy binary files (``.doc``, ``.xls``, ``.ppt``) are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from rag.config import IngestSettings
from rag.domain import LoadedDocument, Section
from rag.errors import UnreadableDocument, UnsupportedDocument
from rag.ingest.loaders import excel, slides, word
from rag.ingest.loaders.markdown import load_markdown
from rag.ingest.loaders.office_markdown import CHARS_PER_TOKEN
from rag.ingest.loaders.ooxml import LEGACY, MAIN_FOLDER, legacy_reason, package_problem
from rag.ingest.loaders.pdf_worker import (
    WorkerCrashed,
    WorkerError,
    WorkerMemoryExceeded,
    WorkerTimeout,
    new_pool,
)

EXTENSIONS = frozenset({*MAIN_FOLDER, *LEGACY})
"""Every extension this module answers for, the legacy ones included (they are skipped)."""

MEDIA_TYPES = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".docm": "application/vnd.ms-word.document.macroEnabled.12",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xlsm": "application/vnd.ms-excel.sheet.macroEnabled.12",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".pptm": "application/vnd.ms-powerpoint.presentation.macroEnabled.12",
}

_POOL = new_pool(preload=("docx", "openpyxl", "pptx", __name__), max_idle=2)


def close() -> None:
    """Stop the Office worker processes (they also stop at interpreter exit)."""
    _POOL.close()


def extract(path: str, suffix: str, budget: int, max_cells: int) -> dict[str, Any]:
    """Runs in the worker: the reader for ``suffix``, its failures turned into a problem."""
    readers: dict[str, Callable[[], dict[str, Any]]] = {
        "word/": lambda: word.extract(path, budget),
        "xl/": lambda: excel.extract(path, budget, max_cells),
        "ppt/": lambda: slides.extract(path, budget),
    }
    try:
        return readers[MAIN_FOLDER[suffix]]()
    except MemoryError:
        raise
    except Exception as exc:
        detail = str(exc).splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return {"problem": ("failed", f"the {suffix} file could not be read: {detail}")}


def load_office(path: Path, settings: IngestSettings) -> LoadedDocument:
    """Sections of a DOCX, XLSX or PPTX (a page per slide); raises a ``DocumentError``."""
    suffix = path.suffix.lower()
    if suffix in LEGACY:
        raise UnsupportedDocument(legacy_reason(suffix))
    try:
        problem = package_problem(path, suffix, int(settings.office_max_unzipped_mb * 2**20))
    except OSError as exc:
        raise UnreadableDocument(f"could not read file: {exc.strerror or exc}") from exc
    if problem:
        raise UnreadableDocument(problem)
    budget = settings.chunk_tokens * CHARS_PER_TOKEN
    try:
        result = _POOL.call(
            extract,
            (str(path), suffix, budget, settings.xlsx_max_cells),
            timeout_s=settings.pdf_timeout_s,
            memory_mb=settings.pdf_memory_mb,
        )
    except WorkerTimeout as exc:
        raise UnreadableDocument(
            f"{suffix} extraction timed out after {settings.pdf_timeout_s:g} s "
            "(ingest.pdf_timeout_s)"
        ) from exc
    except WorkerMemoryExceeded as exc:
        raise UnreadableDocument(
            f"{suffix} extraction exceeded the {settings.pdf_memory_mb} MB memory limit "
            "(ingest.pdf_memory_mb)"
        ) from exc
    except WorkerCrashed as exc:
        raise UnreadableDocument(f"{suffix} extraction crashed: {exc}") from exc
    except WorkerError as exc:
        raise UnreadableDocument(f"{suffix} extraction failed: {exc}") from exc
    if "problem" in result:
        status, reason = result["problem"]
        raise (UnsupportedDocument if status == "skipped" else UnreadableDocument)(reason)
    return from_markdown(
        path,
        result["title"],
        result["parts"],
        MEDIA_TYPES[suffix],
        paged=result.get("paged", False),
    )


def from_markdown(
    path: Path, title: str, parts: list[str], media_type: str, *, paged: bool = False
) -> LoadedDocument:
    """A document of Markdown texts; with ``paged``, text n is page n (a slide)."""
    sections: list[Section] = []
    for number, text in enumerate(parts, 1):
        parsed = load_markdown(path, text.encode())
        if paged:
            sections.extend(msgspec.structs.replace(s, page=number) for s in parsed.sections)
        else:
            sections.extend(parsed.sections)
    return LoadedDocument(
        title=title or path.stem,
        media_type=media_type,
        sections=tuple(sections),
        pages=len(parts) if paged else None,
    )
