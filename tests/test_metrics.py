"""GET /metrics (Prometheus text format) and the one-JSON-line-per-request log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import LOCAL_URL, make_settings
from fakes import FakeEmbedder, upload
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from rag.keys import KeyStore
from rag.registry import Overrides
from rag.service import RagService, open_service
from rag.web import create_app
from rag.web.access_log import configure_access_log

DOC = b"# Zebra guide\n\nThe zebra protocol moves striped parcels between warehouses.\n"
QUESTION = "How does the zebra protocol move striped parcels between warehouses?"


@asynccontextmanager
async def open_client(
    tmp_path: Path, **sections: Any
) -> AsyncIterator[tuple[AsyncTestClient[Litestar], RagService]]:
    sections.setdefault("uploads", {"folder": str(tmp_path / "uploads")})
    sections.setdefault("retrieval", {"min_relevance": 0.2})
    settings = make_settings(tmp_path, **sections)
    async with (
        open_service(settings, Overrides(embedder=FakeEmbedder())) as service,
        AsyncTestClient(app=create_app(settings, service=service), base_url=LOCAL_URL) as client,
    ):
        assert (await upload(client, "guide.md", DOC))["status"] == "ok"
        yield client, service


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def done_event(body: str) -> dict[str, Any]:
    frames = [frame for frame in body.split("\n\n") if frame.startswith("event: done")]
    assert len(frames) == 1, body
    data: dict[str, Any] = json.loads(frames[0].split("\ndata: ", 1)[1])
    return data


class Cost:
    provider, model, kind = "workers-ai", "@cf/meta/llama-3.1-8b-instruct-fast", "chat"
    input_tokens, output_tokens, neurons, usd, estimated = 120, 30, 1.5, 0.0000165, False


async def test_metrics_count_requests_stages_cache_tokens_and_ingestion(tmp_path: Path) -> None:
    async with open_client(tmp_path) as (client, service):
        first = await client.get("/v1/ask", params={"q": QUESTION})
        second = await client.get("/v1/ask", params={"q": QUESTION})
        assert done_event(first.text)["grounded"] is True
        assert done_event(second.text)["cached"] is True
        assert (await client.get("/v1/nothing-here")).status_code == 404
        service.ledger(Cost())  # what a Workers AI call reports
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    requests = "rag_http_requests_total"
    assert value(found, requests, route="/v1/ask", method="GET", status="200") == 2
    assert value(found, requests, route="/v1/documents", method="POST", status="202") == 1
    assert value(found, requests, route="(unmatched)", method="GET", status="404") == 1
    assert (
        value(found, "rag_http_request_duration_seconds_count", route="/v1/ask", method="GET") == 2
    )
    for stage in ("retrieve", "first_token", "total"):
        assert value(found, "rag_answer_stage_seconds_count", stage=stage) == 2
    assert value(found, "rag_answer_stage_seconds_bucket", stage="total", le="+Inf") == 2
    assert value(found, "rag_answer_cache_hits_total") == 1
    answers = [k for k in found if k[0] == "rag_answers_total"]
    assert sum(found[k] for k in answers) == 2
    model = Cost.model
    assert (
        value(found, "rag_model_tokens_total", model=model, kind="chat", direction="input") == 120
    )
    assert (
        value(found, "rag_model_tokens_total", model=model, kind="chat", direction="output") == 30
    )
    assert value(found, "rag_model_neurons_total", model=model, kind="chat") == 1.5
    assert value(found, "rag_ingest_documents_total", trigger="upload", outcome="new") == 1
    assert value(found, "rag_ingest_chunks_embedded_total", trigger="upload") == 1
    assert value(found, "rag_ingest_jobs_running") == 0


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    async with open_client(tmp_path, web={"metrics": "off"}) as (client, _):
        assert (await client.get("/metrics")).status_code == 404


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "rag.access"]


async def test_log_line_is_json_with_the_done_events_trace_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_client(tmp_path) as (client, _):
        with caplog.at_level(logging.INFO, logger="rag.access"):
            asked = await client.get("/v1/ask", params={"q": QUESTION})
            posted = await client.post("/v1/ask", json={"question": QUESTION + " Really?"})
            listed = await client.get("/v1/documents")
    get_line, post_line, list_line = access_lines(caplog)
    assert get_line["trace_id"] == done_event(asked.text)["trace_id"]
    assert post_line["trace_id"] == done_event(posted.text)["trace_id"]
    assert (get_line["method"], get_line["path"], get_line["status"]) == ("GET", "/v1/ask", 200)
    assert get_line["route"] == "/v1/ask" and get_line["duration_ms"] >= 0
    assert get_line["key_id"] is None and "question" not in get_line
    assert list_line["trace_id"] == listed.headers["x-trace-id"]
    # One id per request, minted at the edge: the header, the log line and the done event.
    assert asked.headers["x-trace-id"] == done_event(asked.text)["trace_id"]
    for record in caplog.records:
        assert "zebra" not in record.getMessage()


async def test_questions_are_logged_only_when_configured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_client(tmp_path, web={"log_questions": True}) as (client, _):
        with caplog.at_level(logging.INFO, logger="rag.access"):
            await client.get("/v1/ask", params={"q": QUESTION})
            await client.post("/v1/ask", json={"question": "zebra parcels?"})
    assert [line.get("question") for line in access_lines(caplog)] == [QUESTION, "zebra parcels?"]


async def test_log_line_names_the_key_id_never_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auth = {"required": True, "rate_limit_per_minute": 0}
    settings = make_settings(tmp_path, auth=auth, uploads={"folder": str(tmp_path / "u")})
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        info, key = await KeyStore(service.sessions).create("ops")
        async with AsyncTestClient(
            app=create_app(settings, service=service), base_url=LOCAL_URL
        ) as client:
            with caplog.at_level(logging.INFO, logger="rag.access"):
                await client.get("/v1/ask", params={"q": QUESTION, "key": key})
                await client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
                await client.get("/v1/jobs")
    lines = access_lines(caplog)
    assert [(line["key_id"], line["status"]) for line in lines] == [
        (info.id, 200),
        (info.id, 200),
        (None, 401),
    ]
    assert all(key not in record.getMessage() for record in caplog.records)
    assert lines[0]["path"] == "/v1/ask"  # the query string, with ?key=, is never logged


def test_access_log_is_json_off_a_terminal() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("rag.access")
    level = logger.level
    configure_access_log(stream)
    configure_access_log(stream)  # idempotent: one handler, one line per request
    try:
        fields = {
            "method": "GET",
            "path": "/v1/jobs",
            "status": 200,
            "duration_ms": 1.5,
            "trace_id": "t",
            "key_id": None,
        }
        logger.info(json.dumps(fields), extra={"access": fields})
    finally:
        for handler in [h for h in logger.handlers if getattr(h, "rag_access", False)]:
            logger.removeHandler(handler)
        logger.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == fields
