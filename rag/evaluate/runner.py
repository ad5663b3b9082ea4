"""An evaluation run: ingest the dataset's corpus into a database of its own, ask every
question through the real pipeline, and keep a fingerprint of what produced the figures.

The corpus database lives at ``eval.data_dir/corpora/<key>/rag.db``, the key a hash of
the corpus folder, the ingestion settings and the embedder, so the serving database is
never touched and a later run with the same inputs re-ingests nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import select

from rag import __version__
from rag.config import DatabaseSettings, Settings
from rag.db.tables import Document
from rag.errors import InputError
from rag.evaluate.cache import CachingEmbedder, QueryVectorCache
from rag.evaluate.datasets import Dataset, beir_workdir, load_dataset
from rag.evaluate.question import RetrievalRecorder, evaluate_question
from rag.evaluate.results import QuestionResult, RunRecord
from rag.evaluate.store import new_run_id
from rag.evaluate.summary import summarise
from rag.ports import Embedder, Progress
from rag.registry import Overrides
from rag.service import RagService, open_service

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Options:
    corpus: Path | None = None
    limit: int | None = None
    top_k: int | None = None
    fresh_embeddings: bool = False
    """Embed every question again (true latency) instead of reading the vector cache."""


@dataclass
class Outcome:
    dataset: Dataset
    record: RunRecord
    warnings: list[str]
    gate: tuple[str, float]
    """The evidence-gate setting in force: (config key, value)."""
    coverage_gate: float


Tick = Callable[[QuestionResult], None]


def gate_setting(settings: Settings) -> tuple[str, float]:
    """The config key that holds the evidence-gate threshold on the active backend."""
    if settings.backend == "cloudflare":
        return "cloudflare.min_rerank_score", settings.cloudflare.min_rerank_score
    return "retrieval.min_relevance", settings.retrieval.min_relevance


def eval_settings(settings: Settings, workdir: Path, top_k: int | None) -> Settings:
    """The settings with the database moved into ``workdir`` and the answer cache off
    (a cached answer would hide the retrieval and the latency being measured)."""
    retrieval = settings.retrieval
    if top_k is not None:
        if not 1 <= top_k <= retrieval.candidates:
            raise InputError(f"--top-k must be between 1 and {retrieval.candidates} (candidates)")
        retrieval = msgspec.structs.replace(retrieval, top_k=top_k)
    return msgspec.structs.replace(
        settings,
        data_dir=str(workdir),
        database=DatabaseSettings(url=settings.eval.database_url),
        retrieval=retrieval,
        cache=msgspec.structs.replace(settings.cache, enabled=False),
    )


def corpus_key(corpus: Path, settings: Settings, embedder: Embedder | None) -> str:
    ingest = msgspec.to_builtins(settings.ingest)
    ingest.pop("pdf_passwords", None)  # a secret has no business in a folder name's input
    if embedder is not None:
        model: Any = embedder.model_id
    elif settings.backend == "cloudflare":
        model = [settings.cloudflare.embed_model, settings.cloudflare.embed_pooling]
    else:
        model = {k: v for k, v in msgspec.to_builtins(settings.local).items() if k != "threads"}
    blob = json.dumps(
        {
            "corpus": str(corpus.resolve()),
            "ingest": ingest,
            "backend": settings.backend,
            "model": model,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


async def run(
    settings: Settings,
    dataset_path: Path,
    options: Options = Options(),
    *,
    embedder: Embedder | None = None,
    ingest_progress: Progress | None = None,
    start: Callable[[int], None] = lambda total: None,
    tick: Tick = lambda result: None,
    answer: bool = True,
) -> Outcome:
    """Evaluate ``dataset_path``; with ``answer`` False only retrieval runs (calibration)."""
    data_dir = Path(settings.eval.data_dir)
    beir_dir = beir_workdir(dataset_path, data_dir)
    dataset = load_dataset(dataset_path, corpus=options.corpus, workdir=beir_dir)
    questions = dataset.questions[: options.limit] if options.limit else dataset.questions
    workdir = data_dir / "corpora" / corpus_key(dataset.corpus, settings, embedder)
    local = eval_settings(settings, workdir, options.top_k)
    warnings: list[str] = []
    cache = QueryVectorCache(workdir / "query_vectors.npz")
    caching: list[CachingEmbedder] = []

    def cache_queries(inner: Embedder) -> Embedder:
        caching.append(CachingEmbedder(inner, cache, read=not options.fresh_embeddings))
        return caching[-1]

    overrides = Overrides(embedder=embedder, wrap_embedder=cache_queries)
    async with open_service(local, overrides) as service:
        await _only_this_corpus(service, dataset)
        report = await service.ingest([dataset.corpus], ingest_progress)
        warnings += [f"{p['path']}: {p['status']}: {p['reason']}" for p in report.problems]
        warnings += await _unindexed_sources(service, dataset)
        (cached,) = caching
        recorder = RetrievalRecorder()
        recorder.observe(service)
        start(len(questions))
        results = []
        try:
            for question in questions:
                results.append(await evaluate_question(service, recorder, question, answer=answer))
                tick(results[-1])
        finally:
            cache.save()
        config = fingerprint(local, service, dataset, options)
        config["query_vectors"] = {"cached": cached.hits, "embedded": cached.misses}
        coverage_gate = service.retriever.min_coverage
    now = datetime.now(UTC)
    record = RunRecord(
        run_id=new_run_id(now),
        dataset=dataset.name,
        dataset_sha256=dataset.sha256,
        created_at=now.isoformat(timespec="seconds"),
        config=config,
        metrics=summarise(results),
        results=results,
    )
    return Outcome(dataset, record, warnings, gate_setting(local), coverage_gate)


def fingerprint(
    settings: Settings, service: RagService, dataset: Dataset, options: Options
) -> dict[str, Any]:
    """What produced a run: compare two runs' fingerprints to see what changed."""
    key, value = gate_setting(settings)
    chat = service.chat
    return {
        "backend": settings.backend,
        "embedder": service.embedder.model_id,
        "reranker": service.reranker.name,
        "answerer": chat.name,
        "chat_model": settings.cloudflare.chat_model if settings.backend == "cloudflare" else None,
        "prompt_version": chat.prompt_version,
        "chunk_tokens": settings.ingest.chunk_tokens,
        "overlap_tokens": settings.ingest.overlap_tokens,
        "top_k": settings.retrieval.top_k,
        "candidates": settings.retrieval.candidates,
        "keyword_weight": settings.retrieval.keyword_weight,
        "min_relevance": settings.retrieval.min_relevance,
        # The whole sections too: retrieval grows knobs, and a run must name them all.
        "retrieval": msgspec.to_builtins(settings.retrieval),
        "answer": msgspec.to_builtins(settings.answer),
        "gate": {key: value},
        "dataset_kind": dataset.kind,
        "dataset_sha256": dataset.sha256,
        "limit": options.limit,
        "git_commit": git_commit(),
        "machine": machine(),
        "rag_version": __version__,
    }


def machine() -> str:
    """Where latency figures were measured: they mean little without it."""
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
        f"Python {platform.python_version()}"
    )


def git_commit() -> str | None:
    """The checkout's HEAD, or None when this is not a git checkout (never an error)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


async def _only_this_corpus(service: RagService, dataset: Dataset) -> None:
    """Refuse a database (``[eval] database_url``) that holds another corpus's documents:
    they would be retrieved with this one's and every figure would be wrong."""
    root = str(dataset.corpus.expanduser().resolve())
    async with service.sessions() as session:
        other = await session.scalar(select(Document.root).where(Document.root != root).limit(1))
    if other is not None:
        raise InputError(
            f"the evaluation database holds documents from {other}, not only from {root}: "
            "give each dataset a database of its own ([eval] database_url)"
        )


async def _unindexed_sources(service: RagService, dataset: Dataset) -> list[str]:
    """Labelled sources that did not make it into the index (a failed PDF, say): their
    questions can only miss, and the reader should know why."""
    root = str(dataset.corpus.expanduser().resolve())
    async with service.sessions() as session:
        rows = await session.scalars(
            select(Document.path).where(Document.root == root, Document.status == "ok")
        )
        indexed = set(rows)
    wanted = {s for q in dataset.questions for s in q.relevant}
    return [f"{s}: labelled relevant but not indexed" for s in sorted(wanted - indexed)]
