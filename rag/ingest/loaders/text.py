"""Plain text (.txt, .rst) and the text normalisation every loader shares."""

from __future__ import annotations

import codecs
import re
import unicodedata
from pathlib import Path

from rag.domain import LoadedDocument, Section
from rag.errors import UnsupportedDocument

# C0/C1 controls except tab and newline (form feeds and other breaks become newlines
# first); U+00AD soft hyphen and U+FEFF BOM are invisible and only split words.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\ufeff]")
_BREAKS = re.compile("\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_SPACES = re.compile(r"[^\S\n]+")
_INDENT = re.compile(r"[^\S\n]*")
_FENCE = re.compile(r"[^\S\n]*(?:```|~~~)")
_BLANK_LINES = re.compile(r"\n{3,}")
# Control characters that appear in real text files; anything else counts as binary.
_TEXT_CONTROLS = frozenset("\t\n\r\x0c\x1b")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def normalize_text(text: str) -> str:
    """NFC, no control characters, one space per run inside a line, at most one blank line
    in a row, no trailing white space.

    A line's indentation is kept (as spaces, a tab counting four): it is what ties a list
    item's or a definition's continuation lines to it and what gives code its meaning.
    Inside a fenced code block (between lines starting with ```` ``` ````) runs of spaces
    are kept too.
    """
    text = unicodedata.normalize("NFC", text)
    text = _BREAKS.sub("\n", text)
    text = _CONTROL.sub("", text)
    lines = []
    fenced = False
    for line in text.split("\n"):
        fence = _FENCE.match(line) is not None
        lines.append(_normalize_line(line, verbatim=fenced and not fence))
        fenced = fenced != fence
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")


def _normalize_line(line: str, verbatim: bool = False) -> str:
    if verbatim:
        return line.expandtabs(4).rstrip()
    body = _SPACES.sub(" ", line).strip()
    if not body:
        return ""
    indent = _INDENT.match(line)
    width = len(indent.group().replace("\t", "    ")) if indent else 0
    return " " * width + body


def looks_binary(data: bytes) -> bool:
    """True for NUL bytes or many control bytes in the first 64 KiB."""
    head = data[:65536]
    if b"\x00" in head:
        return True
    controls = sum(1 for byte in head if byte < 32 and chr(byte) not in _TEXT_CONTROLS)
    return controls > max(8, len(head) // 100)


def decode_text(data: bytes, suffix: str) -> str:
    """UTF-8 (BOM or not), UTF-16 with a BOM, else Latin-1 when the bytes are clearly text."""
    if data.startswith(_UTF16_BOMS):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise UnsupportedDocument(f"binary content in a {suffix} file") from exc
    if looks_binary(data):
        raise UnsupportedDocument(f"binary content in a {suffix} file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    text = data.decode("latin-1")
    # Latin-1 decodes anything, so it is only trusted when C1 controls (0x80-0x9F, never
    # printable) are rare; otherwise the file is some other encoding or binary.
    c1 = sum(1 for ch in text[:65536] if "\x80" <= ch <= "\x9f")
    if c1 > max(8, min(len(text), 65536) // 100):
        raise UnsupportedDocument(f"{suffix} file is neither UTF-8 nor Latin-1 text")
    return text


def load_text(path: Path, data: bytes) -> LoadedDocument:
    """One section holding the whole file; the title is the file stem."""
    suffix = path.suffix.lower()
    text = normalize_text(decode_text(data, suffix))
    media_type = "text/x-rst" if suffix == ".rst" else "text/plain"
    sections = (Section(text=text),) if text else ()
    return LoadedDocument(title=path.stem, media_type=media_type, sections=sections)
