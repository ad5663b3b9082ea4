"""The one composition root: settings in, a working service out.

The web app, the CLI and evaluation all build their pipeline here, so a backend chosen
in config is the backend every user gets; ``rag.registry`` decides which implementation
serves each role.

A follow-up question is condensed before the cache and retrieval: on Cloudflare by the
Workers AI chat model (one small, unstreamed call, in the answer's usage) when the local
rule says it needs its earlier turns; over budget, or when that call fails, the local
rule condenses it instead (``rag.answer.condense``).

An answer never depends on a database write: the cache lookup, its hit counter, the
usage ledger and the cache entry go through a second engine that waits at most
``[database] best_effort_wait_s`` for a lock, and a failure of any of them is logged
once, counted (``rag.db.failures.BestEffort``) and stepped over. Writes that must
happen (ingestion, deletes, start-up) raise a ``StorageError`` naming the cause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from rag import __version__
from rag.answer.cache import AnswerCache, cache_key, cacheable, key_parts, replay
from rag.answer.condense import condense_with
from rag.answer.flow import answer_events
from rag.config import Settings
from rag.db import index_log
from rag.db.engine import create_engine, session_factory, sqlite_path, upgrade
from rag.db.failures import BestEffort, FailureObserver, reason, storage_errors
from rag.db.tables import Chunk, Document
from rag.domain import (
    MAX_TOP_K,
    AnswerEvent,
    DoneEvent,
    Hit,
    IngestReport,
    SearchResult,
    Staged,
    Turn,
    new_trace_id,
)
from rag.errors import (
    AuthError,
    CloudflareError,
    ConfigError,
    DailyLimitExceeded,
    InputError,
    UpstreamUnavailable,
)
from rag.ingest import store
from rag.ingest.runner import Ingestor
from rag.ports import Cost, Progress, QAService, VectorIndex
from rag.prompts import CONDENSE_MAX_TOKENS
from rag.registry import Components, Overrides, build, cloudflare_client, share_state
from rag.retrieval.retriever import Retriever
from rag.storage import cleanup
from rag.usage import BudgetExhausted, projected_chat_neurons

log = logging.getLogger(__name__)

T = TypeVar("T")


def checked_text(value: object, field: str, limit: int) -> str:
    """The text stripped, or an ``InputError`` naming ``field`` and the problem.

    The one check of a question or query, whoever asks (web, CLI, evaluation): the web
    layer maps the error to a 400 before any event is sent.
    """
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise InputError(f"{field} must not be empty")
    if len(text) > limit:
        raise InputError(
            f"{field} is too long: {len(text)} characters, the limit is {limit} "
            "(server.max_question_chars)"
        )
    return text


def checked_k(k: int | None, default: int, candidates: int) -> int:
    """How many sources to use: ``default`` when unset, never more than the candidates."""
    if k is None:
        return default
    if not 1 <= k <= MAX_TOP_K:
        raise InputError(f"top_k must be between 1 and {MAX_TOP_K}, not {k}")
    return min(k, candidates)


class RagService(QAService):
    """Ask, search and ingest over one database and one set of models."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        components: Components,
        best_effort_engine: AsyncEngine | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self._sessions = session_factory(engine)
        # The answer's own database work: gives up on a held lock quickly (see above).
        self.best_effort_engine = best_effort_engine or engine
        self._quick = session_factory(self.best_effort_engine)
        self.db_path = sqlite_path(settings.database_url)
        self.best_effort = BestEffort(self.db_path)
        self.embedder = components.embedder
        self.chat = components.chat
        self.reranker = components.reranker
        self.ledger = components.ledger
        self.cache = AnswerCache(self._quick, settings.cache)
        self.index: VectorIndex = components.index
        self.loader = components.loader
        self.converter = components.converter
        self.refusals = components.refusals
        self.units = components.units
        self.retriever = Retriever(
            self.sessions,
            components.embedder,
            components.index,
            components.keyword,
            components.reranker,
            candidates=settings.retrieval.candidates,
            min_relevance=components.min_relevance,
            min_coverage=settings.retrieval.min_term_coverage,
            coverage_sources=settings.answer.max_sources,
            refusals=components.refusals,
            degraded_min_coverage=settings.retrieval.degraded_min_coverage,
        )
        self._key_parts = key_parts(
            settings, self.embedder.model_id, self.chat, components.min_relevance
        )
        self._metered = any(p.name.startswith("workers-ai:") for p in self.chat.providers)
        self._condenser = components.condenser
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self._sessions

    @property
    def quick_sessions(self) -> async_sessionmaker[AsyncSession]:
        return self._quick

    def observe_costs(self, observer: Callable[[Cost], None]) -> Callable[[], None]:
        return _subscribe(self.ledger.observers, observer)

    def observe_db_failures(self, observer: FailureObserver) -> Callable[[], None]:
        return _subscribe(self.best_effort.observers, observer)

    async def ask(
        self,
        question: str,
        top_k: int | None = None,
        history: Sequence[Turn] | None = None,
        *,
        trace_id: str | None = None,
    ) -> AsyncGenerator[AnswerEvent, None]:
        began = time.perf_counter()
        question = self.check_question(question)
        k = self._k(top_k)
        trace_id = trace_id or new_trace_id()
        events: list[AnswerEvent] = []
        key, generation = "", -1
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
                cached = None
                async with self.best_effort.attempt("cache", "read"):
                    cached = await self.cache.get(key)
                if cached is not None:
                    for event in replay(cached, began):
                        if isinstance(event, DoneEvent) and meter.calls:
                            # The answer was free, condensing the follow-up was not.
                            event = msgspec.structs.replace(
                                event, usage=meter.usage(), trace_id=trace_id
                            )
                        yield event
                    async with self.best_effort.attempt("hits"):
                        await self.cache.count_hit(key)
                    return
                retrieval = await self.retriever.retrieve(question, k, opening=True)
                if self._metered and self.settings.budget.daily_neurons > 0:
                    await self._refresh_spend()  # the gate reads it before generation
                async for event in answer_events(
                    question, retrieval, self.chat, began, trace_id=trace_id, usage=meter.usage
                ):
                    events.append(event)
                    if isinstance(event, DoneEvent):
                        # Written before ``done`` goes out: a client that leaves right
                        # after it must not lose the answer's cost.
                        await self._flush_ledger()
                    yield event
            finally:
                # The cache entry after ``done``, off the answer's path (and still written
                # when the client closes the stream on ``done``): a slow or failing write,
                # or another process storing the same answer first, never holds or fails
                # an answer.
                try:
                    if cacheable(events, self.chat.preferred):
                        # A task of its own, shielded: the web app cancels the stream's
                        # task once ``done`` is out, and that must not cut the write.
                        write = asyncio.create_task(self._store(key, question, generation, events))
                        self._writes.add(write)
                        write.add_done_callback(self._writes.discard)
                        await asyncio.shield(write)
                finally:
                    await self._flush_ledger()

    async def _store(
        self, key: str, question: str, generation: int, events: Sequence[AnswerEvent]
    ) -> None:
        async with self.best_effort.attempt("cache"):
            await self.cache.put(key, question, generation, events)

    async def settle(self) -> None:
        """Wait for cache writes still going on (before the engines are disposed of)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _flush_ledger(self) -> None:
        """Record what was spent; rows that cannot be written stay buffered for later."""
        async with self.best_effort.attempt("ledger"):
            await self.ledger.flush(self._quick)

    async def _refresh_spend(self) -> None:
        """Today's spend for the budget; the figure in memory stands in when the read fails."""
        async with self.best_effort.attempt("budget", "read"):
            await self.ledger.refresh()

    async def _condense_refusal(self, question: str, history: Sequence[Turn]) -> str | None:
        """Why the chat model must not condense this follow-up: the budget, like the gate."""
        await self.refusals.refresh()
        if refused := self.refusals.reason():
            return refused
        if self.settings.budget.daily_neurons <= 0:
            return None
        await self._refresh_spend()
        chars = len(question) + sum(len(t.question) + len(t.answer) for t in history)
        model = self.settings.cloudflare.chat_model
        projected = projected_chat_neurons(self.settings.prices, model, chars, CONDENSE_MAX_TOKENS)
        return self.ledger.over_budget(projected)

    async def search(self, query: str, k: int | None = None) -> list[Hit]:
        return (await self.search_result(query, k)).hits

    async def search_result(self, query: str, k: int | None = None) -> SearchResult:
        query = self.check_question(query, "query")
        await self._sync_index()
        with self.ledger.meter("search"):
            try:
                retrieval = await self.retriever.retrieve(query, self._k(k))
                return SearchResult(retrieval.hits, retrieval.degraded)
            finally:
                await self._flush_ledger()

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
            "vectors_loaded": self.index.loaded(),
        }

    async def readiness(self) -> dict[str, object]:
        """Whether the database can be read and written now (``GET /readyz``).

        The write probe opens a write transaction (a delete that matches nothing) on the
        quick engine and rolls it back: a held lock costs it ``best_effort_wait_s``. A
        full disk shows only when a real write needs a new page, so best-effort writes
        failing now count as not writable until one succeeds. Reasons carry no paths:
        this answers anyone who can reach the server.
        """
        readable, writable, why = False, False, ""
        try:
            async with self._quick() as session:
                await session.execute(select(Document.id).limit(1))
                readable = True
                await session.execute(text("DELETE FROM answer_cache WHERE 1 = 0"))
                await session.rollback()
                writable = True
        except Exception as exc:
            why = reason(exc)
        failing = [
            f"{k}s failing: {r}" for k, r in self.best_effort.failing.items() if "write" in k
        ]
        if writable and failing:
            writable, why = False, "; ".join(failing)
        status = "ok" if writable else "degraded" if readable else "unavailable"
        return {
            "status": status,
            "database": {"readable": readable, "writable": writable, "reason": why or None},
        }

    async def usage_report(self, days: int = 7) -> dict[str, Any]:
        """Per-day usage and today's budget: ``rag usage`` and ``GET /v1/usage``."""
        return await self.ledger.report(days)

    async def ingest(
        self, paths: Sequence[Path | Staged], progress: Progress | None = None
    ) -> IngestReport:
        """Index ``paths``; the report carries what the run spent (neurons, dollars)."""
        if self.settings.backend == "cloudflare" and self.settings.budget.daily_neurons > 0:
            await self.ledger.refresh()
            if reason := self.ledger.over_budget():
                raise BudgetExhausted(
                    f"ingestion not started: {reason}. Raise [budget] daily_neurons "
                    "(0 = no cap) or wait for 00:00 UTC"
                )
        if self.settings.backend == "cloudflare":
            await self._check_workers_ai()
        ingestor = Ingestor(
            self.settings.ingest,
            self.sessions,
            self.embedder,
            self.index,
            progress,
            self.loader,
            self.converter,
            self.settings.jobs,
            units=self.units,
            ocr=self.settings.ocr,
        )
        with self.ledger.meter("ingest") as meter, storage_errors(self.db_path):
            try:
                report = await ingestor.run(paths)
            finally:
                await self.ledger.close()
            generation = await self._sync_index()
        usage = meter.usage()
        report.neurons, report.usd = usage.neurons, usage.usd
        # Entries of other generations are never served again: dropping them can wait.
        async with self.best_effort.attempt("cache"):
            await self.cache.purge(generation)
        await self._prune_log()
        return report

    async def _check_workers_ai(self) -> None:
        """Refuse to start an ingest Workers AI would refuse (3036, a refused token, an
        outage): otherwise every document would fail at its embedding, half the folder
        recorded as failed. Unless a refusal is remembered, one short embedding asks (a
        fraction of a neuron)."""
        await self.refusals.refresh()
        refusal = self.refusals.current()
        error: CloudflareError | None = refusal.error if refusal else None
        if error is None:
            with self.ledger.meter("ingest"):
                try:
                    await self.embedder.embed(["ingestion check"], "passage")
                except CloudflareError as exc:
                    if await self.refusals.note(exc) is None:
                        raise
                    error = exc
                finally:
                    await self._flush_ledger()
        if error is None:
            return
        if isinstance(error, DailyLimitExceeded):
            raise DailyLimitExceeded(
                "ingestion not started: Workers AI's daily neuron allocation is used up "
                "(3036); it resets at 00:00 UTC. Try again then, or move to the Workers "
                "Paid plan",
                cf_code=error.cf_code,
                http_status=error.http_status,
            )
        if isinstance(error, AuthError):
            raise AuthError(
                f"ingestion not started: Cloudflare refused the credentials: {error.message}",
                cf_code=error.cf_code,
                http_status=error.http_status,
            )
        raise UpstreamUnavailable(
            f"ingestion not started: Workers AI is unavailable ({error.message}). "
            f"Try again in a few minutes",
            cf_code=error.cf_code,
            http_status=error.http_status,
        )

    async def delete_document(self, doc_id: str) -> tuple[str, list[str]] | None:
        """Delete a document, its chunks and vectors; returns (its source, lost chunk ids).

        SQLite commits first; the serving index follows, through the outbox when it keeps
        one (Vectorize), so a crash between the two loses nothing. An upload's bytes are
        recorded as garbage in the same transaction (``rag.storage.cleanup``): whoever
        holds the blob store deletes them, and retries until the store agrees.
        """
        durable = self.index.durable_outbox
        with storage_errors(self.db_path):
            async with self.sessions() as session, session.begin():
                doc = await session.get(Document, doc_id)
                if doc is None:
                    return None
                source = doc.source
                if doc.blob_uri is not None:
                    await cleanup.schedule(session, doc.blob_uri)
                lost = await store.delete_document(
                    session, doc, outbox=self.embedder.model_id if durable else None
                )
        if durable:
            await self.index.flush()
        else:
            # Committed whatever happens next: if this read fails, the next query's
            # catch-up applies the delete, so the delete itself must not fail for it.
            async with self.best_effort.attempt("index catch-up", "read"):
                await self.index.catch_up()
        await self._prune_log()
        return source, lost

    async def is_empty(self) -> bool:
        async with self.sessions() as session:
            count = await session.scalar(select(func.count()).select_from(Document))
        return not count

    def check_question(self, question: str, field: str = "question") -> str:
        return checked_text(question, field, self.settings.server.max_question_chars)

    def _k(self, k: int | None) -> int:
        return checked_k(k, self.settings.retrieval.top_k, self.settings.retrieval.candidates)

    async def _sync_index(self) -> int:
        """The index generation, after the in-memory index applied every write since."""
        held = await self.index.catch_up()
        if held is not None:
            return held
        async with self.sessions() as session:  # Vectorize: the database says
            return await store.generation(session)

    async def _prune_log(self) -> None:
        """Drop change-log rows no process needs (``[index] log_keep_rows``).

        After a write rather than on the read path, and best effort: a log that is not
        pruned only grows, and a process far behind reloads its index whole anyway.
        """
        async with self.best_effort.attempt("index log"), self._quick.begin() as session:
            await index_log.prune(session, self.settings.index.log_keep_rows)


def _subscribe(observers: list[T], observer: T) -> Callable[[], None]:
    """Add ``observer``; the function returned removes it again (once is enough)."""
    observers.append(observer)

    def stop() -> None:
        if observer in observers:
            observers.remove(observer)

    return stop


async def drain_outbox(index: VectorIndex) -> None:
    """Send index writes a killed ingest left queued (``index_outbox``; Vectorize only).

    A Cloudflare outage must not stop the service from starting: the rows stay queued
    for the next ingest's flush or the next start, and the failure is logged.
    """
    try:
        sent = await index.flush()
    except CloudflareError as exc:
        if isinstance(exc, ConfigError):  # a refused token or unknown model: say so now
            raise
        log.warning("index writes left queued by an earlier ingest stay queued: %s", exc)
        return
    if sent:
        log.info("sent %d index writes an earlier ingest left queued", sent)


@asynccontextmanager
async def open_service(
    settings: Settings, overrides: Overrides | None = None, *, migrate: bool = True
) -> AsyncIterator[RagService]:
    """Migrate the database, load models and the index; dispose of them on exit."""
    overrides = overrides or Overrides()
    # Before anything else: missing credentials fail at once, naming what to set.
    client = cloudflare_client(settings, overrides)
    components: Components | None = None
    engines: list[AsyncEngine] = []
    url, db = settings.database_url, settings.database
    path = sqlite_path(url)
    try:
        with storage_errors(path, "open"):
            if migrate:
                await upgrade(url)
            engines.append(create_engine(url, db.lock_wait_s))
            engines.append(create_engine(url, db.best_effort_wait_s))
        components = await build(settings, engines[0], client, overrides)
        share_state(settings, client, components.refusals, session_factory(engines[1]))
        await drain_outbox(components.index)
        service = RagService(settings, engines[0], components, engines[1])
        try:
            yield service
        finally:
            await service.settle()
    finally:
        if components is not None:
            await components.aclose()
        if client is not None:
            await client.aclose()
        for engine in engines:
            await engine.dispose()
