"""Embedding across documents: the window between reading files and writing them.

Files are read ahead into a window of prepared documents. The window's new texts
(deduplicated by sha256 across the window; texts with a stored vector never enter it)
are embedded in batches of ``batch_size`` whatever documents they come from, so a
folder of small files costs one embedding call per ``batch_size`` texts, not one per
file. Each document leaves the window, in order, as soon as every chunk of it has a
vector, and is written in its own transaction: a run killed between two documents loses
nothing but vectors computed for documents not written yet, which the next run redoes.

Memory stays bounded: reading ahead pauses while the window holds ``MAX_DOCS``
documents (or ``batch_size``, if more) or ``MAX_BATCHES`` batches of texts waiting for
a vector (plus the texts of the document that crossed the line).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass

from rag.domain import ChunkDraft, LoadedDocument
from rag.ingest import store
from rag.ingest.discover import Found

MAX_DOCS = 16
"""Documents the window holds at most, or ``batch_size`` if more (enough one-chunk files to
fill a batch): past it, a batch goes out short rather than wait for more."""
MAX_BATCHES = 4
"""Batches of texts waiting for a vector past which reading ahead pauses."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A file read, parsed and chunked, waiting for its embeddings."""

    item: Found
    facts: store.DocumentFacts
    outcome: str
    """new or updated."""
    loaded: LoadedDocument
    drafts: list[ChunkDraft]
    ids: list[str]
    known: dict[str, bytes]
    """Stored vectors by chunk text sha256, as found when the file was read."""


@dataclass(frozen=True, slots=True)
class Ready:
    """A prepared document with a vector for every chunk text, ready to be written."""

    prepared: Prepared
    vectors: dict[str, bytes]
    """By chunk text sha256."""
    embedded: int
    """Texts embedded for it; a text several documents share counts for the first one."""


@dataclass(frozen=True, slots=True)
class _Entry:
    prepared: Prepared
    new: tuple[str, ...]
    """The sha256 of its distinct texts without a stored vector."""
    fresh: int


class Window:
    """Prepared documents waiting for their vectors, in reading order.

    One reader ``add``s documents and ``close``s the window; one writer loops on
    ``next``: a ``Ready`` document to write, or a batch of texts (by sha256) to embed
    and hand back with ``store`` before asking again; None once everything is out.
    """

    def __init__(self, batch_size: int, max_docs: int = MAX_DOCS) -> None:
        self.batch_size = max(1, batch_size)
        self.max_docs = max(1, max_docs, batch_size)
        self.max_texts = MAX_BATCHES * self.batch_size
        self._entries: deque[_Entry] = deque()
        self._pending: dict[str, str] = {}
        """Texts without a vector yet, first seen first (the batch being embedded too)."""
        self._vectors: dict[str, bytes] = {}
        """Vectors embedded for documents still in the window."""
        self._users: Counter[str] = Counter()
        """Documents in the window that need each text of ``_pending`` and ``_vectors``."""
        self._closed = False
        self._changed = asyncio.Condition()

    async def add(self, prepared: Prepared) -> None:
        """Queue a document once there is room for it."""
        async with self._changed:
            await self._changed.wait_for(self._has_room)
            new = {d.sha256: d.text for d in prepared.drafts if d.sha256 not in prepared.known}
            fresh = 0
            for sha, text in new.items():
                if sha not in self._users:
                    self._pending[sha] = text
                    fresh += 1
                self._users[sha] += 1
            self._entries.append(_Entry(prepared, tuple(new), fresh))
            self._changed.notify_all()

    async def close(self) -> None:
        """No more documents will come."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    async def next(self) -> Ready | dict[str, str] | None:
        """The next document ready to write, else the next batch to embed, else None
        once the window is closed and empty; waits for the reader as long as needed."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._head_ready() or self._batch_due() or self._drained()
            )
            if self._head_ready():
                ready = self._pop()
                self._changed.notify_all()  # room for the reader
                return ready
            if self._batch_due():
                return dict(list(self._pending.items())[: self.batch_size])
            return None

    async def store(self, shas: list[str], vectors: list[bytes]) -> None:
        """The vectors of a batch ``next`` handed out, in its order."""
        async with self._changed:
            for sha, blob in zip(shas, vectors, strict=True):
                del self._pending[sha]
                self._vectors[sha] = blob
            self._changed.notify_all()

    def _has_room(self) -> bool:
        return len(self._entries) < self.max_docs and len(self._pending) < self.max_texts

    def _head_ready(self) -> bool:
        return bool(self._entries) and not any(s in self._pending for s in self._entries[0].new)

    def _batch_due(self) -> bool:
        waiting = len(self._pending)
        if waiting >= self.batch_size:
            return True
        # Short, only when no more texts can come before the head document is served.
        return waiting > 0 and (self._closed or len(self._entries) >= self.max_docs)

    def _drained(self) -> bool:
        return self._closed and not self._entries

    def _pop(self) -> Ready:
        entry = self._entries.popleft()
        known = entry.prepared.known
        vectors = {d.sha256: known[d.sha256] for d in entry.prepared.drafts if d.sha256 in known}
        for sha in entry.new:
            vectors[sha] = self._vectors[sha]
            self._users[sha] -= 1
            if not self._users[sha]:
                del self._users[sha]
                del self._vectors[sha]
        return Ready(entry.prepared, vectors, entry.fresh)
