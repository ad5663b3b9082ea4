"""The HTTP API against a scripted fake service, in process.

Litestar's test client (like ``httpx.ASGITransport``) collects the whole body before
returning it, so these tests see complete streams; real incremental streaming and
client disconnects are covered over a socket in ``test_sse_disconnect.py``.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fakes
import msgspec
import pytest
from conftest import LOCAL_URL
from fakes import Call, Pause, ScriptedService, Step, done_event, parse_sse
from litestar import Litestar
from litestar.testing import AsyncTestClient

from rag.config import ServerSettings, Settings
from rag.domain import (
    Citation,
    DeltaEvent,
    Hit,
    Latency,
    Source,
    SourcesEvent,
)
from rag.errors import InputError, ModelError
from rag.web import create_app

SOURCES = SourcesEvent(
    sources=(
        Source(
            n=1,
            chunk_id="c1",
            document="guide.md",
            title="Guide",
            page=None,
            score=0.9,
            snippet="Run rag ingest.",
        ),
    )
)
DONE = done_event(
    "Run rag ingest [1].",
    citations=(Citation(n=1, chunk_id="c1", document="guide.md", page=None, quote="Run it."),),
    latency_ms=Latency(retrieve=1.0, first_token=2.0, total=3.0),
    trace_id="t-1",
)
ANSWER: list[Step] = [SOURCES, DeltaEvent(text="Run rag "), DeltaEvent(text="ingest [1]."), DONE]


def settings(**server: object) -> Settings:
    return Settings(server=msgspec.structs.replace(ServerSettings(), **server))


def names(frames: list[tuple[str, str]]) -> list[str]:
    return [name for name, _ in frames if name != "comment"]


@asynccontextmanager
async def client_for(
    service: ScriptedService, conf: Settings | None = None
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(
        app=create_app(conf or settings(), service), base_url=LOCAL_URL
    ) as client:
        yield client


async def test_post_ask_streams_sources_then_deltas_then_done() -> None:
    service = ScriptedService(ANSWER)
    async with client_for(service) as client:
        response = await client.post("/v1/ask", json={"question": "  How to ingest? ", "top_k": 3})
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    frames = parse_sse(response.text)
    assert names(frames) == ["sources", "delta", "delta", "done"]
    assert json.loads(frames[0][1]) == [
        {
            "n": 1,
            "chunk_id": "c1",
            "document": "guide.md",
            "title": "Guide",
            "page": None,
            "score": 0.9,
            "snippet": "Run rag ingest.",
            "recognised": False,
            "confidence": None,
        }
    ]
    assert [json.loads(d)["text"] for n, d in frames if n == "delta"] == ["Run rag ", "ingest [1]."]
    done = json.loads(frames[-1][1])
    assert done["trace_id"] == "t-1" and done["grounded"] is True and "type" not in done
    assert service.calls == [Call("ask", "How to ingest?", 3)]
    assert service.completed and service.closed


async def test_get_ask_streams_for_event_source() -> None:
    service = ScriptedService(ANSWER)
    async with client_for(service) as client:
        response = await client.get("/v1/ask", params={"q": "How to ingest?", "top_k": "2"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert names(parse_sse(response.text)) == ["sources", "delta", "delta", "done"]
    assert service.calls == [Call("ask", "How to ingest?", 2)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{}", "missing required field `question`"),
        (b'{"top_k": 3}', "missing required field `question`"),
        (b'{"question": 42}', "question: Expected `str`, got `int`"),
        (b'{"question": null}', "question: Expected `str`, got `null`"),
        (b'{"question": ""}', "question must not be empty"),
        (b'{"question": " \\n\\t "}', "question must not be empty"),
        (json.dumps({"question": "x" * 101}).encode(), "the limit is 100"),
        (b'{"question": "hi", "top_k": 0}', "top_k: Expected `int` >= 1"),
        (b'{"question": "hi", "top_k": 51}', "top_k: Expected `int` <= 50"),
        (b'{"question": "hi", "top_k": "5"}', "top_k: Expected `int | null`, got `str`"),
        (b'{"question": "hi", "top_k": 2.5}', "top_k: Expected `int | null`, got `float`"),
        (b'{"question": "hi", "top_k": true}', "top_k: Expected `int | null`, got `bool`"),
        (b'{"question": "hi", "topk": 5}', "unknown field `topk`"),
        (b'["hi"]', "request body: Expected `object`, got `array`"),
        (b'{"question": "hi"', "request body is not valid JSON: Input data was truncated"),
        (b"{bad", "request body is not valid JSON: JSON is malformed"),
        (b"", "request body is missing"),
    ],
)
async def test_post_ask_rejects_bad_requests_with_a_message(body: bytes, expected: str) -> None:
    service = ScriptedService(ANSWER, max_question_chars=100)
    async with client_for(service, settings(max_question_chars=100)) as client:
        response = await client.post(
            "/v1/ask", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert expected in error["message"]
    assert service.calls == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, "Missing required query parameter 'q'"),
        # The service's one check names the question, whatever the parameter is called.
        ({"q": "   "}, "question must not be empty"),
        ({"q": "x" * 101}, "question is too long: 101 characters, the limit is 100"),
        ({"q": "hi", "top_k": "many"}, "top_k: Expected `int | null`, got `str`"),
        ({"q": "hi", "top_k": "0"}, "top_k: Expected `int` >= 1"),
        ({"q": "hi", "top_k": "99"}, "top_k: Expected `int` <= 50"),
    ],
)
async def test_get_ask_rejects_bad_requests_with_a_message(
    params: dict[str, str], expected: str
) -> None:
    service = ScriptedService(ANSWER, max_question_chars=100)
    async with client_for(service, settings(max_question_chars=100)) as client:
        response = await client.get("/v1/ask", params=params)
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "bad_request", "message": response.json()["error"]["message"]}
    }
    assert expected in response.json()["error"]["message"]
    assert service.calls == []


@pytest.mark.parametrize("value", ["bogus", "status", "no status"])
async def test_a_bad_query_parameter_is_named_whatever_its_value(value: str) -> None:
    async with client_for(ScriptedService()) as client:
        response = await client.get("/v1/documents", params={"status": value})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == f"status: Invalid enum value '{value}'"


async def test_input_error_before_the_first_event_is_a_400_not_a_stream() -> None:
    service = ScriptedService([InputError("question is in a language we do not read")])
    async with client_for(service) as client:
        response = await client.post("/v1/ask", json={"question": "¿qué?"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "bad_request", "message": "question is in a language we do not read"}
    }
    assert service.closed


async def test_rag_error_mid_stream_becomes_an_error_event_and_ends_the_stream() -> None:
    service = ScriptedService([SOURCES, DeltaEvent("Run "), ModelError("the model stopped"), DONE])
    async with client_for(service) as client:
        response = await client.post("/v1/ask", json={"question": "How?"})
    assert response.status_code == 200
    frames = parse_sse(response.text)
    assert names(frames) == ["sources", "delta", "error"]
    assert json.loads(frames[-1][1]) == {
        "code": "model",
        "message": "the model stopped",
        "retryable": True,
    }
    assert service.closed and not service.completed


async def test_unexpected_exception_becomes_a_generic_error_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = ScriptedService([SOURCES, KeyError("secret_column_name")])
    with caplog.at_level(logging.ERROR, logger="rag.web"):
        async with client_for(service) as client:
            response = await client.post("/v1/ask", json={"question": "How?"})
    frames = parse_sse(response.text)
    assert names(frames) == ["sources", "error"]
    assert json.loads(frames[-1][1]) == {
        "code": "internal",
        "message": "internal error",
        "retryable": False,
    }
    assert "secret_column_name" not in response.text
    assert "Traceback" not in response.text
    # The operator still gets the whole story in the server log.
    failures = [r for r in caplog.records if r.exc_info and r.exc_info[0] is KeyError]
    assert failures, caplog.text


async def test_heartbeat_while_the_model_is_idle_does_not_cancel_it() -> None:
    service = ScriptedService([SOURCES, Pause(0.3), DeltaEvent(text="late"), DONE])
    async with client_for(service, settings(heartbeat_s=0.05)) as client:
        response = await client.post("/v1/ask", json={"question": "How?"})
    frames = parse_sse(response.text)
    assert frames[0][0] == "sources"
    pings = frames[1 : frames.index(("delta", '{"text":"late"}'))]
    assert pings and set(pings) == {("comment", "ping")}
    assert names(frames) == ["sources", "delta", "done"]
    assert ": ping\n\n" in response.text
    assert service.completed


async def test_slow_first_event_starts_the_stream_with_pings() -> None:
    service = ScriptedService([Pause(0.2), *ANSWER])
    async with client_for(service, settings(heartbeat_s=0.05)) as client:
        response = await client.get("/v1/ask", params={"q": "How?"})
    assert response.status_code == 200
    frames = parse_sse(response.text)
    assert frames[0] == ("comment", "ping")
    assert names(frames) == ["sources", "delta", "delta", "done"]


async def test_input_error_after_the_stream_started_is_an_error_event() -> None:
    service = ScriptedService([Pause(0.2), InputError("too vague")])
    async with client_for(service, settings(heartbeat_s=0.05)) as client:
        response = await client.post("/v1/ask", json={"question": "How?"})
    assert response.status_code == 200
    frames = parse_sse(response.text)
    assert names(frames) == ["error"]
    assert json.loads(frames[-1][1])["code"] == "bad_request"


def hit(n: int, text: str) -> Hit:
    return fakes.hit(
        n,
        text,
        source=f"docs/{n}.pdf",
        relevance=0.5,
        page_start=n,
        page_end=n + 1,
        heading_path=("Part", f"Section {n}"),
    )


async def test_search_returns_ranked_hits() -> None:
    long_text = "word " * 200
    service = ScriptedService(hits=[hit(1, "Short\n text."), hit(2, long_text)])
    async with client_for(service) as client:
        response = await client.post("/v1/search", json={"query": " ingest ", "k": 7})
    assert response.status_code == 200
    hits = response.json()["hits"]
    assert hits[0] == {
        "rank": 1,
        "chunk_id": "c1",
        "document": "docs/1.pdf",
        "title": "Doc 1",
        "page": 1,
        "score": 1.0,
        "relevance": 0.5,
        "snippet": "Short text.",
        "heading_path": ["Part", "Section 1"],
        "recognised": False,
        "confidence": None,
    }
    assert hits[1]["rank"] == 2
    assert len(hits[1]["snippet"]) <= 300 and hits[1]["snippet"].endswith("word…")
    assert service.calls == [Call("search", "ingest", 7)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"query": ""}, "query must not be empty"),
        ({"query": 3}, "query: Expected `str`, got `int`"),
        ({"query": "x", "k": 0}, "k: Expected `int` >= 1"),
        ({"q": "x"}, "unknown field `q`"),
    ],
)
async def test_search_rejects_bad_requests(body: dict[str, object], expected: str) -> None:
    async with client_for(ScriptedService()) as client:
        response = await client.post("/v1/search", json=body)
    assert response.status_code == 400
    assert expected in response.json()["error"]["message"]


async def test_unexpected_failure_is_a_500_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = ScriptedService(search_error=RuntimeError("db password is hunter2"))
    with caplog.at_level(logging.ERROR, logger="rag.web"):
        async with client_for(service) as client:
            response = await client.post("/v1/search", json={"query": "x"})
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal error"}}
    assert "hunter2" in caplog.text


async def test_rag_errors_keep_their_status_and_code() -> None:
    service = ScriptedService(search_error=ModelError("embedder timed out"))
    async with client_for(service) as client:
        response = await client.post("/v1/search", json={"query": "x"})
    assert response.status_code == 502
    assert response.json() == {"error": {"code": "model", "message": "embedder timed out"}}


async def test_unknown_route_and_method_use_the_error_shape() -> None:
    async with client_for(ScriptedService()) as client:
        missing = await client.get("/v2/nothing")
        wrong = await client.delete("/v1/search")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_healthz() -> None:
    async with client_for(ScriptedService()) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "chunks": 0}


async def test_openapi_schema_lists_the_routes_offline() -> None:
    async with client_for(ScriptedService()) as client:
        response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert set(paths["/v1/ask"]) == {"get", "post"}
    assert set(paths["/v1/search"]) == {"post"}
    assert set(paths["/healthz"]) == {"get"}
    assert "text/event-stream" in paths["/v1/ask"]["post"]["responses"]["200"]["content"]
    error_ref = paths["/v1/ask"]["post"]["responses"]["400"]["content"]["application/json"]
    assert error_ref["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}


async def test_without_a_service_the_app_opens_and_closes_the_real_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[str] = []
    service = ScriptedService(ANSWER)

    @asynccontextmanager
    async def open_service(conf: Settings) -> AsyncIterator[ScriptedService]:
        opened.append("open")
        yield service
        opened.append("close")

    # The app imports rag.service lazily at startup; a stand-in module keeps this test
    # about the lifespan wiring rather than the models and the database.
    module = types.ModuleType("rag.service")
    module.open_service = open_service  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rag.service", module)
    app = create_app(settings())
    async with AsyncTestClient(app=app, base_url=LOCAL_URL) as client:
        assert opened == ["open"]
        response = await client.get("/healthz")
        assert response.json()["status"] == "ok"
    assert opened == ["open", "close"]
    assert app.state.service is None
