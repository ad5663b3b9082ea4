"""A RagService on the cloudflare backend, wired to the in-process fake Cloudflare."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from cf_fake import FakeCloudflare
from fakes import FakeEmbedder

from rag.registry import Overrides
from rag.service import RagService, open_service


def write_server_docs(folder: Path) -> Path:
    """Two small documents the Cloudflare service tests ask about."""
    folder.mkdir()
    (folder / "server.md").write_text(
        "# Server\n\nThe server listens on port 8000 by default. "
        "Change the port with the --port option.\n"
    )
    (folder / "ingest.md").write_text(
        "# Ingestion\n\nIngestion reads Markdown, text, HTML and PDF files. "
        "Unchanged files are never embedded again.\n"
    )
    return folder


@asynccontextmanager
async def cloudflare_service(
    fake: FakeCloudflare,
    tmp_path: Path,
    *,
    environ: dict[str, str] | None = None,
    clock: Callable[[], datetime] | None = None,
    **sections: Any,
) -> AsyncIterator[RagService]:
    """``cloudflare={...}`` adds to the fake's section; ``environ`` to its API token."""
    raw = msgspec.to_builtins(fake.settings())
    raw["cloudflare"].update(sections.pop("cloudflare", {}))
    raw.update(data_dir=str(tmp_path / "data"), **sections)
    settings = msgspec.convert(raw, type(fake.settings()))
    overrides = Overrides(
        environ={"CLOUDFLARE_API_TOKEN": fake.token, **(environ or {})},
        cloudflare_transport=fake.transport,
        answer_embedder=FakeEmbedder(),  # the extractive fallback, instead of ONNX
        clock=clock,
    )
    async with open_service(settings, overrides) as service:
        yield service
