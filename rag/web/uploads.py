"""Uploaded files: a safe name, a type the content agrees with, saved without overwriting.

The client's file name is advice, never a path: only its last component survives
(``../evil.md``, ``/etc/passwd`` and ``..\\x.md`` all lose their folders), reduced to
ASCII letters, digits, ``.``, ``_`` and ``-``, with no leading dot (no hidden files)
and no ``..``. A name already taken by a different file gets ``-2``, ``-3``... instead
of replacing it; the same bytes under the same name are the same upload.

The type is decided by the extension *and* the content: a PDF must carry ``%PDF-``
within its first KiB (where readers look for it), text formats must decode the way the
text loader decodes them (no NUL bytes, not mostly control characters).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rag.config import IngestSettings
from rag.errors import InputError, RagError, UnsupportedDocument
from rag.ingest.loaders import readable_extensions, supported
from rag.ingest.loaders.text import decode_text
from rag.text import CONTROL_CHARS

MAX_STEM = 100
_BLOCK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")


class UnsupportedMedia(RagError):
    status_code = 415
    code = "unsupported_media_type"


class TooLarge(RagError):
    status_code = 413
    code = "too_large"


@dataclass(frozen=True, slots=True)
class Saved:
    path: Path
    created: bool
    """False when the very same bytes were already there under this name."""


def safe_name(raw: str | None) -> str:
    """The client's file name made safe to create in the upload folder, or ``InputError``."""
    if raw is None or not raw.strip():
        raise InputError("the uploaded file has no name: send a multipart part with a filename")
    if bad := CONTROL_CHARS.search(raw):
        # Refused rather than cleaned: a line break in a name is an attack, not a typo.
        raise InputError(
            f"the file name contains a control character ({bad.group()!r}): "
            "NUL, CR, LF and other control characters are not allowed"
        )
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    stem, dot, ext = ascii_name.rpartition(".")
    if not dot:
        stem, ext = ascii_name, ""
    stem = _DOTS.sub(".", _UNSAFE.sub("_", stem)).strip("._-")[:MAX_STEM].rstrip("._-")
    ext = re.sub(r"[^A-Za-z0-9]", "", ext).lower()[:10]
    if not stem:
        raise InputError(f"the file name {base[:80]!r} has no usable characters")
    return f"{stem}.{ext}" if ext else stem


def check_type(name: str, settings: IngestSettings) -> None:
    """Refuse (415) an extension no loader reads, before anything is written."""
    if supported(Path(name), settings):
        return
    suffix = Path(name).suffix.lower()
    problem = f"unsupported file type {suffix!r}" if suffix else "the file name has no extension"
    accepted = readable_extensions(settings)
    if not accepted:
        raise UnsupportedMedia(
            f"{problem}, and no type is accepted: [ingest] extensions lists none that rag reads"
        )
    raise UnsupportedMedia(f"{problem}: upload one of {', '.join(accepted)}")


def sniff(path: Path, suffix: str) -> None:
    """Refuse (415) content that does not match its extension."""
    with path.open("rb") as handle:
        head = handle.read(1024)
    if suffix == ".pdf":
        if b"%PDF-" not in head:
            raise UnsupportedMedia("the file is not a PDF: its content does not start with %PDF-")
        return
    try:
        decode_text(path.read_bytes(), suffix)  # the text loader's own test for "is text"
    except UnsupportedDocument as exc:
        raise UnsupportedMedia(f"the content is not text: {exc.message}") from None


def save(source: BinaryIO, folder: Path, name: str, max_bytes: int, limit_text: str) -> Saved:
    """Copy ``source`` into ``folder`` under ``name`` (or a free variant of it). Blocking."""
    folder.mkdir(parents=True, exist_ok=True)
    # Hidden, so an ingest walking the folder never picks up a half-written file.
    part = folder / f".upload-{uuid.uuid4().hex}.part"
    try:
        sha = _copy(source, part, max_bytes, limit_text)
        sniff(part, Path(name).suffix.lower())
        return _place(part, folder, name, sha)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


def _copy(source: BinaryIO, target: Path, max_bytes: int, limit_text: str) -> str:
    digest = hashlib.sha256()
    written = 0
    with target.open("xb") as out:
        while block := source.read(_BLOCK):
            written += len(block)
            if written > max_bytes:
                raise TooLarge(f"the file is larger than the {limit_text} upload limit")
            digest.update(block)
            out.write(block)
    if written == 0:
        raise InputError("the uploaded file is empty")
    return digest.hexdigest()


def _place(part: Path, folder: Path, name: str, sha: str) -> Saved:
    stem, suffix = Path(name).stem, Path(name).suffix
    for attempt in range(1, 1000):
        candidate = folder / (name if attempt == 1 else f"{stem}-{attempt}{suffix}")
        # Belt and braces: whatever the name, the file lands directly in the folder.
        if candidate.resolve().parent != folder.resolve():
            raise InputError("refusing a file name that leaves the upload folder")
        try:
            # O_EXCL claims the name atomically: a concurrent upload of the same name
            # gets the next one, and no existing file is ever replaced.
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            if _sha256(candidate) == sha:
                return Saved(candidate, created=False)
            continue
        os.replace(part, candidate)
        return Saved(candidate, created=True)
    raise InputError(f"too many uploads named {name}: rename the file")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
