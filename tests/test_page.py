"""The chat page and its files, served by the app; the ``history`` of follow-up questions."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LOCAL_URL
from fakes import Call, ScriptedService, done_event
from litestar.testing import AsyncTestClient
from page_assets import REMOTE, asset_urls

from rag.config import Settings
from rag.domain import DeltaEvent, SourcesEvent
from rag.web import create_app
from rag.web.page import STATIC_DIR
from rag.web.schemas import HISTORY_PARAM_MAX_CHARS

DONE = done_event("Hi.", grounded=False)
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, never fetched


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    service = ScriptedService([SourcesEvent(()), DeltaEvent("Hi."), DONE])
    async with AsyncTestClient(
        app=create_app(Settings(), service), base_url=LOCAL_URL
    ) as test_client:
        yield test_client


def service_of(client: AsyncTestClient[Any]) -> ScriptedService:
    service = client.app.state.service
    assert isinstance(service, ScriptedService)
    return service


async def test_page_is_html_with_only_local_assets(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not REMOTE.search(html), REMOTE.search(html)
    assets = asset_urls(html)
    expected = {"/static/app.js", "/static/base.css", "/static/app.css", "/static/favicon.svg"}
    assert expected <= set(assets)
    for url in assets:
        assert url.startswith("/static/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
    # The browser itself refuses anything from elsewhere.
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/app.js", "text/javascript"),
        ("/static/api.js", "text/javascript"),
        ("/static/app.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
        ("/static/index.html", "text/html"),
    ],
)
async def test_static_files_have_their_content_types(
    client: AsyncTestClient[Any], path: str, content_type: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "no-cache" in response.headers["cache-control"]


def test_scripts_import_only_local_modules() -> None:
    scripts = sorted(STATIC_DIR.glob("*.js"))
    assert scripts
    for script in scripts:
        source = script.read_text(encoding="utf-8")
        assert not REMOTE.search(source.replace(SVG_NAMESPACE, "")), script.name
        for module in re.findall(r"""^import .* from "([^"]+)";$""", source, re.M):
            assert module.startswith("./"), (script.name, module)
            assert (STATIC_DIR / module).is_file(), (script.name, module)
    stylesheets = sorted(STATIC_DIR.glob("*.css"))
    assert stylesheets
    for stylesheet in stylesheets:
        styles = stylesheet.read_text(encoding="utf-8")
        assert "@import" not in styles and not REMOTE.search(styles), stylesheet.name


@pytest.mark.parametrize(
    "path", ["/static/nothing.js", "/static/../page.py", "/static/%2e%2e/app.py"]
)
async def test_missing_or_outside_files_are_404(client: AsyncTestClient[Any], path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert "import" not in response.text


async def test_page_is_not_in_the_api_schema(client: AsyncTestClient[Any]) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)


TURNS = [{"question": "Which port?", "answer": "7070 [1]."}]


async def test_get_ask_passes_history_to_the_service(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/v1/ask", params={"q": "Why?", "history": json.dumps(TURNS)})
    assert response.status_code == 200
    assert service_of(client).calls == [Call("ask", "Why?", None, (("Which port?", "7070 [1]."),))]


async def test_post_ask_passes_history_to_the_service(client: AsyncTestClient[Any]) -> None:
    body = {"question": "Why?", "top_k": 2, "history": [{"question": "Which port?"}]}
    response = await client.post("/v1/ask", json=body)
    assert response.status_code == 200
    assert service_of(client).calls == [Call("ask", "Why?", 2, (("Which port?", ""),))]


@pytest.mark.parametrize("history", [None, "", "[]"])
async def test_no_history_is_a_plain_question(
    client: AsyncTestClient[Any], history: str | None
) -> None:
    params = {"q": "Why?"} if history is None else {"q": "Why?", "history": history}
    response = await client.get("/v1/ask", params=params)
    assert response.status_code == 200
    assert service_of(client).calls == [Call("ask", "Why?", None)]


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ("[{bad", "history is not valid JSON"),
        ('{"question": "x"}', "history: Expected `array`, got `object`"),
        ('["x"]', "history[0]: Expected `object`, got `str`"),
        ('[{"answer": "x"}]', "history[0]: Object missing required field `question`"),
        ('[{"question": 1}]', "history[0].question: Expected `str`, got `int`"),
        ('[{"question": "x", "q": 1}]', "unknown field `q`"),
        (json.dumps([{"question": "x"}] * 4), "history: Expected `array` of length <= 3"),
        (json.dumps([{"question": "x" * 2001}]), "history[0].question: Expected `str` of length"),
        (
            json.dumps([{"question": "x", "answer": "y" * HISTORY_PARAM_MAX_CHARS}]),
            "history is too long",
        ),
    ],
)
async def test_get_ask_rejects_bad_history(
    client: AsyncTestClient[Any], history: str, expected: str
) -> None:
    response = await client.get("/v1/ask", params={"q": "Why?", "history": history})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request" and expected in error["message"], error
    assert service_of(client).calls == []


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ({"question": "x"}, "history: Expected `array | null`, got `object`"),
        ([{"question": "x"}] * 4, "history: Expected `array` of length <= 3"),
        ([{"answer": "x"}], "history[0]: Object missing required field `question`"),
        ([{"question": "x", "answer": "y" * 4001}], "history[0].answer: Expected `str` of length"),
    ],
)
async def test_post_ask_rejects_bad_history(
    client: AsyncTestClient[Any], history: object, expected: str
) -> None:
    response = await client.post("/v1/ask", json={"question": "Why?", "history": history})
    assert response.status_code == 400
    assert expected in response.json()["error"]["message"]
    assert service_of(client).calls == []


def test_static_files_ship_with_the_package() -> None:
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"web/static/*"' in pyproject
    assert {p.name for p in STATIC_DIR.iterdir()} >= {"index.html", "app.js", "app.css"}
