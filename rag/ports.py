"""The seams: one small Protocol per role. ``rag.service`` picks implementations from config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from rag.domain import AnswerEvent, Hit, Turn

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

    Optional, outside the Protocol: an index that sets ``durable_outbox = True`` and has
    ``async flush() -> int`` and ``model_id`` (Vectorize) is not written per document by
    ingestion. Its writes are queued in ``index_outbox`` in the same transaction as the
    chunks, and ``flush`` sends them in batches (``rag.ingest.runner``); ``open_service``
    flushes at start what a killed run left. Any other index (the in-memory numpy one,
    rebuilt from SQLite at start) gets ``upsert``/``delete`` right after each commit.
    """

    async def upsert(self, ids: Sequence[str], vectors: Vectors) -> None: ...

    async def delete(self, ids: Sequence[str]) -> None: ...

    async def query(self, vector: Vectors, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, cosine) pairs, best first."""
        ...


class KeywordSearch(Protocol):
    async def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, score) pairs, best first; higher is better."""
        ...


class Reranker(Protocol):
    name: str

    async def rerank(self, query: str, candidates: Sequence[Hit], k: int) -> list[Hit]:
        """The best ``k`` candidates in final order, ``score`` and ``relevance`` set."""
        ...


class ChatModel(Protocol):
    name: str

    def stream(self, question: str, sources: Sequence[Hit]) -> AsyncIterator[str]:
        """Answer text in pieces; ``[n]`` markers cite ``sources[n-1]``."""
        ...


class QAService(Protocol):
    """What the web app and the CLI need from the composition root (``rag.service``)."""

    def ask(
        self, question: str, top_k: int | None = None, history: Sequence[Turn] | None = None
    ) -> AsyncIterator[AnswerEvent]:
        """``sources``, then ``delta`` events, then ``done``; or a single ``error``.

        ``history`` holds the conversation's earlier turns, oldest first, so a follow-up
        question is understood (``rag.answer.condense``). Raises ``InputError`` before
        the first event for a question it cannot take.
        """
        ...

    async def search(self, query: str, k: int | None = None) -> list[Hit]: ...

    async def health(self) -> dict[str, object]: ...
