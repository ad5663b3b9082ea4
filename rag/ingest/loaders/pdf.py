"""PDF: one section per page, extracted by pypdf in a bounded worker process, without
running headers, footers and page numbers (``page_furniture``).

Extraction runs in ``pdf_worker`` children so that a PDF that loops, explodes in memory
or crashes the parser costs one file, not the batch. Encrypted files are tried with the
empty password first (many are "encrypted" just to set permissions), then with each of
``ingest.pdf_passwords``; no password ever appears in a reason, a log or an error. A PDF
over ``ingest.pdf_max_pages`` is skipped rather than silently cut short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rag.config import IngestSettings
from rag.domain import LoadedDocument, Section
from rag.errors import NoTextLayer, UnreadableDocument, UnsupportedDocument
from rag.ingest.loaders.page_furniture import strip_furniture
from rag.ingest.loaders.pdf_worker import (
    WorkerCrashed,
    WorkerError,
    WorkerMemoryExceeded,
    WorkerTimeout,
    new_pool,
)
from rag.ingest.loaders.text import normalize_text

MIN_TEXT_CHARS = 20
"""Fewer characters than this in the whole file (a run of whitespace counting as one)
means "no text layer": a scan's stray page number is not a text layer, a one-line note is."""

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


def _decrypt(reader: Any, passwords: tuple[str, ...]) -> str | None:
    """Open an encrypted reader with the empty password or a configured one; else the reason."""
    configured = _configured(passwords)
    for password in ("", *configured):
        if reader.decrypt(password):
            return None
    return _locked(len(configured))


def extract(path: str, max_pages: int, passwords: tuple[str, ...] = ()) -> dict[str, Any]:
    """Runs in the worker: title, page count and normalised text of every page, or a problem.

    Returns plain data (it crosses a pipe): ``{"problem": (kind, reason)}`` for a file
    that cannot be read, else ``title``, ``pages``, ``texts`` and ``page_errors``.
    """
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(path, strict=False)
        locked = _decrypt(reader, passwords) if reader.is_encrypted else None
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
    return {"title": _title(reader), "pages": pages, "texts": texts, "page_errors": errors}


def _title(reader: Any) -> str:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:
        return ""
    return normalize_text(str(title)) if title else ""


def load_pdf(path: Path, settings: IngestSettings) -> LoadedDocument:
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
    texts: list[str] = result["texts"]
    if len(" ".join(" ".join(texts).split())) < MIN_TEXT_CHARS:
        if len(result["page_errors"]) == result["pages"]:
            raise UnreadableDocument(f"PDF text could not be extracted: {result['page_errors'][0]}")
        raise NoTextLayer("PDF has no text layer (scanned or image-only; OCR is not supported)")
    sections = tuple(
        Section(text=text, page=number)
        for number, text in enumerate(strip_furniture(texts), 1)
        if text
    )
    return LoadedDocument(
        title=result["title"] or path.stem,
        media_type="application/pdf",
        sections=sections,
        pages=result["pages"],
    )
