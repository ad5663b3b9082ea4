"""PDF: one section per page, extracted by pypdf in a bounded worker process, without
running headers, footers and page numbers (``page_furniture``).

A page with too little text for its size (``scant``) is a scan: it is rendered and read
by OCR (``rag.ingest.ocr``), one page per bounded worker call, and its section records
the recogniser's confidence. Without OCR (not installed, or turned off) such pages are
left out, and a file with no text at all is skipped with the reason.

Extraction runs in ``pdf_worker`` children so that a PDF that loops, explodes in memory
or crashes the parser costs one file, not the batch. Encrypted files are tried with the
empty password first (many are "encrypted" just to set permissions), then with each of
``ingest.pdf_passwords``; no password ever appears in a reason, a log or an error. A PDF
over ``ingest.pdf_max_pages`` is skipped rather than silently cut short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rag.config import IngestSettings, OcrSettings
from rag.domain import LoadedDocument, Section
from rag.errors import DocumentError, NoTextLayer, UnreadableDocument, UnsupportedDocument
from rag.ingest import ocr as ocr_engine
from rag.ingest.loaders.ocr_pages import recognise
from rag.ingest.loaders.page_furniture import strip_furniture
from rag.ingest.loaders.pdf_worker import (
    WorkerCrashed,
    WorkerError,
    WorkerMemoryExceeded,
    WorkerTimeout,
    new_pool,
)
from rag.ingest.loaders.text import normalize_text
from rag.ingest.ocr.worker import pdf_page

MIN_TEXT_CHARS = 20
"""Fewer characters than this in the whole file (a run of whitespace counting as one)
means "no text layer": a scan's stray page number is not a text layer, a one-line note is."""

SCANT_PER_SQUARE_INCH = 0.5
"""A page whose text layer holds fewer characters than this per square inch of paper (48
on A4) is recognised by OCR: a page of print holds about 3,000 (30 a square inch), a
slide's title and bullets a few a square inch, while a scan's text layer is empty or a
page number, a stamp or a scanner's "Scanned by ..." line. A page OCR reads no better
than its text layer keeps the text layer."""

# pypdf decrypts AES only with the "cryptography" package, a dependency of this project:
# this reason shows only in an installation that lacks it.
_AES = "PDF uses AES encryption, which needs the 'cryptography' package (not installed)"

_POOL = new_pool(preload=("pypdf", __name__))


def close() -> None:
    """Stop the PDF worker processes (they also stop at interpreter exit)."""
    _POOL.close()


def _short(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """The first line of an error, cut to 160 characters, with any configured password masked.

    pypdf does not put passwords in its messages; the mask makes sure no reason ever does.
    """
    reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        reason = reason.replace(secret, "***")
    return reason if len(reason) <= 160 else reason[:157] + "..."


def _locked(tried: int) -> str:
    """Why an encrypted PDF stays shut, given how many configured passwords were tried."""
    if tried == 0:
        return "PDF is encrypted and needs a password; none is configured (ingest.pdf_passwords)"
    passwords = "password" if tried == 1 else "passwords"
    return (
        f"PDF is encrypted and none of the {tried} configured {passwords} opens it"
        " (ingest.pdf_passwords)"
    )


def _configured(passwords: tuple[str, ...]) -> tuple[str, ...]:
    """The configured passwords, each once, in order; the empty one is always tried first."""
    return tuple(dict.fromkeys(password for password in passwords if password))


def _decrypt(reader: Any, passwords: tuple[str, ...]) -> tuple[str | None, str]:
    """Open an encrypted reader with the empty password or a configured one: (the reason it
    stays shut or None, the password that opened it)."""
    configured = _configured(passwords)
    for password in ("", *configured):
        if reader.decrypt(password):
            return None, password
    return _locked(len(configured)), ""


def extract(path: str, max_pages: int, passwords: tuple[str, ...] = ()) -> dict[str, Any]:
    """Runs in the worker: title, page count and normalised text of every page, or a problem.

    Returns plain data (it crosses a pipe): ``{"problem": (kind, reason)}`` for a file
    that cannot be read, else ``title``, ``pages``, ``texts``, ``page_errors``, each page's
    area in square inches (``areas``) and the index of the password that opened it in
    ``("", *passwords)`` (``opened_with``; OCR renders with the same).
    """
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(path, strict=False)
        locked, password = _decrypt(reader, passwords) if reader.is_encrypted else (None, "")
        if locked:
            return {"problem": ("failed", locked)}
        pages = len(reader.pages)
    except DependencyError:
        return {"problem": ("failed", _AES)}
    except NotImplementedError as exc:
        reason = f"PDF encryption is not supported: {_short(exc, passwords)}"
        return {"problem": ("failed", reason)}
    except FileNotDecryptedError:
        return {"problem": ("failed", _locked(len(_configured(passwords))))}
    except Exception as exc:
        return {"problem": ("failed", f"PDF could not be opened: {_short(exc, passwords)}")}
    if pages == 0:
        return {"problem": ("failed", "PDF has no pages")}
    if pages > max_pages:
        reason = f"PDF has {pages} pages, over the {max_pages} page limit (ingest.pdf_max_pages)"
        return {"problem": ("skipped", reason)}
    texts: list[str] = []
    errors: list[str] = []
    areas = [_area(reader, number) for number in range(pages)]
    for number in range(pages):
        try:
            texts.append(normalize_text(reader.pages[number].extract_text()))
        except DependencyError:
            # Some files defer decryption to the first stream read.
            return {"problem": ("failed", _AES)}
        except Exception as exc:
            # One bad page (broken font, bad content stream) should not cost the others.
            texts.append("")
            errors.append(f"page {number + 1}: {_short(exc, passwords)}")
    opened_with = ("", *_configured(passwords)).index(password)
    return {
        "title": _title(reader),
        "pages": pages,
        "texts": texts,
        "page_errors": errors,
        "areas": areas,
        "opened_with": opened_with,
    }


def _area(reader: Any, number: int) -> float:
    """A page's size in square inches (A4: 96.7); a broken box counts as A4."""
    try:
        box = reader.pages[number].mediabox
        area = abs(float(box.width) * float(box.height)) / 72**2
    except Exception:
        return 96.7
    return area if 1 <= area <= 10_000 else 96.7


def _title(reader: Any) -> str:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:
        return ""
    return normalize_text(str(title)) if title else ""


def load_pdf(path: Path, settings: IngestSettings, ocr: OcrSettings) -> LoadedDocument:
    """Pages of text with 1-based page numbers; raises a ``DocumentError`` with the reason."""
    try:
        result = _POOL.call(
            extract,
            (str(path), settings.pdf_max_pages, settings.pdf_passwords),
            timeout_s=settings.pdf_timeout_s,
            memory_mb=settings.pdf_memory_mb,
        )
    except WorkerTimeout as exc:
        raise UnreadableDocument(
            f"PDF extraction timed out after {settings.pdf_timeout_s:g} s"
        ) from exc
    except WorkerMemoryExceeded as exc:
        raise UnreadableDocument(
            f"PDF extraction exceeded the {settings.pdf_memory_mb} MB memory limit"
        ) from exc
    except WorkerCrashed as exc:
        raise UnreadableDocument(f"PDF extraction crashed: {exc}") from exc
    except WorkerError as exc:
        reason = _short(exc, settings.pdf_passwords)
        raise UnreadableDocument(f"PDF extraction failed: {reason}") from exc
    if "problem" in result:
        status, reason = result["problem"]
        raise (UnsupportedDocument if status == "skipped" else UnreadableDocument)(reason)
    raw: list[str] = result["texts"]
    # Running headers, footers and page numbers never reach a section; whether a page
    # needs OCR is judged on its whole text layer, as the threshold was measured. A file
    # with no text layer to speak of is recognised whole, whatever its pages' size: a
    # small page (a chart, a label) with a stray caption is a picture all the same.
    texts = strip_furniture(raw)
    sections = [Section(text=text, page=number) for number, text in enumerate(texts, 1) if text]
    textless = _chars(" ".join(raw)) < MIN_TEXT_CHARS
    scant = [
        index
        for index, (text, area) in enumerate(zip(raw, result["areas"], strict=True))
        if textless or _chars(text) < area * SCANT_PER_SQUARE_INCH
    ]
    notes: list[str] = []
    recognised = 0
    if scant:
        sections, recognised, notes = _recognise(path, settings, ocr, result, scant, sections)
    if _chars(" ".join(section.text for section in sections)) < MIN_TEXT_CHARS:
        if len(result["page_errors"]) == result["pages"]:
            raise UnreadableDocument(f"PDF text could not be extracted: {result['page_errors'][0]}")
        raise _no_text(recognised, notes)
    return LoadedDocument(
        title=result["title"] or path.stem,
        media_type="application/pdf",
        sections=tuple(sections),
        pages=result["pages"],
        recognised_pages=recognised,
        notes=tuple(notes),
    )


def _no_text(recognised: int, notes: list[str]) -> DocumentError:
    """Why a PDF yields no text: it holds none that can be read (skipped, like an empty
    file: nothing is wrong with the service), or OCR stopped short of a page (failed)."""
    if notes:
        # A page over its time or memory limit may well hold the text: not an empty file.
        return UnreadableDocument(f"PDF has no text layer and OCR could not read it: {notes[0]}")
    if recognised:
        # Under MIN_TEXT_CHARS in all: a speck read as a letter or two is no text either.
        pages = "page" if recognised == 1 else f"{recognised} pages"
        return NoTextLayer(f"PDF has no text layer and OCR found no readable text on its {pages}")
    return NoTextLayer("PDF has no text layer (scanned or image-only)")


def _chars(text: str) -> int:
    """Characters, a run of whitespace counting as one."""
    return len(" ".join(text.split()))


def _recognise(
    path: Path,
    settings: IngestSettings,
    ocr: OcrSettings,
    result: dict[str, Any],
    scant: list[int],
    sections: list[Section],
) -> tuple[list[Section], int, list[str]]:
    """The sections with the ``scant`` pages (0-based) read by OCR, the pages read and notes.

    Raises ``UnsupportedDocument`` for a file with no text of its own that OCR cannot read
    (not installed, turned off, or more pages than ``ocr.max_pages``).
    """
    has_text = _chars(" ".join(section.text for section in sections)) >= MIN_TEXT_CHARS
    if (cannot := ocr_engine.unavailable(ocr)) is not None:
        if not has_text and ocr.engine == "workers-ai":
            # A scan for Workers AI's Markdown conversion (rag.ingest.convert).
            raise NoTextLayer("PDF has no text layer (scanned or image-only)")
        if not has_text:
            raise UnsupportedDocument(f"PDF has no text layer (scanned or image-only) and {cannot}")
        # As before OCR existed: most such pages in a typed PDF are blank, and saying so
        # for every one would bury the reports that matter.
        return sections, 0, []
    if len(scant) > ocr.max_pages:
        over = f"{len(scant)} of its pages need OCR, over the {ocr.max_pages} page limit"
        if not has_text:
            raise UnsupportedDocument(f"PDF has no text layer and {over} (ocr.max_pages)")
        return sections, 0, [f"pages without a text layer left out: {over} (ocr.max_pages)"]
    password = ("", *_configured(settings.pdf_passwords))[result["opened_with"]]
    done = recognise(
        scant,
        lambda index: (pdf_page, (str(path), index, password, ocr.dpi, ocr.min_confidence)),
        ocr,
        settings,
    )
    by_page = {section.page: section for section in sections}
    for section in done.sections:
        own = by_page.get(section.page)
        # A title page or a slide reads the same both ways: its own text layer is exact.
        if own is None or _chars(section.text) > _chars(own.text):
            by_page[section.page] = section
    merged = [by_page[page] for page in sorted(p for p in by_page if p is not None)]
    return merged, len(done.replies), done.notes
