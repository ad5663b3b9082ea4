"""Ingestion throughput on a folder next to the embedder's raw throughput on the same chunks.

The pipeline's overhead (discovery, loading, chunking, hashing, SQLite writes, FTS5, index
updates) is the difference; the target is under 15% of the embedding time.

    python benchmarks/ingest_bench.py [FOLDER] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path

import msgspec

from rag.backends.local.embedder import OnnxEmbedder
from rag.config import Settings
from rag.errors import DocumentError
from rag.ingest.chunker import chunk_document
from rag.ingest.discover import discover
from rag.ingest.loaders import load
from rag.registry import Overrides
from rag.service import open_service

ROOT = Path(__file__).resolve().parents[1]


def chunk_texts(folder: Path, settings: Settings, embedder: OnnxEmbedder) -> list[str]:
    texts = []
    for found in discover([folder], settings.ingest.extensions).files:
        try:
            doc = load(found.path, settings.ingest)
        except DocumentError:
            continue
        drafts = chunk_document(
            doc,
            embedder.tokenizer,
            settings.ingest.chunk_tokens,
            settings.ingest.overlap_tokens,
            max_chars=settings.ingest.max_chunk_chars,
        )
        texts.extend(d.text for d in drafts)
    return texts


async def raw_seconds(embedder: OnnxEmbedder, texts: list[str], batch: int) -> float:
    began = time.perf_counter()
    for start in range(0, len(texts), batch):
        await embedder.embed(texts[start : start + batch], "passage")
    return time.perf_counter() - began


async def pipeline_seconds(folder: Path, embedder: OnnxEmbedder) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = msgspec.convert({"data_dir": tmp}, Settings)
        async with open_service(settings, Overrides(embedder=embedder)) as service:
            began = time.perf_counter()
            report = await service.ingest([folder])
            return time.perf_counter() - began, report.chunks


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=ROOT / "corpus")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    settings = Settings()
    embedder = OnnxEmbedder.from_settings(settings.local)
    texts = chunk_texts(args.folder, settings, embedder)
    await embedder.embed(texts[:4], "passage")  # warm up the session
    raw: list[float] = []
    pipe: list[float] = []
    chunks = 0
    for _ in range(args.repeat):  # interleaved, so a busy moment hurts both alike
        raw.append(await raw_seconds(embedder, texts, settings.ingest.batch_size))
        seconds, chunks = await pipeline_seconds(args.folder, embedder)
        pipe.append(seconds)
    best_raw, best_pipe = min(raw), min(pipe)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    print(f"folder: {args.folder} ({chunks} chunks)")
    print(f"embedder alone : {len(texts) / best_raw:6.1f} chunks/s  ({best_raw:.2f} s)")
    print(f"full ingestion : {chunks / best_pipe:6.1f} chunks/s  ({best_pipe:.2f} s)")
    print(f"pipeline overhead: {100 * (best_pipe / best_raw - 1):.1f}% of the embedding time")
    print(
        f"all runs (s): embedder {[round(x, 2) for x in raw]}, ingest {[round(x, 2) for x in pipe]}"
    )


if __name__ == "__main__":
    asyncio.run(main())
