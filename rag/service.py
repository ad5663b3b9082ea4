"""The one composition root: settings in, a working service out.

The web app, the CLI and (later) evaluation all build their pipeline here, so a
backend chosen in config is the backend every user gets. ``build_components`` is the
registry that maps ``backend`` to implementations of the seams in ``rag.ports``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from rag import __version__
from rag.answer.flow import answer_events
from rag.config import Settings
from rag.db.engine import create_engine, session_factory, upgrade
from rag.db.tables import Chunk, Document
from rag.domain import AnswerEvent, Hit
from rag.errors import ConfigError, InputError
from rag.ingest import store
from rag.ingest.runner import Ingestor, IngestReport, Progress
from rag.ports import ChatModel, Embedder, KeywordSearch, Reranker
from rag.retrieval.retriever import Retriever

MAX_TOP_K = 50


@dataclass
class Components:
    embedder: Embedder
    keyword: KeywordSearch
    reranker: Reranker
    chat: ChatModel


def build_components(settings: Settings, sessions: Any, embedder: Embedder | None) -> Components:
    """The registry: which implementation serves each role for ``settings.backend``."""
    if settings.backend == "local":
        from rag.backends.local.embedder import OnnxEmbedder
        from rag.backends.local.extractive import ExtractiveAnswerer
        from rag.backends.local.keyword import Fts5KeywordSearch
        from rag.retrieval.fusion import HybridReranker

        chosen: Embedder = embedder or OnnxEmbedder.from_settings(settings.local)
        return Components(
            embedder=chosen,
            keyword=Fts5KeywordSearch(sessions),
            reranker=HybridReranker(keyword_weight=settings.retrieval.keyword_weight),
            chat=ExtractiveAnswerer(
                chosen,
                max_sentences=settings.answer.max_sentences,
                max_sources=settings.answer.max_sources,
            ),
        )
    raise ConfigError(f"backend {settings.backend!r} is not available in this build")


class RagService:
    """Ask, search and ingest over one database and one set of models."""

    def __init__(
        self, settings: Settings, engine: AsyncEngine, components: Components, index: Any
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = session_factory(engine)
        self.embedder = components.embedder
        self.chat = components.chat
        self.reranker = components.reranker
        self.index = index
        self.retriever = Retriever(
            self.sessions,
            components.embedder,
            index,
            components.keyword,
            components.reranker,
            candidates=settings.retrieval.candidates,
            min_relevance=settings.retrieval.min_relevance,
            min_coverage=settings.retrieval.min_term_coverage,
            coverage_sources=settings.answer.max_sources,
        )
        self._generation = -1

    async def ask(self, question: str, top_k: int | None = None) -> AsyncIterator[AnswerEvent]:
        began = time.perf_counter()
        question = self.check_question(question)
        k = self._k(top_k)
        await self._sync_index()
        retrieval = await self.retriever.retrieve(question, k)
        async for event in answer_events(question, retrieval, self.chat, began):
            yield event

    async def search(self, query: str, k: int | None = None) -> list[Hit]:
        query = self.check_question(query)
        await self._sync_index()
        return (await self.retriever.retrieve(query, self._k(k))).hits

    async def health(self) -> dict[str, object]:
        async with self.sessions() as session:
            documents = await session.scalar(
                select(func.count()).select_from(Document).where(Document.status == "ok")
            )
            chunks = await session.scalar(select(func.count()).select_from(Chunk))
        return {
            "status": "ok",
            "version": __version__,
            "backend": self.settings.backend,
            "embedder": self.embedder.model_id,
            "reranker": self.reranker.name,
            "answerer": self.chat.name,
            "documents": documents,
            "chunks": chunks,
            "vectors_loaded": len(self.index),
        }

    async def ingest(self, paths: Sequence[Path], progress: Progress | None = None) -> IngestReport:
        ingestor = Ingestor(
            self.settings.ingest, self.sessions, self.embedder, self.index, progress
        )
        report = await ingestor.run(paths)
        async with self.sessions() as session:
            # Our own writes are already in the in-memory index.
            self._generation = await store.generation(session)
        return report

    async def is_empty(self) -> bool:
        async with self.sessions() as session:
            count = await session.scalar(select(func.count()).select_from(Document))
        return not count

    def check_question(self, question: str) -> str:
        text = question.strip() if isinstance(question, str) else ""
        if not text:
            raise InputError("question is empty: ask something")
        limit = self.settings.server.max_question_chars
        if len(text) > limit:
            raise InputError(
                f"question is {len(text)} characters long; the limit is {limit} "
                "(server.max_question_chars)"
            )
        return text

    def _k(self, k: int | None) -> int:
        if k is None:
            return self.settings.retrieval.top_k
        if not 1 <= k <= MAX_TOP_K:
            raise InputError(f"top_k must be between 1 and {MAX_TOP_K}, not {k}")
        return min(k, self.settings.retrieval.candidates)

    async def _sync_index(self) -> None:
        """Reload the in-memory index when another process (a CLI ingest) changed the data."""
        async with self.sessions() as session:
            current = await store.generation(session)
        if current != self._generation:
            if self._generation != -1:
                await self.index.reload()
            self._generation = current


async def open_index(settings: Settings, engine: AsyncEngine, embedder: Embedder) -> Any:
    from rag.backends.local.vector_index import NumpyIndex

    return await NumpyIndex.load(engine, embedder.model_id, embedder.dimension)


@asynccontextmanager
async def open_service(
    settings: Settings, *, embedder: Embedder | None = None, migrate: bool = True
) -> AsyncIterator[RagService]:
    """Migrate the database, load models and the index; dispose of them on exit."""
    if migrate:
        await upgrade(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        sessions = session_factory(engine)
        components = build_components(settings, sessions, embedder)
        index = await open_index(settings, engine, components.embedder)
        service = RagService(settings, engine, components, index)
        async with service.sessions() as session:
            service._generation = await store.generation(session)
        yield service
    finally:
        await engine.dispose()
