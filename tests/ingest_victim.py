"""An ingest run slow enough to be killed mid-way (run by test_resume.py, not by pytest)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from conftest import make_settings
from fakes import FakeEmbedder

from rag.ports import EmbedKind, Vectors
from rag.registry import Overrides
from rag.service import open_service


class SlowEmbedder(FakeEmbedder):
    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        time.sleep(0.02)  # noqa: ASYNC251 - blocking on purpose, like a real model's inference
        return await super().embed(texts, kind)


async def main(tmp: Path, folder: Path) -> None:
    # Small batches: writes interleave with (slow) embedding calls, so a kill can land anywhere.
    settings = make_settings(tmp, ingest={"batch_size": 4})
    async with open_service(settings, Overrides(embedder=SlowEmbedder())) as service:
        await service.ingest([folder])


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
