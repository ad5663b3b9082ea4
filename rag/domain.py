"""Value types shared by ingestion, retrieval, answering and the web layer.

They are msgspec structs so the web layer and the CLI encode them to JSON without a
second schema; they are frozen so a value handed down the pipeline never changes
under a caller's feet.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import msgspec

MAX_TOP_K: Final = 50
"""Most sources one answer or search may use: more never fit a prompt usefully."""


def new_trace_id() -> str:
    """One id per request, minted where the request enters (the web app, the CLI)."""
    return uuid.uuid4().hex


class Section(msgspec.Struct, frozen=True):
    """A run of document text that shares one page and one heading path (loader output)."""

    text: str
    page: int | None = None
    heading_path: tuple[str, ...] = ()
    confidence: float | None = None
    """The recogniser's mean line score (0-1) when the text was recognised from an image
    (OCR); None for text the file itself holds."""


class LoadedDocument(msgspec.Struct, frozen=True):
    """What a loader made of one file: its title, type and text sections in order."""

    title: str
    media_type: str
    sections: tuple[Section, ...]
    pages: int | None = None
    recognised_pages: int = 0
    """Pages whose text came from OCR."""
    notes: tuple[str, ...] = ()
    """What was left out of a document that was still read (a page over its OCR time
    limit): reported with the run, the rest of the file is kept."""


class Converted(msgspec.Struct, frozen=True):
    """One file as a remote converter returned it (``rag.ports.DocumentConverter``)."""

    markdown: str
    tokens: int = 0
    """The converter's estimate of the text's size in tokens (0 when it gave none)."""


class ChunkDraft(msgspec.Struct, frozen=True):
    """A chunk as the chunker cut it, before it has a database identity."""

    ordinal: int
    text: str
    token_count: int
    sha256: str
    char_start: int
    char_end: int
    page_start: int | None = None
    page_end: int | None = None
    heading_path: tuple[str, ...] = ()
    confidence: float | None = None
    """Recognised by OCR: the lowest confidence of the pages the chunk covers; else None."""


class Turn(Protocol):
    """One earlier exchange of a conversation: what was asked and what was answered.

    A Protocol, so the web layer's request struct and the CLI's own records both fit.
    """

    @property
    def question(self) -> str: ...

    @property
    def answer(self) -> str: ...


class Hit(msgspec.Struct, frozen=True):
    """One retrieved chunk with the scores that placed it.

    ``score`` orders the hits after the last stage that ran; ``relevance`` is the
    figure the evidence gate compares with its threshold (its scale belongs to the
    backend: cosine for the local one, reranker score on Cloudflare).
    """

    chunk_id: str
    document_id: str
    source: str
    title: str
    text: str
    score: float
    relevance: float
    page_start: int | None = None
    page_end: int | None = None
    heading_path: tuple[str, ...] = ()
    dense_score: float | None = None
    dense_rank: int | None = None
    keyword_score: float | None = None
    keyword_rank: int | None = None
    recognised: bool = False
    """The text was recognised from a scan or image (OCR), not read from a text layer."""
    confidence: float | None = None
    """The recogniser's confidence (0-1) in that text, when recognised."""
    opening: bool = False
    """The first hit's document's opening (a manual page's NAME line), marked in its
    ranked place or added after the ranked hits, so an answer can say what that document
    is; answerers read it apart from the ranked sources (``rag.retrieval.opening``)."""


class SearchResult(msgspec.Struct, frozen=True):
    """What a search found, and why it is keyword-ranked only (degraded mode), or None."""

    hits: list[Hit]
    degraded: str | None = None


class Source(msgspec.Struct, frozen=True):
    """A numbered source as the ``sources`` event announces it."""

    n: int
    chunk_id: str
    document: str
    title: str
    page: int | None
    score: float
    snippet: str
    recognised: bool = False
    """The passage was recognised from a scan (OCR): its wording may hold misreadings."""
    confidence: float | None = None


class Citation(msgspec.Struct, frozen=True):
    n: int
    chunk_id: str
    document: str
    page: int | None
    quote: str


class Usage(msgspec.Struct):
    """Tokens and cost of one answer; the local backend costs no neurons."""

    neurons: float = 0.0
    usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


class Latency(msgspec.Struct):
    retrieve: float = 0.0
    first_token: float | None = None
    total: float = 0.0


class SourcesEvent(msgspec.Struct, frozen=True, tag="sources"):
    sources: tuple[Source, ...]


class DeltaEvent(msgspec.Struct, frozen=True, tag="delta"):
    text: str


class DoneEvent(msgspec.Struct, frozen=True, tag="done"):
    answer: str
    citations: tuple[Citation, ...]
    grounded: bool
    provider: str
    cached: bool
    usage: Usage
    latency_ms: Latency
    trace_id: str
    degraded: str | None = None
    """Why this answer comes from keyword search and the extractive answerer (Workers AI
    refuses every call: ``rag.retrieval.refusals``), or None. Defaults to None so cached
    events and clients from before the field keep working."""


class ErrorEvent(msgspec.Struct, frozen=True, tag="error"):
    code: str
    message: str
    retryable: bool


AnswerEvent = SourcesEvent | DeltaEvent | DoneEvent | ErrorEvent


def event_name(event: AnswerEvent) -> str:
    """The SSE ``event:`` field for an answer event."""
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def event_payload(event: AnswerEvent) -> bytes:
    """The SSE ``data:`` payload: the event's fields as JSON, without the tag.

    ``sources`` carries a bare list, as the streaming contract shows.
    """
    if isinstance(event, SourcesEvent):
        return msgspec.json.encode(event.sources)
    data = msgspec.to_builtins(event)
    assert isinstance(data, dict)
    data.pop("type", None)
    return msgspec.json.encode(data)


@dataclass(frozen=True, slots=True)
class Staged:
    """A local copy of a file kept elsewhere, ingested under the file's own identity: an
    upload fetched from the blob store (``rag.storage``) to a temporary file.

    The document is recorded with ``source``, ``root`` and ``name`` as given (its id is
    derived from ``source``, as for any file); ``copy`` is only read.
    """

    copy: Path
    source: str
    root: str
    name: str


@dataclass
class IngestReport:
    """What an ingestion run did; filled in while it runs, so the one mutable value here."""

    run_id: int = 0
    files: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0
    failed: int = 0
    ignored: int = 0
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0
    problems: list[dict[str, str]] = field(default_factory=list)
    recognised: int = 0
    """Pages read by OCR (scanned PDF pages, images)."""
    neurons: float = 0.0
    """Workers AI neurons the run spent (set by ``RagService.ingest`` from the ledger)."""
    usd: float = 0.0

    def counts(self) -> dict[str, int]:
        names = ("files", "new", "updated", "unchanged", "deleted", "skipped", "failed")
        more = ("ignored", "chunks", "embedded", "reused", "recognised")
        return {name: getattr(self, name) for name in names + more}

    def summary(self) -> str:
        parts = [
            f"{self.files} files",
            f"{self.new} new",
            f"{self.updated} updated",
            f"{self.unchanged} unchanged",
            f"{self.deleted} deleted",
            f"{self.skipped} skipped",
            f"{self.failed} failed",
        ]
        ocr = f"; {self.recognised} pages recognised by OCR" if self.recognised else ""
        spent = f"; {self.neurons:,.1f} neurons (${self.usd:.4f})" if self.neurons > 0 else ""
        return (
            ", ".join(parts)
            + f"; {self.embedded} chunks embedded, {self.reused} reused in {self.seconds:.1f} s"
            + ocr
            + spent
        )
