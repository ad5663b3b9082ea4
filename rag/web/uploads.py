"""Uploaded files: a safe name, a type the content agrees with, stored without overwriting.

The client's file name is advice, never a path: only its last component survives
(``../evil.md``, ``/etc/passwd`` and ``..\\x.md`` all lose their folders), reduced to
ASCII letters, digits, ``.``, ``_`` and ``-``, with no leading dot (no hidden files)
and no ``..``. A name already taken gets ``-2``, ``-3``... instead of replacing it.

The type is decided by the extension *and* the content (``rag.web.sniff``). The bytes
are first written to a hidden temporary file (``.upload-<random>.part``, which no folder
ingest reads), and put in the blob store under their final name only once their
document is recorded (``rag.web.upload_store``), so every crash leaves a state the next
start can settle.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rag.config import IngestSettings
from rag.errors import InputError, RagError
from rag.ingest.loaders import readable_extensions, supported
from rag.ingest.loaders.ooxml import LEGACY
from rag.text import CONTROL_CHARS
from rag.web.sniff import UnsupportedMedia, check_content

MAX_STEM = 100
_BLOCK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")


class TooLarge(RagError):
    status_code = 413
    code = "too_large"


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
    # Legacy Office files are refused with their own reason (rag.web.sniff), not offered.
    accepted = [ext for ext in readable_extensions(settings) if ext not in LEGACY]
    if not accepted:
        raise UnsupportedMedia(
            f"{problem}, and no type is accepted: [ingest] extensions lists none that rag reads"
        )
    raise UnsupportedMedia(f"{problem}: upload one of {', '.join(accepted)}")


PART_PREFIX = ".upload-"
PART_SUFFIX = ".part"


@dataclass(frozen=True, slots=True)
class Received:
    """An upload's bytes in a temporary file of the upload folder, checked, not yet placed."""

    part: Path
    sha256: str
    size: int

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()


def receive(source: BinaryIO, folder: Path, name: str, max_bytes: int, limit_text: str) -> Received:
    """Copy ``source`` into a temporary file of ``folder`` and check its content. Blocking."""
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{PART_PREFIX}{uuid.uuid4().hex}{PART_SUFFIX}"
    try:
        sha, size = _copy(source, part, max_bytes, limit_text)
        check_content(part, Path(name).suffix.lower())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    return Received(part, sha, size)


def is_part(path: Path) -> bool:
    """A temporary file of ``receive`` (left behind only by a crash)."""
    return path.name.startswith(PART_PREFIX) and path.name.endswith(PART_SUFFIX)


def _copy(source: BinaryIO, target: Path, max_bytes: int, limit_text: str) -> tuple[str, int]:
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
    return digest.hexdigest(), written


def candidates(name: str) -> Iterator[str]:
    """``name``, then ``stem-2.ext``... up to ``stem-999.ext`` (the store refuses any name
    that would leave its folder or prefix)."""
    stem, suffix = Path(name).stem, Path(name).suffix
    for attempt in range(1, 1000):
        yield name if attempt == 1 else f"{stem}-{attempt}{suffix}"
    raise InputError(f"too many uploads named {name}: rename the file")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
