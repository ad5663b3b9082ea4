"""The ``rag`` command on a slow fake embedder, as a real process (run by test_worker.py).

Usage: rag_on_fake.py SECONDS_PER_BATCH rag-arguments... Settings come from ``RAG_*``
variables, as for ``rag`` itself. ``FAKE_EMBEDDER_ROLE=answer_embedder`` puts the fake
in the extractive answerer's place only (benchmarks/worker_bench.py --cloudflare, where
Workers AI embeds the chunks).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fakes import FakeEmbedder

from rag import service as rag_service
from rag.cli import main
from rag.config import Settings
from rag.ports import EmbedKind, Vectors
from rag.registry import Overrides
from rag.service import RagService

PAUSE = float(sys.argv.pop(1))
ROLE = os.environ.get("FAKE_EMBEDDER_ROLE", "embedder")


class SlowEmbedder(FakeEmbedder):
    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        time.sleep(PAUSE)  # noqa: ASYNC251 - blocking on purpose, like a real model's inference
        return await super().embed(texts, kind)


real = rag_service.open_service


def on_fake(settings: Settings, **options: Any) -> AbstractAsyncContextManager[RagService]:
    fake = SlowEmbedder()
    if ROLE == "answer_embedder":
        return real(settings, Overrides(answer_embedder=fake), **options)
    return real(settings, Overrides(embedder=fake), **options)


rag_service.open_service = on_fake  # type: ignore[assignment]

if __name__ == "__main__":
    main()
