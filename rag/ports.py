"""The seams: one small Protocol per role. ``rag.service`` picks implementations from config."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from rag.domain import (
    AnswerEvent,
    Converted,
    Hit,
    IngestReport,
    LoadedDocument,
    SearchResult,
    Staged,
    Turn,
)
from rag.errors import NotFound

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from rag.config import IngestSettings

Vectors = npt.NDArray[np.float32]
EmbedKind = Literal["query", "passage"]


class Tokenizer(Protocol):
    """Counts tokens exactly as the embedding model will see them."""

    max_tokens: int
    """The model's limit, special tokens included."""

    special_tokens: int
    """How many special tokens ([CLS], [SEP]) the model adds to every text."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token of ``text``, special tokens excluded."""
        ...

    def count(self, text: str) -> int:
        """Tokens in ``text``, special tokens excluded."""
        ...


class Embedder(Protocol):
    model_id: str
    dimension: int
    tokenizer: Tokenizer

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        """L2-normalised float32 vectors, one row per text, in order."""
        ...


class VectorIndex(Protocol):
    """The serving index. SQLite always keeps its own copy; this is what queries hit.

    Two ways to be fed (``rag.ingest.runner``). An index whose ``durable_outbox`` is true
    (Vectorize) is not written per document: its writes are queued in ``index_outbox`` in
    the same transaction as the chunks, and ``flush`` sends them in batches;
    ``open_service`` flushes at start what a killed run left. Any other index (the
    in-memory numpy one, loaded from the database at start) follows the change log:
    ``catch_up`` after each commit and before each query. Implementations subclass this
    Protocol, so the capabilities one lacks fall back to the no-op defaults below.
    """

    model_id: str | None
    """The embedding model whose vectors this index serves (None: not bound to one)."""

    @property
    def durable_outbox(self) -> bool:
        return False

    async def upsert(self, ids: Sequence[str], vectors: Vectors) -> None: ...

    async def delete(self, ids: Sequence[str]) -> None: ...

    async def query(self, vector: Vectors, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, cosine) pairs, best first."""
        ...

    async def flush(self) -> int:
        """Send queued writes (durable outbox only); how many were sent."""
        return 0

    async def reload(self) -> None:
        """Read the vectors again, whole (in-memory indexes only)."""
        return None

    async def catch_up(self) -> int | None:
        """Apply every change to the stored vectors since the last call, whichever process
        wrote it, and return the index generation now held; None for an index that does
        not follow the database (Vectorize is fed through the outbox instead)."""
        return None

    def loaded(self) -> int | None:
        """Vectors held in this process, or None when the index is remote."""
        return None


class KeywordSearch(Protocol):
    async def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, score) pairs, best first; higher is better."""
        ...


class Reranker(Protocol):
    name: str

    async def rerank(self, query: str, candidates: Sequence[Hit], k: int) -> list[Hit]:
        """The best ``k`` candidates in final order, ``score`` and ``relevance`` set."""
        ...


class TextStream(Protocol):
    """An answer in pieces. Closing it stops the upstream call at once: a client that
    went away must not keep a model generating (async generators have ``aclose``)."""

    def __aiter__(self) -> AsyncIterator[str]: ...

    def __anext__(self) -> Awaitable[str]: ...

    async def aclose(self) -> None: ...


class ChatModel(Protocol):
    name: str

    @property
    def prompt_version(self) -> str:
        """What shapes this provider's answers (its prompt or selection rules): part of the
        answer cache key and of every evaluation run's fingerprint."""
        ...

    def stream(self, question: str, sources: Sequence[Hit]) -> TextStream:
        """Answer text in pieces; ``[n]`` markers cite ``sources[n-1]``."""
        ...


class Condenser(Protocol):
    """A chat model that rewrites a follow-up as a standalone question (one call, no stream)."""

    @property
    def name(self) -> str: ...

    async def condense(self, question: str, history: Sequence[Turn]) -> str:
        """The model's reply, raw; ``accept_rewrite`` decides whether it is usable."""
        ...


class BlobStore(Protocol):
    """Where uploaded files' bytes are kept (``rag.storage``): a folder or an S3 bucket.

    A key is a file name the upload desk made safe (no folder part); a location is where
    a key's bytes are, as ``documents.source`` and ``documents.blob_uri`` record it.
    """

    root: str
    """What every location of this store starts with: ``documents.root`` of its uploads."""

    def location(self, key: str) -> str: ...

    def key_of(self, location: str) -> str | None:
        """The key of one of this store's locations; None for anywhere else."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def put(self, key: str, file: Path) -> bool:
        """Keep ``file``'s bytes under ``key``; False when the key is taken (never replaced)."""
        ...

    def fetched(self, key: str) -> AbstractAsyncContextManager[Path]:
        """The bytes as a local file named like ``key`` while the context lasts (loaders
        read paths); a copy is removed at its end. ``NotFound`` when there are none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the bytes; a key with none is no error."""
        ...

    async def keys(self) -> list[str]:
        """Every key stored (at start, files no record names are adopted)."""
        ...


class UnitStore(Protocol):
    """The answer units ingestion stores with the chunks, for the local extractive
    answerer (``rag.backends.local.units.UnitIndex``)."""

    version: str
    """The splitter and model that made them: stored rows of another version are redone."""

    async def rows(self, texts: Sequence[str]) -> Sequence[tuple[list[list[Any]], bytes]]:
        """(spans, vector blob) for each text, in order."""
        ...


class Progress:
    """What the ingestion job reports while it runs; the CLI draws it, tests may record it.

    A class of no-ops rather than a Protocol: a display overrides what it draws.
    """

    def start(self, files: int) -> None: ...

    def file_done(self, path: str, outcome: str, chunks: int) -> None:
        """A file is settled: one that needs no embedding as soon as it is read, one
        that does once it is written, so files may be reported out of reading order."""

    def embedded(self, count: int) -> None:
        """Texts embedded for the document ``file_done`` reports next (0 for none)."""

    def recognised(self, pages: int) -> None:
        """Pages of the file just read whose text came from OCR (only called when > 0)."""


Image = npt.NDArray[np.uint8]
"""A page as pixels: height x width x 3, RGB."""


class Recogniser(Protocol):
    """Reads the lines of text in a page image (OCR), each with the engine's score.

    ``rag.ingest.ocr.page`` decides what to keep (orientation, the confidence cut); an
    engine only reads. Lines come in reading order, top to bottom.
    """

    def recognise(self, image: Image) -> list[tuple[str, float]]:
        """(text, score in [0, 1]) of every line found; empty for a page without text."""
        ...


Loader = Callable[[Path, "IngestSettings"], LoadedDocument]
"""Reads one file into a document (``rag.ingest.loaders.load``); blocking, may be slow."""


class DocumentConverter(Protocol):
    """Turns one file into Markdown elsewhere (Workers AI's ``tomarkdown``): scans, images
    and Office files, with the local loaders as the fallback (``rag.ingest.convert``)."""

    name: str

    async def convert(self, name: str, data: bytes, media_type: str) -> Converted:
        """The file's text as Markdown; raises a ``RagError`` when it cannot be converted
        (a ``DocumentError`` for the file itself, a ``CloudflareError`` for the call)."""
        ...


class Cost(Protocol):
    """What the ledger reads from a ``rag.backends.cloudflare.neurons.CallCost``."""

    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def neurons(self) -> float: ...
    @property
    def usd(self) -> float: ...
    @property
    def estimated(self) -> bool: ...


class QAService(Protocol):
    """What the web app and the CLI need from the composition root (``rag.service``).

    The real service keeps documents, API keys and a usage ledger in its database. An
    implementation without one (a test's scripted service) subclasses this Protocol and
    keeps the defaults below: no database, and documents and usage "not found" (404).
    """

    def ask(
        self,
        question: str,
        top_k: int | None = None,
        history: Sequence[Turn] | None = None,
        *,
        trace_id: str | None = None,
    ) -> AsyncGenerator[AnswerEvent, None]:
        """``sources``, then ``delta`` events, then ``done``; or a single ``error``.

        ``history`` holds the conversation's earlier turns, oldest first, so a follow-up
        question is understood (``rag.answer.condense``). ``trace_id`` is the request's,
        minted where it entered (a new one when None). Raises ``InputError`` before the
        first event for a question or ``top_k`` it cannot take: the one validation.
        Closing the generator stops the answer at once (a client went away).
        """
        ...

    async def search(self, query: str, k: int | None = None) -> list[Hit]:
        """Ranked hits; raises ``InputError`` for a query or ``k`` it cannot take."""
        ...

    async def search_result(self, query: str, k: int | None = None) -> SearchResult:
        """``search``'s hits and whether they are keyword-ranked only (degraded mode)."""
        return SearchResult(await self.search(query, k))

    async def health(self) -> dict[str, object]: ...

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession] | None:
        """The database of documents and keys, or None when the service keeps none."""
        return None

    @property
    def quick_sessions(self) -> async_sessionmaker[AsyncSession] | None:
        """The same database for work a request can do without (a shared rate-limit
        count): it waits at most ``[database] best_effort_wait_s`` for a lock."""
        return None

    async def ingest(
        self, paths: Sequence[Path | Staged], progress: Progress | None = None
    ) -> IngestReport:
        """Index files and folders; a ``Staged`` copy is recorded as the file it copies."""
        raise NotFound("this service keeps no documents")

    async def delete_document(self, doc_id: str) -> tuple[str, list[str]] | None:
        """Delete a document: (its source, the chunk ids it lost), or None if unknown."""
        raise NotFound("this service keeps no documents")

    async def usage_report(self, days: int = 7) -> dict[str, Any]:
        """Model usage per UTC day and today's budget (``rag usage``, ``GET /v1/usage``)."""
        raise NotFound("this service keeps no usage ledger")

    def observe_costs(self, observer: Callable[[Cost], None]) -> Callable[[], None]:
        """Call ``observer`` with every costed model call until the returned function runs."""
        return lambda: None

    def observe_db_failures(self, observer: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``observer`` with (what, "read" or "write") for every best-effort database
        operation that failed (``rag.db.failures``), until the returned function runs."""
        return lambda: None

    async def readiness(self) -> dict[str, object]:
        """``status`` ("ok", "degraded": answers work but writes fail, "unavailable") and,
        for a service with a database, ``database``: readable, writable and the reason."""
        return {"status": "ok"}
