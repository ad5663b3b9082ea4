"""Question to ranked, gated hits: embed, dense + keyword candidates, rerank, evidence gate.

Every database read happens here, before an answer starts streaming, so a slow model
never holds a database session.

A chunk too thin to answer anything (``MIN_CONTENT_WORDS``) never becomes a candidate
unless it is its whole document: a heading over one word ("SYNOPSIS / git *") wins places
on the one word it shares with a question.

An answer may ask for the first source's *opening* as well (``retrieve(opening=True)``):
the line a manual page starts with to say what it is, its NAME line. It is marked in its
place when ranked, else added after the ranked hits (``rag.retrieval.opening``).

Degraded mode (``rag.retrieval.refusals``): when Workers AI or Vectorize refuses the query
(or refused it a moment ago), the candidates are FTS5's alone, in BM25 order, the
reranker is not called, and ``Retrieval.degraded`` says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from sqlalchemy import func, select

from rag.db.tables import Chunk, Document, Vector
from rag.domain import Hit
from rag.errors import CloudflareError
from rag.ports import Embedder, KeywordSearch, Reranker, VectorIndex, Vectors
from rag.retrieval.fusion import has_identifier
from rag.retrieval.gate import term_coverage
from rag.retrieval.opening import opening_line
from rag.retrieval.refusals import Refusals
from rag.text import has_content_words

MIN_CONTENT_WORDS = 3
"""A chunk with fewer distinct content words (``rag.text.STOP_WORDS`` left out, its
heading counted) is never a candidate unless it is all its document holds. The
extractive answerer quotes no sentence of fewer than three, and a model has nothing to
cite in it; but its cosine to a short question that shares its one word runs high: six
"SYNOPSIS / git *" chunks (gittutorial, gitworkflows, ...) were the top sources for
"What does git rerere do?". On git's manual this lifts MRR@10 from 0.521 to 0.542 and
halves false refusals (2 of 41 to 1); the handbook has no such chunk."""


@dataclass(frozen=True, slots=True)
class Retrieval:
    hits: list[Hit]
    """Ranked, best first; then the first one's document's opening when it was asked for
    and there is one (``Hit.opening``)."""
    grounded: bool
    """False when no hit clears the evidence gate: the documents do not cover the question."""
    best_relevance: float | None
    coverage: float
    """Share of the question's content words found in the top sources (rag.retrieval.gate)."""
    seconds: float
    degraded: str | None = None
    """Why the hits are keyword-only (Workers AI refuses every call), or None."""


Ranked = list[tuple[str, float]]
"""(chunk id, score) pairs, best first."""

RetrievalObserver = Callable[[list[Hit], Retrieval], None]
"""Sees every retrieval with all its candidates before reranking (evaluation records them)."""


class Retriever:
    def __init__(
        self,
        sessions: Any,
        embedder: Embedder,
        index: VectorIndex,
        keyword: KeywordSearch,
        reranker: Reranker,
        *,
        candidates: int,
        min_relevance: float,
        min_coverage: float = 0.0,
        coverage_sources: int = 3,
        refusals: Refusals | None = None,
        degraded_min_coverage: float = 0.75,
    ) -> None:
        self.sessions = sessions
        self.embedder = embedder
        self.index = index
        self.keyword = keyword
        self.reranker = reranker
        self.candidates = candidates
        self.min_relevance = min_relevance
        self.min_coverage = min_coverage
        self.coverage_sources = coverage_sources
        self.refusals = refusals or Refusals(0.0)
        self.degraded_min_coverage = degraded_min_coverage
        self.observers: list[RetrievalObserver] = []

    async def _dense(self, query: str) -> tuple[Vectors | None, Ranked, str | None]:
        """The query vector and the dense candidates, or (None, [], why) while refused."""
        await self.refusals.refresh()
        if (refused := self.refusals.reason()) is not None:
            return None, [], refused  # the call would be refused again: do not make it
        try:
            vector: Vectors = (await self.embedder.embed([query], "query"))[0]
            return vector, await self.index.query(vector, self.candidates), None
        except CloudflareError as exc:
            if (refused := await self.refusals.note(exc)) is None:
                raise
            return None, [], refused

    async def candidates_for(self, query: str) -> tuple[list[Hit], str | None]:
        """Dense and keyword candidates, each with both scores where the chunk has them,
        and why there are no dense ones (degraded mode), or None.

        Without a query vector a hit's score and relevance are its BM25 score: the order
        is BM25's, and the gate does not read them then.
        """
        hits, degraded, _ = await self._candidates(query)
        return hits, degraded

    async def _candidates(self, query: str) -> tuple[list[Hit], str | None, Vectors | None]:
        vector, dense, degraded = await self._dense(query)
        keyword = await self.keyword.search(query, self.candidates)
        dense_rank = {cid: (rank, score) for rank, (cid, score) in enumerate(dense, start=1)}
        keyword_rank = {cid: (rank, score) for rank, (cid, score) in enumerate(keyword, start=1)}
        ids = list(dict.fromkeys([cid for cid, _ in dense] + [cid for cid, _ in keyword]))
        rows = await self._rows(ids)
        only_keyword = [cid for cid in ids if cid not in dense_rank and cid in rows]
        cosines = {} if vector is None else await self._cosines(only_keyword, vector)
        hits = []
        for cid in ids:
            if cid not in rows:
                continue  # deleted since the index answered
            chunk, doc = rows[cid]
            d = dense_rank.get(cid)
            k = keyword_rank.get(cid)
            cosine = d[1] if d else cosines.get(cid)
            score = cosine if cosine is not None else 0.0
            if vector is None and k is not None:
                score = k[1]
            hits.append(_hit(chunk, doc, score, cosine, d, k))
        return hits, degraded, vector

    async def retrieve(self, query: str, k: int, *, opening: bool = False) -> Retrieval:
        """The ``k`` best hits and the gate's verdict; with ``opening``, a grounded
        retrieval's first source's document opening follows them (``rag.retrieval.opening``)."""
        began = time.perf_counter()
        candidates, degraded, vector = await self._candidates(query)
        if degraded is None:
            hits = await self.reranker.rerank(query, candidates, k)
        else:
            hits = candidates[:k]  # BM25 order: the reranker is refused like the embedding
        best = max((h.relevance for h in hits), default=None)
        coverage = term_coverage(query, (h.text for h in hits[: self.coverage_sources]))
        if degraded is not None:
            # No query vector, so no cosine and no reranker score: the one evidence left
            # is lexical. FTS5 ORs the terms, so a single common word brings candidates;
            # a stricter coverage than the normal gate's (which a cosine backs up) stands
            # in for the missing semantic check. On the handbook, keyword-only: 0.5 keeps
            # 53/54 answerable but refuses 5/10 unanswerable; 0.75 keeps 43/54, refuses
            # 10/10 (README, "Degraded mode").
            grounded = bool(hits) and coverage >= self.degraded_min_coverage
        else:
            grounded = best is not None and coverage >= self.min_coverage
        if degraded is None and grounded and best is not None and best < self.min_relevance:
            # A bare identifier ("3036", "pdf_timeout_s") embeds to a meaningless vector;
            # the top sources containing every word of the question is the evidence then.
            grounded = coverage == 1.0 and has_identifier(query)
        if opening and grounded and vector is not None:
            hits = await self._with_opening(hits, vector)  # the gate read the ranked alone
        seconds = time.perf_counter() - began
        retrieval = Retrieval(hits, grounded, best, coverage, seconds, degraded)
        for observe in self.observers:
            observe(candidates, retrieval)
        return retrieval

    async def _with_opening(self, hits: list[Hit], vector: Vectors) -> list[Hit]:
        """The hits with the first one's document's opening marked (``Hit.opening``): in
        its place when it is ranked below the first, else added after them. The first hit
        is never one: it is a source like any other then."""
        top = hits[0]
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(Chunk, Document)
                    .join(Document, Document.id == Chunk.document_id)
                    .where(Chunk.document_id == top.document_id, Chunk.ordinal == 0)
                )
            ).first()
        if row is None or row[0].id == top.chunk_id:
            return hits
        chunk, doc = row
        if opening_line(chunk.text, chunk.heading_path) is None:
            return hits
        if any(h.chunk_id == chunk.id for h in hits):
            return [
                msgspec.structs.replace(h, opening=True) if h.chunk_id == chunk.id else h
                for h in hits
            ]
        cosine = (await self._cosines([chunk.id], vector)).get(chunk.id, 0.0)
        return [*hits, msgspec.structs.replace(_hit(chunk, doc, cosine, cosine), opening=True)]

    async def _rows(self, ids: Sequence[str]) -> dict[str, tuple[Chunk, Document]]:
        if not ids:
            return {}
        async with self.sessions() as session:
            result = await session.execute(
                select(Chunk, Document)
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.id.in_(list(ids)))
            )
            rows = {chunk.id: (chunk, doc) for chunk, doc in result}
            thin = {cid for cid, (chunk, _) in rows.items() if not _substantial(chunk.text)}
            fragments = await _longer(session, {rows[cid][0].document_id for cid in thin})
        return {
            cid: row
            for cid, row in rows.items()
            if cid not in thin or row[0].document_id not in fragments
        }

    async def _cosines(self, ids: Sequence[str], query: Any) -> dict[str, float]:
        """Cosine of chunks only BM25 found, from their stored vectors."""
        if not ids:
            return {}
        async with self.sessions() as session:
            rows = await session.execute(
                select(Vector.chunk_id, Vector.vector).where(
                    Vector.chunk_id.in_(list(ids)), Vector.model_id == self.embedder.model_id
                )
            )
            pairs = [(cid, blob) for cid, blob in rows]
        if not pairs:
            return {}
        matrix = np.frombuffer(b"".join(blob for _, blob in pairs), dtype="<f4")
        matrix = matrix.reshape(len(pairs), -1)
        scores = matrix @ np.asarray(query, dtype=np.float32)
        return {cid: float(s) for (cid, _), s in zip(pairs, scores, strict=True)}


def _hit(
    chunk: Chunk,
    doc: Document,
    score: float,
    cosine: float | None,
    dense: tuple[int, float] | None = None,
    keyword: tuple[int, float] | None = None,
) -> Hit:
    """A stored chunk as a hit: ``dense`` and ``keyword`` are its (rank, score) there."""
    return Hit(
        chunk_id=chunk.id,
        document_id=doc.id,
        source=doc.path,
        title=doc.title,
        text=chunk.text,
        score=score,
        relevance=score,
        page_start=chunk.page_start,
        page_end=chunk.page_end,
        heading_path=tuple(chunk.heading_path),
        dense_score=cosine,
        dense_rank=dense[0] if dense else None,
        keyword_score=keyword[1] if keyword else None,
        keyword_rank=keyword[0] if keyword else None,
        recognised=chunk.recognised,
        confidence=chunk.confidence,
    )


async def _longer(session: Any, documents: set[str]) -> set[str]:
    """Which of these documents have more than one chunk."""
    if not documents:
        return set()
    result = await session.execute(
        select(Chunk.document_id)
        .where(Chunk.document_id.in_(list(documents)))
        .group_by(Chunk.document_id)
        .having(func.count() > 1)
    )
    return set(result.scalars())


def _substantial(text: str) -> bool:
    """Whether ``text`` holds enough content words to answer anything (``MIN_CONTENT_WORDS``)."""
    return has_content_words(text, MIN_CONTENT_WORDS)
