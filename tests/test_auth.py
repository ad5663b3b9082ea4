"""API keys on every /v1 route: enumerated from the app itself, so none is missed.

The app runs under a real uvicorn on 127.0.0.1, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import endpoints, make_settings
from fakes import FakeEmbedder, app_client
from httpx import AsyncClient
from litestar import Litestar

from rag.config import AuthSettings, ServerSettings, Settings
from rag.keys import KeyStore
from rag.registry import Overrides
from rag.service import open_service
from rag.web import create_app
from rag.web.auth import access_warning, auth_required, is_loopback

REFUSED = "missing or invalid API key: send the header Authorization: Bearer <key>"
DOC = b"# Zebra guide\n\nThe zebra protocol moves striped parcels between warehouses.\n"


@dataclass
class Keyed:
    app: Litestar
    client: AsyncClient
    keys: KeyStore
    key: str
    key_id: int

    def bearer(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


@asynccontextmanager
async def open_keyed(tmp_path: Path, database_url: str, **sections: Any) -> AsyncIterator[Keyed]:
    sections.setdefault("auth", {"required": True, "rate_limit_per_minute": 0})
    sections.setdefault("uploads", {"folder": str(tmp_path / "uploads")})
    settings = make_settings(tmp_path, database={"url": database_url}, **sections)
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        keys = KeyStore(service.sessions)
        info, key = await keys.create("tests")
        app = create_app(settings, service=service)
        async with app_client(app) as client:
            yield Keyed(app, client, keys, key, info.id)


@pytest.fixture
async def keyed(tmp_path: Path, database_url: str) -> AsyncIterator[Keyed]:
    async with open_keyed(tmp_path, database_url) as opened:
        yield opened


def assert_refused(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {"error": {"code": "unauthorized", "message": REFUSED}}
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_every_v1_route_needs_a_key(keyed: Keyed) -> None:
    v1 = endpoints(keyed.app, "/v1")
    # The enumeration itself must see the routes this API is known to have.
    assert {
        ("POST", "/v1/ask"),
        ("GET", "/v1/ask"),
        ("POST", "/v1/search"),
        ("GET", "/v1/usage"),
        ("POST", "/v1/documents"),
        ("GET", "/v1/documents"),
        ("GET", "/v1/documents/some-id"),
        ("DELETE", "/v1/documents/some-id"),
        ("GET", "/v1/chunks/some-id"),
        ("POST", "/v1/ingest"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/some-id"),
    } <= set(v1)
    wrong_keys: list[dict[str, str]] = [
        {},
        keyed.bearer("rag_not-a-real-key"),
        {"Authorization": f"Basic {keyed.key}"},
        {"Authorization": "Bearer"},  # no key (a trailing space is not sent over HTTP)
        {"X-Api-Key": keyed.key},
    ]
    for method, path in v1:
        for headers in wrong_keys:
            assert_refused(await keyed.client.request(method, path, headers=headers))


async def test_a_valid_key_is_let_in_and_its_use_recorded(keyed: Keyed) -> None:
    response = await keyed.client.get("/v1/documents", headers=keyed.bearer())
    assert response.status_code == 200, response.text
    upload = await keyed.client.post(
        "/v1/documents", files={"file": ("guide.md", DOC)}, headers=keyed.bearer()
    )
    assert upload.status_code == 202, upload.text
    [info] = await keyed.keys.list()
    assert info.last_used_at is not None


async def test_query_key_only_on_get_ask(keyed: Keyed) -> None:
    asked = await keyed.client.get("/v1/ask", params={"q": "zebra protocol", "key": keyed.key})
    assert asked.status_code == 200, asked.text
    assert asked.headers["content-type"].startswith("text/event-stream")
    for method, path in [("GET", "/v1/documents"), ("POST", "/v1/ask"), ("GET", "/v1/usage")]:
        response = await keyed.client.request(method, path, params={"key": keyed.key})
        assert_refused(response)
    bad = await keyed.client.get("/v1/ask", params={"q": "zebra", "key": "rag_wrong"})
    assert_refused(bad)


async def test_revoked_key_is_refused_like_an_unknown_one(keyed: Keyed) -> None:
    assert (await keyed.client.get("/v1/jobs", headers=keyed.bearer())).status_code == 200
    await keyed.keys.revoke(keyed.key_id)
    assert_refused(await keyed.client.get("/v1/jobs", headers=keyed.bearer()))
    assert_refused(await keyed.client.get("/v1/ask", params={"q": "x", "key": keyed.key}))


@pytest.mark.parametrize("path", ["/", "/healthz", "/schema/openapi.json", "/metrics"])
async def test_open_routes_need_no_key(keyed: Keyed, path: str) -> None:
    response = await keyed.client.get(path)
    assert response.status_code == 200, (path, response.text)


async def test_openapi_documents_the_bearer_scheme(keyed: Keyed) -> None:
    schema = (await keyed.client.get("/schema/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/documents"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]


async def test_metrics_can_require_a_key(tmp_path: Path, database_url: str) -> None:
    async with open_keyed(tmp_path, database_url, web={"metrics": "auth"}) as keyed:
        assert_refused(await keyed.client.get("/metrics"))
        assert (await keyed.client.get("/metrics", headers=keyed.bearer())).status_code == 200


async def test_auth_off_on_loopback_lets_everyone_in(tmp_path: Path, database_url: str) -> None:
    async with open_keyed(tmp_path, database_url, auth={"rate_limit_per_minute": 0}) as keyed:
        assert (await keyed.client.get("/v1/documents")).status_code == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("192.168.1.20", False),
        ("rag.example.internal", False),
    ],
)
def test_keys_are_required_off_loopback_unless_configured(host: str, loopback: bool) -> None:
    server = ServerSettings(host=host)
    assert is_loopback(host) is loopback
    assert auth_required(Settings(server=server)) is not loopback
    forced = Settings(server=server, auth=AuthSettings(required=True))
    assert auth_required(forced)
    relaxed = msgspec.structs.replace(forced, auth=AuthSettings(required=False))
    assert not auth_required(relaxed)


def test_start_up_warnings() -> None:
    public = Settings(server=ServerSettings(host="0.0.0.0"))
    assert "none exists" in (access_warning(public, active_keys=0) or "")
    assert access_warning(public, active_keys=1) is None
    open_public = msgspec.structs.replace(public, auth=AuthSettings(required=False))
    assert "WITHOUT authentication" in (access_warning(open_public, active_keys=0) or "")
    assert access_warning(Settings(), active_keys=0) is None
