"""The API docs page at ``/schema``: served whole by the app, open, under the page's CSP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LOCAL_URL, make_settings
from fakes import ScriptedService
from litestar.testing import AsyncTestClient
from page_assets import REMOTE, asset_urls

from rag.web import create_app

CONTENT_TYPES = {
    "/static/docs.js": "text/javascript",
    "/static/base.css": "text/css",
    "/static/docs.css": "text/css",
    "/static/favicon.svg": "image/svg+xml",
    "/schema/openapi.json": "application/vnd.oai.openapi+json",
}


@pytest.fixture
async def locked(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app with API keys required and none usable: only open routes answer 200."""
    settings = make_settings(tmp_path, auth={"required": True})
    app = create_app(settings, ScriptedService())
    async with AsyncTestClient(app=app, base_url=LOCAL_URL) as client:
        yield client


async def test_docs_page_and_everything_it_loads_are_served_here(
    locked: AsyncTestClient[Any],
) -> None:
    assert (await locked.get("/v1/jobs")).status_code == 401  # the guard is on
    page = await locked.get("/schema")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert not REMOTE.search(page.text), REMOTE.search(page.text)
    urls = asset_urls(page.text)
    assert set(urls) == set(CONTENT_TYPES)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await locked.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] == CONTENT_TYPES[url], url


async def test_docs_page_has_the_chat_pages_security_headers(
    locked: AsyncTestClient[Any],
) -> None:
    headers = (await locked.get("/schema")).headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "connect-src 'self'" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("site", ["swagger", "redoc", "elements", "rapidoc"])
async def test_no_page_loads_a_docs_ui_from_a_cdn(locked: AsyncTestClient[Any], site: str) -> None:
    # Litestar serves these by default, each with its code from a CDN.
    response = await locked.get(f"/schema/{site}")
    assert response.status_code == 404
    assert not REMOTE.search(response.text)


async def test_the_yaml_schema_is_still_served(locked: AsyncTestClient[Any]) -> None:
    response = await locked.get("/schema/openapi.yaml")
    assert response.status_code == 200
    assert yaml.safe_load(response.text) == (await locked.get("/schema/openapi.json")).json()
