"""The registry: which implementation serves each role of ``rag.ports``, chosen from config.

``build`` is the only place that maps ``backend`` and ``[chat] providers`` to classes;
``rag.service.open_service`` calls it once. Everything a caller may replace (a test's
fake embedder or in-process Cloudflare, evaluation's caching embedder) goes through
one ``Overrides`` object rather than keyword parameters threaded through signatures.

Cloudflare choices, and why:

* The extractive fallback answers with the local ONNX embedder (all-MiniLM-L6-v2, a hard
  dependency, ~0.4 s to load), not Workers AI: it runs exactly when Workers AI failed or
  the neuron budget is spent, so it must cost nothing and need no network.
* Over budget, questions are still embedded and reranked on Workers AI (a few neurons a
  question, in the ledger and the ``done`` event): without them there is no retrieval.
  Generation, the expensive part, moves to the next provider; ingestion refuses to start.
* When Workers AI refuses every call (3036, an outage, a refused token), ``ask`` and
  ``search`` answer in degraded mode: keyword candidates, no reranker, the
  extractive answerer (``rag.retrieval.refusals``); the refusal is remembered, so the
  calls that would fail again are not made. Ingestion refuses to start instead.
* Vectorize serves the dense search; the database keeps every vector (the ingest runner
  writes them) and still serves the keyword side (FTS5 on SQLite, a tsvector on
  PostgreSQL: ``rag.backends.local.keyword.keyword_search`` picks by the database).

Where replicas share a database, the Cloudflare API budget and degraded mode's memory
are kept in it (``share_state``), so that N replicas spend one budget, not N.

Uploaded files go to the blob store ``blob_store`` picks from ``[storage] url``: the
upload folder by default, an S3-compatible bucket when several machines must read them.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from rag.answer.chain import FallbackChain, budget_gate
from rag.config import Settings
from rag.db.engine import session_factory, shares_database
from rag.errors import ConfigError
from rag.ingest.loaders import load
from rag.ports import (
    BlobStore,
    ChatModel,
    Condenser,
    DocumentConverter,
    Embedder,
    KeywordSearch,
    Loader,
    Reranker,
    VectorIndex,
)
from rag.retrieval.refusals import Refusals
from rag.usage import Ledger

if TYPE_CHECKING:
    from rag.backends.cloudflare.client import CloudflareClient
    from rag.backends.local.units import UnitIndex

Closer = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Overrides:
    """What a caller supplies instead of what the settings would build."""

    embedder: Embedder | None = None
    """Replaces the configured embedder (ingestion and queries)."""
    answer_embedder: Embedder | None = None
    """Replaces the extractive answerer's embedder (the local model by default)."""
    wrap_embedder: Callable[[Embedder], Embedder] | None = None
    """Decorates whichever embedder was chosen (evaluation caches query vectors)."""
    environ: Mapping[str, str] | None = None
    """Where secrets are read (``os.environ`` by default)."""
    cloudflare_transport: httpx.AsyncBaseTransport | None = None
    openai_transport: httpx.AsyncBaseTransport | None = None
    loader: Loader | None = None
    """Replaces ``rag.ingest.loaders.load`` (tests: a file that takes its time to read)."""
    clock: Callable[[], datetime] | None = None
    """When a remembered Workers AI refusal expires is read from this (tests: a fake time)."""


@dataclass
class Components:
    """One implementation per role, built for one service's life; ``aclose`` when done."""

    embedder: Embedder
    keyword: KeywordSearch
    reranker: Reranker
    chat: FallbackChain
    ledger: Ledger
    index: VectorIndex
    min_relevance: float
    """The evidence gate's threshold: its scale belongs to the reranker."""
    loader: Loader = load
    """Reads one file for ingestion."""
    converter: DocumentConverter | None = None
    """Converts scans, images and Office files first (``[ocr] engine = "workers-ai"``)."""
    client: CloudflareClient | None = None
    """The one ``CloudflareClient``, when a role runs on Workers AI or Vectorize."""
    condenser: Condenser | None = None
    """Who rewrites follow-ups (the chat model on Cloudflare); None: the local rule alone."""
    units: UnitIndex | None = None
    """The extractive answerer's units, stored at ingestion (local backend, answerer in the
    chain); None: nothing to store, the answerer embeds at question time if it runs."""
    refusals: Refusals = field(default_factory=lambda: Refusals(0.0))
    """Whether Workers AI refuses every call now (degraded mode, ``rag.retrieval.refusals``)."""
    closers: list[Closer] = field(default_factory=list)

    async def aclose(self) -> None:
        # Closing must go on to release the models whatever the database says.
        await self.ledger.close(quietly=True)
        for close in self.closers:
            await close()


def cloudflare_client(settings: Settings, overrides: Overrides) -> CloudflareClient | None:
    """The client, when any role runs on Cloudflare; missing credentials fail here, at once."""
    if settings.backend != "cloudflare" and "workers-ai" not in settings.chat.providers:
        return None
    from rag.backends.cloudflare.client import CloudflareClient

    return CloudflareClient.from_settings(
        settings, overrides.environ, overrides.cloudflare_transport
    )


async def build(
    settings: Settings,
    engine: AsyncEngine,
    client: CloudflareClient | None,
    overrides: Overrides,
) -> Components:
    """Every role for ``settings.backend``; the index is loaded (numpy) or bound (Vectorize)."""
    from rag.backends.local.keyword import keyword_search

    sessions = session_factory(engine)
    ledger = Ledger(sessions, settings.prices, settings.budget)
    memory_s = settings.cloudflare.refusal_memory_s
    refusals = Refusals(memory_s, overrides.clock) if overrides.clock else Refusals(memory_s)
    closers: list[Closer] = []
    answer_embedder = overrides.answer_embedder
    index: VectorIndex
    if settings.backend == "cloudflare":
        from rag.backends.cloudflare.neurons import PriceTable
        from rag.backends.cloudflare.vectorize import VectorizeIndex
        from rag.backends.cloudflare.workers_ai import (
            WorkersAIEmbedder,
            WorkersAIReranker,
            bge_tokenizer,
        )

        if client is None:
            raise ConfigError("the cloudflare backend needs its CloudflareClient")
        prices, cf = PriceTable(settings.prices), settings.cloudflare
        tokenizer = bge_tokenizer()
        embedder = overrides.embedder or WorkersAIEmbedder(client, cf, tokenizer, prices, ledger)
        reranker: Reranker = WorkersAIReranker(client, cf, prices, tokenizer, ledger)
        min_relevance = cf.min_rerank_score
        if overrides.wrap_embedder is not None:
            embedder = overrides.wrap_embedder(embedder)
        # Ingestion feeds Vectorize through the outbox, so the index knows its model.
        index = VectorizeIndex(
            client, cf.index_name, embedder.dimension, sessions, model_id=embedder.model_id
        )
    else:
        from rag.backends.local.embedder import OnnxEmbedder
        from rag.backends.local.query_memo import QueryMemo
        from rag.backends.local.vector_index import NumpyIndex
        from rag.retrieval.fusion import HybridReranker

        # Retrieval and the extractive answerer embed the same question: once is enough.
        embedder = QueryMemo(overrides.embedder or OnnxEmbedder.from_settings(settings.local))
        reranker = HybridReranker(
            keyword_weight=settings.retrieval.keyword_weight,
            identifier_weight=settings.retrieval.identifier_keyword_weight,
            definition_weight=settings.retrieval.definition_weight,
        )
        min_relevance = settings.retrieval.min_relevance
        # One model in memory: the extractive answerer shares the retrieval embedder.
        answer_embedder = answer_embedder or embedder
        if overrides.wrap_embedder is not None:
            embedder = overrides.wrap_embedder(embedder)
        index = await NumpyIndex.load(engine, embedder.model_id, embedder.dimension)
    converter: DocumentConverter | None = None
    if settings.ocr.engine == "workers-ai":
        from rag.backends.cloudflare.neurons import PriceTable
        from rag.backends.cloudflare.tomarkdown import WorkersAIConverter

        if client is None or settings.backend != "cloudflare":
            raise ConfigError('[ocr] engine = "workers-ai" needs backend = "cloudflare"')
        converter = WorkersAIConverter(client, PriceTable(settings.prices), ledger)
    condensers: list[Condenser] = []
    units = None
    if settings.backend != "cloudflare" and "extractive" in provider_names(settings):
        from rag.backends.local.units import UnitIndex

        # Only here: on Cloudflare the extractive answerer is a rare fallback, not worth
        # a local embedding of every unit at ingestion.
        units = UnitIndex(answer_embedder or embedder, sessions)
    providers = _chat_providers(
        settings, client, ledger, answer_embedder, overrides, closers, condensers, units
    )
    return Components(
        embedder=embedder,
        keyword=keyword_search(sessions),
        reranker=reranker,
        chat=FallbackChain(providers, budget_gate(settings, ledger, refusals)),
        ledger=ledger,
        index=index,
        min_relevance=min_relevance,
        # The loader reads scans with the configured OCR; a test's loader stands alone.
        loader=overrides.loader or partial(load, ocr=settings.ocr),
        converter=converter,
        client=client,
        # On Cloudflare the chat model condenses follow-ups (when it is in the chain).
        condenser=condensers[0] if condensers and settings.backend == "cloudflare" else None,
        closers=closers,
        units=units,
        refusals=refusals,
    )


def share_state(
    settings: Settings,
    client: CloudflareClient | None,
    refusals: Refusals,
    sessions: Callable[[], Any],
) -> None:
    """Where processes share a database (``[cloudflare] state_store``), the API budget, its
    holds and degraded mode's memory are kept in it, through ``sessions`` (the engine
    that gives up on a held lock quickly: both fall back to the process's own memory)."""
    if client is None:
        return
    if not shares_database(settings.cloudflare.state_store, settings.database_url):
        return
    from rag.backends.cloudflare.shared_budget import SharedBudget
    from rag.retrieval.shared_refusals import SharedRefusals

    client.limiter.share(SharedBudget(sessions, f"cloudflare:{client.account_id}"))
    refusals.store = SharedRefusals(sessions)


def blob_store(settings: Settings, environ: Mapping[str, str] | None = None) -> BlobStore:
    """Where uploads' bytes are kept; a bucket without credentials fails here, at start."""
    folder = settings.storage_folder
    if folder is not None:
        from rag.storage.folder import FolderStore

        return FolderStore(folder)
    # Imported only for a bucket: the embedded default runs without the [s3] extra.
    try:
        from rag.storage.bucket import BucketStore
    except ImportError as exc:
        raise ConfigError(
            "[storage] url names a bucket, which needs the S3 client: "
            "pip install 'rag[s3]' (obstore)"
        ) from exc
    return BucketStore(settings.storage, os.environ if environ is None else environ)


def provider_names(settings: Settings) -> tuple[str, ...]:
    """``[chat] providers``, or the backend's chain: Workers AI first on Cloudflare, an
    OpenAI-compatible endpoint next when one is configured, the extractive answerer last."""
    if settings.chat.providers:
        return settings.chat.providers
    openai = ("openai",) if settings.openai.base_url and settings.openai.model else ()
    first = ("workers-ai",) if settings.backend == "cloudflare" else ()
    return (*first, *openai, "extractive")


def _chat_providers(
    settings: Settings,
    client: CloudflareClient | None,
    ledger: Ledger,
    answer_embedder: Embedder | None,
    overrides: Overrides,
    closers: list[Closer],
    condensers: list[Condenser],
    units: UnitIndex | None,
) -> list[ChatModel]:
    providers: list[ChatModel] = []
    for name in provider_names(settings):
        if name == "extractive":
            from rag.backends.local.embedder import OnnxEmbedder
            from rag.backends.local.extractive import ExtractiveAnswerer

            answer_embedder = answer_embedder or OnnxEmbedder.from_settings(settings.local)
            providers.append(
                ExtractiveAnswerer(
                    answer_embedder,
                    max_sentences=settings.answer.max_sentences,
                    max_sources=settings.answer.max_sources,
                    units=units,
                )
            )
        elif name == "workers-ai":
            from rag.backends.cloudflare.neurons import PriceTable
            from rag.backends.cloudflare.workers_ai import WorkersAIChat

            if client is None:
                raise ConfigError('chat provider "workers-ai" needs backend = "cloudflare"')
            prices = PriceTable(settings.prices)
            workers_ai = WorkersAIChat(client, settings.cloudflare, prices, ledger)
            providers.append(workers_ai)
            condensers.append(workers_ai)
        elif name == "openai":
            from rag.backends.openai import OpenAIChat

            chat = OpenAIChat(
                settings.openai,
                environ=overrides.environ,
                transport=overrides.openai_transport,
                on_cost=ledger,
            )
            closers.append(chat.aclose)
            providers.append(chat)
        else:
            raise ConfigError(
                f"unknown chat provider {name!r} in [chat] providers: "
                'use "workers-ai", "openai" or "extractive"'
            )
    return providers
