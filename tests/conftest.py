"""Shared fixtures: settings on a temporary database, a service on the fake embedder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from rag.config import Settings
from rag.service import RagService, open_service

if TYPE_CHECKING:
    from cf_fake import FakeCloudflare

    from rag.backends.cloudflare.client import CloudflareClient

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


@pytest.fixture
def fake() -> Iterator[FakeCloudflare]:
    """The in-process Cloudflare; a request its schemas reject fails the test at teardown."""
    from cf_fake import FakeCloudflare

    fake = FakeCloudflare()
    yield fake
    assert fake.violations() == []


@pytest.fixture
async def client(fake: FakeCloudflare) -> AsyncIterator[CloudflareClient]:
    async with fake.client() as client:
        yield client
