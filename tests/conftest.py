"""Shared fixtures: settings on a temporary database, a service on the fake embedder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from rag.config import Settings
from rag.service import RagService, open_service

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpus"


def make_settings(tmp_path: Path, **sections: dict[str, object]) -> Settings:
    """Default settings with the database under ``tmp_path`` and per-section overrides."""
    raw: dict[str, object] = {"data_dir": str(tmp_path / "data"), **sections}
    return msgspec.convert(raw, Settings)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[RagService]:
    from fakes import FakeEmbedder

    async with open_service(settings, embedder=FakeEmbedder()) as svc:
        yield svc
