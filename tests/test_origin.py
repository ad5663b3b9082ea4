"""Cross-site requests, the Host check and body media types (rag/web/origin.py).

Against the real app over the real service (fake embedder), in process; the trusted
proxies, whose rule depends on the peer address a socket gives, over a real uvicorn.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LOCAL_URL, endpoints, make_settings
from fakes import FakeEmbedder, ScriptedService, serve, upload
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from rag.config import Settings
from rag.registry import Overrides
from rag.service import RagService, open_service
from rag.web import create_app
from rag.web.origin import (
    COSTLY_READS,
    SAFE_METHODS,
    body_media_type,
    host_warning,
    normalise_origin,
    served_hosts,
    split_host,
)

EVIL = "https://evil.example"
DOC = b"# Zebra guide\n\nThe zebra protocol moves striped parcels between warehouses.\n"
FOREIGN: list[dict[str, str]] = [
    {"Origin": EVIL},
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    {"Origin": "null"},  # a sandboxed frame or a file: page
    {"Origin": "http://127.0.0.1:8001"},  # another port is another origin
    {"Origin": "https://127.0.0.1:8000"},  # and so is another scheme
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is not this origin
]


@dataclass
class Opened:
    app: Litestar
    client: AsyncTestClient[Litestar]
    service: RagService


@asynccontextmanager
async def open_app(tmp_path: Path, **sections: Any) -> AsyncIterator[Opened]:
    sections.setdefault("uploads", {"folder": str(tmp_path / "uploads")})
    settings = make_settings(tmp_path, **sections)
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        app = create_app(settings, service=service)
        async with AsyncTestClient(app=app, base_url=LOCAL_URL) as client:
            yield Opened(app, client, service)


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[Opened]:
    async with open_app(tmp_path) as result:
        yield result


def state_changing(app: Litestar) -> list[tuple[str, str]]:
    """Every route that changes something or spends the budget."""
    return [(m, p) for m, p in endpoints(app) if m not in SAFE_METHODS or (m, p) in COSTLY_READS]


def assert_cross_site(response: httpx.Response, origin: str | None) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "cross_site"
    assert "[web] cors_origins" in error["message"]
    if origin is not None:
        assert repr(origin) in error["message"]


async def test_every_state_changing_route_refuses_a_foreign_origin(opened: Opened) -> None:
    routes = state_changing(opened.app)
    assert {
        ("POST", "/v1/ask"),
        ("GET", "/v1/ask"),
        ("POST", "/v1/search"),
        ("POST", "/v1/documents"),
        ("DELETE", "/v1/documents/some-id"),
        ("POST", "/v1/ingest"),
    } <= set(routes)
    for method, path in [*routes, ("POST", "/no-such-route"), ("PUT", "/v1/documents")]:
        for headers in FOREIGN:
            response = await opened.client.request(method, path, headers=headers)
            assert_cross_site(response, headers.get("Origin"))


async def test_a_planted_upload_or_ingest_never_happens(opened: Opened) -> None:
    upload = await opened.client.post(
        "/v1/documents", files={"file": ("zebra.md", DOC)}, headers={"Origin": EVIL}
    )
    assert_cross_site(upload, EVIL)
    ingest = await opened.client.post(
        "/v1/ingest", content=b"x", headers={"Origin": EVIL, "Content-Type": "text/plain"}
    )
    assert_cross_site(ingest, EVIL)
    listed = await opened.client.get("/v1/documents")
    assert listed.json()["total"] == 0
    assert (await opened.client.get("/v1/jobs")).json() == []


SAME_ORIGIN: list[dict[str, str]] = [
    {},  # curl, scripts, the CLI: not a browser
    {"Origin": "http://127.0.0.1:8000"},
    {"Origin": "HTTP://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"},
    # The browser's verdict holds even where this server cannot see its own origin
    # (a TLS proxy it does not trust to say so).
    {"Origin": "https://rag.internal", "Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "none"},  # typed by the user
]


@pytest.mark.parametrize("headers", SAME_ORIGIN)
async def test_same_origin_and_non_browser_requests_pass(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    async with open_app(tmp_path) as opened:
        document = await upload(opened.client, "zebra.md", DOC, headers=headers)
        assert document["status"] == "ok", document
        asked = await opened.client.post(
            "/v1/ask", json={"question": "What does the zebra protocol move?"}, headers=headers
        )
        assert asked.status_code == 200, asked.text
        doc_id = document["id"]
        deleted = await opened.client.delete(f"/v1/documents/{doc_id}", headers=headers)
        assert deleted.status_code == 200, deleted.text


async def test_an_origin_in_cors_origins_may_call(tmp_path: Path) -> None:
    web = {"cors_origins": ["https://App.example:443"]}
    async with open_app(tmp_path, web=web) as opened:
        for site in ("cross-site", "same-site"):
            headers = {"Origin": "https://app.example", "Sec-Fetch-Site": site}
            searched = await opened.client.post("/v1/search", json={"query": "x"}, headers=headers)
            assert searched.status_code == 200, searched.text
        other = await opened.client.post(
            "/v1/search", json={"query": "x"}, headers={"Origin": "https://app.example:8443"}
        )
        assert_cross_site(other, "https://app.example:8443")


async def test_reads_are_not_origin_checked_but_questions_are(opened: Opened) -> None:
    # A cross-site GET changes nothing, and closed CORS keeps its answer from the page.
    for headers in FOREIGN:
        response = await opened.client.get("/v1/documents", headers=headers)
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
    # A question spends the budget even when its answer is hidden from the asking page;
    # the chat page's EventSource is same-origin.
    for headers in SAME_ORIGIN:
        asked = await opened.client.get("/v1/ask", params={"q": "zebra"}, headers=headers)
        assert asked.status_code == 200, asked.text


def json_routes(app: Litestar) -> list[str]:
    return sorted(
        route.path
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        if body_media_type(handler) == "application/json"
    )


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/json"]
)
async def test_json_routes_take_only_application_json(opened: Opened, content_type: str) -> None:
    paths = json_routes(opened.app)
    assert {"/v1/ask", "/v1/search"} <= set(paths)
    headers = {"Content-Type": content_type} if content_type else {}
    for path in paths:
        response = await opened.client.post(path, content=b'{"question": "x"}', headers=headers)
        assert response.status_code == 415, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "unsupported_media_type"
        assert "Content-Type: application/json" in error["message"]


async def test_json_with_a_charset_is_json(opened: Opened) -> None:
    response = await opened.client.post(
        "/v1/search",
        content=json.dumps({"query": "zebra"}).encode(),
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 200, response.text


async def test_uploads_stay_multipart(opened: Opened) -> None:
    response = await opened.client.post(
        "/v1/documents", content=DOC, headers={"Content-Type": "text/markdown"}
    )
    assert response.status_code == 415, response.text
    assert "multipart/form-data" in response.json()["error"]["message"]


def settings_with(server: dict[str, Any]) -> Settings:
    return make_settings(Path("/nonexistent"), server=server)


@asynccontextmanager
async def scripted(server: dict[str, Any]) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(settings_with(server), ScriptedService())
    async with AsyncTestClient(app=app, base_url=LOCAL_URL) as client:
        yield client


def assert_misdirected(response: httpx.Response) -> None:
    assert response.status_code == 421, response.text
    error = response.json()["error"]
    assert error["code"] == "unknown_host"
    assert "[server] allowed_hosts" in error["message"]


async def test_a_loopback_bind_answers_only_loopback_names() -> None:
    async with scripted({"host": "127.0.0.1"}) as client:
        for host in ("localhost", "localhost:8000", "127.0.0.1:1234", "[::1]:8000", "LOCALHOST"):
            response = await client.get("/healthz", headers={"Host": host})
            assert response.status_code == 200, (host, response.text)
        # Every path, known or not, every method: the check runs before routing.
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.nip.io", "localhost.evil"):
            for method, path in [("GET", "/"), ("GET", "/v1/jobs"), ("GET", "/nope")]:
                assert_misdirected(await client.request(method, path, headers={"Host": host}))
            assert_misdirected(await client.delete("/healthz", headers={"Host": host}))


async def test_other_binds_answer_any_host_unless_listed() -> None:
    async with scripted({"host": "0.0.0.0"}) as client:
        response = await client.get("/healthz", headers={"Host": "rag.example.com"})
        assert response.status_code == 200
    listed = {"host": "0.0.0.0", "allowed_hosts": ["rag.example.com", "10.0.0.5:8000"]}
    async with scripted(listed) as client:
        for host in ("rag.example.com", "RAG.example.com:8443", "10.0.0.5:8000"):
            assert (await client.get("/healthz", headers={"Host": host})).status_code == 200
        # An explicit list replaces the loopback names too.
        for host in ("10.0.0.5:9000", "10.0.0.5", "localhost", "evil.example"):
            assert_misdirected(await client.get("/healthz", headers={"Host": host}))
    async with scripted({"host": "127.0.0.1", "allowed_hosts": ["*"]}) as client:
        assert (await client.get("/healthz", headers={"Host": "any.example"})).status_code == 200


def test_the_host_rule_follows_the_bind_address() -> None:
    loopback = served_hosts(settings_with({"host": "127.0.0.1"}))
    assert loopback == frozenset({("localhost", None), ("127.0.0.1", None), ("[::1]", None)})
    assert served_hosts(settings_with({"host": "::1"})) == loopback
    assert ("127.0.0.2", None) in (served_hosts(settings_with({"host": "127.0.0.2"})) or ())
    assert served_hosts(settings_with({"host": "0.0.0.0"})) is None
    assert served_hosts(settings_with({"host": "rag.example.com"})) is None
    assert host_warning(settings_with({"host": "127.0.0.1"})) is None
    warning = host_warning(settings_with({"host": "0.0.0.0"}))
    assert warning is not None and "allowed_hosts" in warning and "0.0.0.0" in warning
    assert host_warning(settings_with({"host": "0.0.0.0", "allowed_hosts": ["*"]})) is None


def test_host_and_origin_parsing() -> None:
    assert split_host("Example.COM:8000") == ("example.com", 8000)
    assert split_host("[::1]:8000") == ("[::1]", 8000)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("::1") == ("::1", None)
    assert split_host("example.com:http") == ("example.com:http", None)
    assert normalise_origin("HTTPS://Example.com:443") == "https://example.com"
    assert normalise_origin("http://example.com:443") == "http://example.com:443"
    assert normalise_origin("http://[::1]:80") == "http://[::1]"
    assert normalise_origin("null") == "null"
    assert normalise_origin("http://example.com:99999") == "http://example.com:99999"


PER_MINUTE = 10
"""A small allowance, so that its refill (one request every 6 s) cannot blur the count
however slowly a loaded machine sends the requests."""


def limited(trusted_proxies: list[str]) -> Litestar:
    server = {"trusted_proxies": trusted_proxies}
    auth = {"required": False, "rate_limit_per_minute": PER_MINUTE}
    settings = make_settings(Path("/nonexistent"), server=server, auth=auth)
    return create_app(settings, ScriptedService())


def accepted(url: str, forwarded_for: list[str]) -> tuple[int, int]:
    """Requests let through, and how many the allowance refilled while they were sent."""
    started = time.monotonic()
    with httpx.Client(base_url=url) as client:
        statuses = [
            client.get("/v1/jobs", headers={"X-Forwarded-For": xff}).status_code
            for xff in forwarded_for
        ]
    assert set(statuses) <= {200, 429}
    return statuses.count(200), int((time.monotonic() - started) * PER_MINUTE / 60)


def one_allowance(through: tuple[int, int]) -> bool:
    let_through, refilled = through
    return PER_MINUTE <= let_through <= PER_MINUTE + refilled


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    # A fresh spoofed address on every request: one client all the same.
    spoofed = [f"198.51.100.{n}" for n in range(30)]
    with serve(limited([])) as live:
        assert one_allowance(accepted(live.url, spoofed))


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clients = [f"198.51.100.{n}" for n in range(30)]
    with serve(limited(["127.0.0.1"])) as live, caplog.at_level(logging.INFO, "rag.access"):
        # Each client its own bucket, all through the one proxy.
        assert accepted(live.url, clients)[0] == 30
        # The right-most address that is not a proxy: whatever the client put before it
        # is its own claim, so one client spoofing fresh addresses still hits the limit.
        spoofing = [f"203.0.113.{n % 250}, 192.0.2.7, 127.0.0.1" for n in range(30)]
        assert one_allowance(accepted(live.url, spoofing))
    logged = {json.loads(r.getMessage())["client"] for r in caplog.records}
    assert "198.51.100.29" in logged and "192.0.2.7" in logged
    assert not any(c.startswith("203.0.113.") for c in logged) and "127.0.0.1" not in logged


def search_from(url: str, origin: str, **headers: str) -> httpx.Response:
    body = {"query": "x"}
    return httpx.post(f"{url}/v1/search", json=body, headers={"Origin": origin, **headers})


def test_a_trusted_proxy_tells_the_scheme_for_the_origin_check() -> None:
    # TLS ends at the proxy: the page is https, the request reaching the app is http.
    with serve(limited(["127.0.0.1"])) as live:
        origin = live.url.replace("http://", "https://")
        told = search_from(live.url, origin, **{"X-Forwarded-Proto": "https"})
        assert told.status_code == 200, told.text
        assert_cross_site(search_from(live.url, origin), origin)
    with serve(limited([])) as live:
        origin = live.url.replace("http://", "https://")
        spoofed = search_from(live.url, origin, **{"X-Forwarded-Proto": "https"})
        assert_cross_site(spoofed, origin)
