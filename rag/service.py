"""The one composition root: settings in, a working service out.

The web app, the CLI and evaluation all build their pipeline here, so a backend chosen
in config is the backend every user gets. ``build_components`` is the registry that
maps ``backend`` and ``[chat] providers`` to implementations of the seams in ``rag.ports``.

Cloudflare choices, and why:

* The extractive fallback answers with the local ONNX embedder (all-MiniLM-L6-v2, a hard
  dependency, ~0.4 s to load), not Workers AI: it runs exactly when Workers AI failed or
  the neuron budget is spent, so it must cost nothing and need no network.
* Over budget, questions are still embedded and reranked on Workers AI (a few neurons a
  question, in the ledger and the ``done`` event): without them there is no retrieval.
  Generation, the expensive part, moves to the next provider; ingestion refuses to start.
* A follow-up question is condensed by the Workers AI chat model (one small, unstreamed
  call, in the answer's usage) when the local rule says it needs its earlier turns;
  over budget, or when that call fails, the local rule condenses it instead.
* Vectorize serves the dense search; SQLite keeps every vector (the ingest runner writes
  them) and FTS5 still serves the keyword side.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from rag import __version__
from rag.answer.cache import AnswerCache, cache_key, cacheable, key_parts, replay
from rag.answer.chain import Closer, FallbackChain, budget_gate, chat_providers
from rag.answer.condense import Condenser, condense_with
from rag.answer.flow import answer_events
from rag.config import Settings
from rag.db.engine import create_engine, session_factory, upgrade
from rag.db.tables import Chunk, Document
from rag.domain import AnswerEvent, DoneEvent, Hit, Turn
from rag.errors import CloudflareError, ConfigError, InputError
from rag.ingest import store
from rag.ingest.runner import Ingestor, IngestReport, Progress
from rag.ports import Embedder, KeywordSearch, Reranker
from rag.prompts import CONDENSE_MAX_TOKENS
from rag.retrieval.retriever import Retriever
from rag.usage import BudgetExhausted, Ledger, projected_chat_neurons

log = logging.getLogger(__name__)

MAX_TOP_K = 50


@dataclass
class Components:
    embedder: Embedder
    keyword: KeywordSearch
    reranker: Reranker
    chat: FallbackChain
    ledger: Ledger
    min_relevance: float
    """The evidence gate's threshold: its scale belongs to the reranker."""
    client: Any = None
    """The one ``CloudflareClient``, when a role runs on Workers AI or Vectorize."""
    closers: list[Closer] = field(default_factory=list)


def build_components(
    settings: Settings,
    sessions: Any,
    embedder: Embedder | None,
    *,
    client: Any = None,
    environ: Mapping[str, str] | None = None,
    openai_transport: httpx.AsyncBaseTransport | None = None,
    answer_embedder: Embedder | None = None,
) -> Components:
    """The registry: which implementation serves each role for ``settings.backend``."""
    from rag.backends.local.keyword import Fts5KeywordSearch

    ledger = Ledger(sessions, settings.prices, settings.budget)
    closers: list[Closer] = []
    if settings.backend == "cloudflare":
        from rag.backends.cloudflare.neurons import PriceTable
        from rag.backends.cloudflare.workers_ai import (
            WorkersAIEmbedder,
            WorkersAIReranker,
            bge_tokenizer,
        )

        if client is None:
            raise ConfigError("the cloudflare backend needs its CloudflareClient")
        prices, cf = PriceTable(settings.prices), settings.cloudflare
        tokenizer = bge_tokenizer()
        chosen = embedder or WorkersAIEmbedder(client, cf, tokenizer, prices, ledger)
        reranker: Reranker = WorkersAIReranker(client, cf, prices, tokenizer, ledger)
        min_relevance = cf.min_rerank_score
    else:
        from rag.backends.local.embedder import OnnxEmbedder
        from rag.retrieval.fusion import HybridReranker

        chosen = embedder or OnnxEmbedder.from_settings(settings.local)
        reranker = HybridReranker(
            keyword_weight=settings.retrieval.keyword_weight,
            identifier_weight=settings.retrieval.identifier_keyword_weight,
        )
        min_relevance = settings.retrieval.min_relevance
        answer_embedder = answer_embedder or chosen
    providers = chat_providers(
        settings, client, ledger, answer_embedder, environ, openai_transport, closers
    )
    return Components(
        embedder=chosen,
        keyword=Fts5KeywordSearch(sessions),
        reranker=reranker,
        chat=FallbackChain(providers, budget_gate(settings, ledger)),
        ledger=ledger,
        min_relevance=min_relevance,
        client=client,
        closers=closers,
    )


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
        self.ledger = components.ledger
        self.cache = AnswerCache(self.sessions, settings.cache)
        self.index = index
        self.retriever = Retriever(
            self.sessions,
            components.embedder,
            index,
            components.keyword,
            components.reranker,
            candidates=settings.retrieval.candidates,
            min_relevance=components.min_relevance,
            min_coverage=settings.retrieval.min_term_coverage,
            coverage_sources=settings.answer.max_sources,
        )
        self._generation = -1
        self._key_parts = key_parts(
            settings, self.embedder.model_id, self.chat, components.min_relevance
        )
        self._metered = any(p.name.startswith("workers-ai:") for p in self.chat.providers)
        # On Cloudflare the chat model condenses follow-ups (when it is in the chain).
        self._condenser: Condenser | None = None
        if settings.backend == "cloudflare":
            self._condenser = next(
                (p for p in self.chat.providers if isinstance(p, Condenser)), None
            )

    async def ask(
        self, question: str, top_k: int | None = None, history: Sequence[Turn] | None = None
    ) -> AsyncIterator[AnswerEvent]:
        began = time.perf_counter()
        question = self.check_question(question)
        k = self._k(top_k)
        trace_id = uuid.uuid4().hex
        with self.ledger.meter("ask", trace_id) as meter:
            try:
                if history:
                    # Before the cache and retrieval: a follow-up is cached and retrieved
                    # as the standalone question it stands for (rag.answer.condense: the
                    # local rule, or the chat model on Cloudflare, metered with the answer).
                    asked = question
                    question = await condense_with(
                        self._condenser, question, history, self._condense_refusal
                    )
                    if question != asked:
                        # Lengths only: question text stays out of the logs.
                        log.debug(
                            "follow-up condensed: %d -> %d characters", len(asked), len(question)
                        )
                generation = await self._sync_index()
                key = cache_key(question, generation=generation, top_k=k, **self._key_parts)
                cached = await self.cache.get(key)
                if cached is not None:
                    for event in replay(cached, began):
                        if isinstance(event, DoneEvent) and meter.calls:
                            # The answer was free, condensing the follow-up was not.
                            event = msgspec.structs.replace(
                                event, usage=meter.usage(), trace_id=trace_id
                            )
                        yield event
                    return
                retrieval = await self.retriever.retrieve(question, k)
                if self._metered and self.settings.budget.daily_neurons > 0:
                    await self.ledger.refresh()  # the gate reads it before generation
                events: list[AnswerEvent] = []
                async for event in answer_events(
                    question, retrieval, self.chat, began, trace_id=trace_id, usage=meter.usage
                ):
                    events.append(event)
                    if isinstance(event, DoneEvent):
                        # Written before ``done`` goes out: a client that leaves right
                        # after it must not lose the answer's cost or its cache entry.
                        await self.ledger.flush()
                        if cacheable(events, self.chat.preferred):
                            await self.cache.put(key, question, generation, events)
                    yield event
            finally:
                await self.ledger.flush_quietly()

    async def _condense_refusal(self, question: str, history: Sequence[Turn]) -> str | None:
        """Why the chat model must not condense this follow-up: the budget, like the gate."""
        if self.settings.budget.daily_neurons <= 0:
            return None
        await self.ledger.refresh()
        chars = len(question) + sum(len(t.question) + len(t.answer) for t in history)
        model = self.settings.cloudflare.chat_model
        projected = projected_chat_neurons(self.settings.prices, model, chars, CONDENSE_MAX_TOKENS)
        return self.ledger.over_budget(projected)

    async def search(self, query: str, k: int | None = None) -> list[Hit]:
        query = self.check_question(query)
        await self._sync_index()
        with self.ledger.meter("search"):
            try:
                return (await self.retriever.retrieve(query, self._k(k))).hits
            finally:
                await self.ledger.flush()

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
            # Vectorize counts its vectors itself (``rag vectorize info``).
            "vectors_loaded": len(self.index) if hasattr(self.index, "__len__") else None,
        }

    async def usage_report(self, days: int = 7) -> dict[str, Any]:
        """Per-day usage and today's budget: ``rag usage`` and ``GET /v1/usage``."""
        return await self.ledger.report(days)

    async def ingest(self, paths: Sequence[Path], progress: Progress | None = None) -> IngestReport:
        """Index ``paths``; the report carries what the run spent (neurons, dollars)."""
        if self.settings.backend == "cloudflare" and self.settings.budget.daily_neurons > 0:
            await self.ledger.refresh()
            if reason := self.ledger.over_budget():
                raise BudgetExhausted(
                    f"ingestion not started: {reason}. Raise [budget] daily_neurons "
                    "(0 = no cap) or wait for 00:00 UTC"
                )
        ingestor = Ingestor(
            self.settings.ingest, self.sessions, self.embedder, self.index, progress
        )
        with self.ledger.meter("ingest") as meter:
            try:
                report = await ingestor.run(paths)
            finally:
                await self.ledger.close()
        usage = meter.usage()
        report.neurons, report.usd = usage.neurons, usage.usd
        async with self.sessions() as session:
            # Our own writes are already in the in-memory index.
            self._generation = await store.generation(session)
        await self.cache.purge(self._generation)
        return report

    async def delete_document(self, doc_id: str) -> tuple[str, list[str]] | None:
        """Delete a document, its chunks and vectors; returns (its source, lost chunk ids).

        SQLite commits first; the serving index follows, through the outbox when it keeps
        one (Vectorize), so a crash between the two loses nothing.
        """
        durable = getattr(self.index, "durable_outbox", False)
        async with self.sessions() as session, session.begin():
            doc = await session.get(Document, doc_id)
            if doc is None:
                return None
            source = doc.source
            lost = await store.delete_document(
                session, doc, outbox=self.embedder.model_id if durable else None
            )
        if durable:
            await self.index.flush()
        else:
            await self.index.delete(lost)
        async with self.sessions() as session:
            # Our own write is already in the in-memory index: no reload on the next query.
            self._generation = await store.generation(session)
        return source, lost

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

    async def _sync_index(self) -> int:
        """Reload the in-memory index when another process (a CLI ingest) changed the data."""
        async with self.sessions() as session:
            current = await store.generation(session)
        if current != self._generation:
            reload = getattr(self.index, "reload", None)  # Vectorize has nothing to reload
            if self._generation != -1 and reload is not None:
                await reload()
            self._generation = current
        return current


async def open_index(
    settings: Settings, engine: AsyncEngine, embedder: Embedder, client: Any = None
) -> Any:
    """The serving index: Vectorize on Cloudflare, else numpy over the SQLite vectors."""
    if settings.backend == "cloudflare":
        from rag.backends.cloudflare.vectorize import VectorizeIndex

        name = settings.cloudflare.index_name
        return VectorizeIndex(
            client,
            name,
            embedder.dimension,
            session_factory(engine),
            model_id=embedder.model_id,  # ingestion feeds it through the outbox
        )
    from rag.backends.local.vector_index import NumpyIndex

    return await NumpyIndex.load(engine, embedder.model_id, embedder.dimension)


async def drain_outbox(index: Any) -> None:
    """Send index writes a killed ingest left queued (``index_outbox``; Vectorize only).

    A Cloudflare outage must not stop the service from starting: the rows stay queued
    for the next ingest's flush or the next start, and the failure is logged.
    """
    flush = getattr(index, "flush", None)
    if flush is None:
        return
    try:
        sent = await flush()
    except CloudflareError as exc:
        if isinstance(exc, ConfigError):  # a refused token or unknown model: say so now
            raise
        log.warning("index writes left queued by an earlier ingest stay queued: %s", exc)
        return
    if sent:
        log.info("sent %d index writes an earlier ingest left queued", sent)


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    migrate: bool = True,
    environ: Mapping[str, str] | None = None,
    cloudflare_transport: httpx.AsyncBaseTransport | None = None,
    openai_transport: httpx.AsyncBaseTransport | None = None,
    answer_embedder: Embedder | None = None,
) -> AsyncIterator[RagService]:
    """Migrate the database, load models and the index; dispose of them on exit.

    The transports and ``environ`` exist for tests (an in-process fake Cloudflare or
    OpenAI endpoint); ``answer_embedder`` replaces the extractive answerer's embedder.
    """
    client = None
    if settings.backend == "cloudflare" or "workers-ai" in settings.chat.providers:
        from rag.backends.cloudflare.client import CloudflareClient

        # Before anything else: missing credentials fail at once, naming what to set.
        client = CloudflareClient.from_settings(settings, environ, cloudflare_transport)
    components: Components | None = None
    engine = None
    try:
        if migrate:
            await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        sessions = session_factory(engine)
        components = build_components(
            settings,
            sessions,
            embedder,
            client=client,
            environ=environ,
            openai_transport=openai_transport,
            answer_embedder=answer_embedder,
        )
        index = await open_index(settings, engine, components.embedder, client)
        await drain_outbox(index)
        service = RagService(settings, engine, components, index)
        async with service.sessions() as session:
            service._generation = await store.generation(session)
        yield service
    finally:
        if components is not None:
            await components.ledger.close()
            for close in components.closers:
                await close()
        if client is not None:
            await client.aclose()
        if engine is not None:
            await engine.dispose()
