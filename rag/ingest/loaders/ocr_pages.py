"""The parent's side of OCR: one bounded worker call per page, each with its own limit.

A page runs in the OCR worker process (``worker``) under ``ocr.page_timeout_s`` and the
memory limit PDF extraction has (``ingest.pdf_memory_mb``). A page that runs over gets
its worker killed and is skipped with a note; the next page starts a fresh worker (the
model loads again, 1-2 s), so one pathological page never stalls the file or the batch.
A worker that cannot start at all (a broken install) fails the file at once, rather than
paying the start-up time again for every page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rag.config import IngestSettings, OcrSettings
from rag.domain import Section
from rag.errors import UnreadableDocument
from rag.ingest.loaders.pdf_worker import (
    WorkerCrashed,
    WorkerError,
    WorkerMemoryExceeded,
    WorkerStartFailed,
    WorkerTimeout,
    new_pool,
)

# One idle worker: a second would hold another half gigabyte of models for a rare burst.
# A page that raised costs the worker: on the torture set, one onnxruntime failure left
# the worker failing every later page of the run (the model reloads in 1-2 s).
_POOL = new_pool(preload=("rag.ingest.ocr.worker:warm",), max_idle=1, retire_on_error=True)

PageCall = Callable[[int], tuple[Callable[..., Any], tuple[Any, ...]]]
"""For a 0-based page index: the worker function and its arguments that read that page."""


def close() -> None:
    """Stop the OCR worker process (it also stops at interpreter exit)."""
    _POOL.close()


@dataclass
class Recognised:
    """What OCR made of some pages of one file."""

    sections: list[Section] = field(default_factory=list)
    """One per page that yielded text, in page order, ``confidence`` set."""
    skipped: dict[int, str] = field(default_factory=dict)
    """Why each page left out was (time or memory limit, a page the decoder rejects), by
    0-based index."""
    replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The worker's reply for every page read, by 0-based index."""

    @property
    def notes(self) -> list[str]:
        """One line per page left out, numbered from 1, for the run's report."""
        return [f"page {index + 1}: {why}; skipped" for index, why in self.skipped.items()]


def _clip(message: str, limit: int) -> str:
    """The line of a worker's error that says what went wrong, at most ``limit`` characters:
    the first, or the last when the first opens a traceback that a native library (onnxruntime)
    put into its exception's message."""
    lines = [line.strip() for line in message.splitlines() if line.strip()] or ["unknown error"]
    line = lines[-1] if "Traceback (most recent call last)" in lines[0] else lines[0]
    if line != lines[0] and ":" in lines[0]:
        line = f"{lines[0].split(':', 1)[0]}: {line}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _note(exc: WorkerError, ocr: OcrSettings, ingest: IngestSettings) -> str:
    if isinstance(exc, WorkerTimeout):
        return f"recognition took over {ocr.page_timeout_s:g} s (ocr.page_timeout_s)"
    if isinstance(exc, WorkerMemoryExceeded):
        return f"recognition exceeded {ingest.pdf_memory_mb} MB (ingest.pdf_memory_mb)"
    if isinstance(exc, WorkerCrashed):
        return f"recognition crashed ({exc})"
    return _clip(str(exc), 160)


def recognise(
    pages: Iterable[int], call: PageCall, ocr: OcrSettings, ingest: IngestSettings
) -> Recognised:
    """Read ``pages`` (0-based) one worker call each; sections are numbered from 1."""
    done = Recognised()
    for index in pages:
        fn, args = call(index)
        try:
            reply = _POOL.call(
                fn, args, timeout_s=ocr.page_timeout_s, memory_mb=ingest.pdf_memory_mb
            )
        except WorkerStartFailed as exc:
            raise UnreadableDocument(f"OCR could not start: {_clip(str(exc), 200)}") from exc
        except WorkerError as exc:
            done.skipped[index] = _note(exc, ocr, ingest)
            continue
        done.replies[index] = reply
        if reply["text"]:
            done.sections.append(
                Section(text=reply["text"], page=index + 1, confidence=reply["confidence"])
            )
    return done
