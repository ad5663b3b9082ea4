"""The real app over the real service: ingest a folder, then ask, search and check health.

Everything is real except the embedder (``FakeEmbedder``, a hashed bag of words), so
retrieval, the evidence gate, the extractive answerer, citation checking, SSE framing
and the HTTP error mapping all run as in production, in well under a second per test.
Each test runs on SQLite and on PostgreSQL, the app under a real uvicorn on 127.0.0.1
(``fakes.app_client``); the client reads whole streams, which is all these tests need:
incremental delivery and disconnects are covered in ``test_sse_disconnect.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fakes import FakeEmbedder, app_client, parse_sse
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from rag.answer.flow import NOT_COVERED
from rag.db.tables import Chunk
from rag.registry import Overrides
from rag.service import RagService, open_service
from rag.web.app import create_app

DOCS = {
    "guide.md": "# Quillstore guide\n\n## Backups\n\n"
    "Quillstore writes a snapshot of the database every ten minutes. To restore a "
    "snapshot, stop the server and run quill restore with the snapshot file. Snapshots "
    "are kept for seven days.\n\n## Ports\n\n"
    "The server listens on port 7070 by default. Change the port with the listen "
    "setting.\n",
    "replication.txt": "Quillstore replicates writes to follower nodes over a Raft log. "
    "A cluster needs at least three nodes to survive the loss of one node.\n",
    "faq.html": "<html><head><title>FAQ</title></head><body><h1>FAQ</h1>"
    "<p>Quillstore stores keys and values on disk in a log structured merge tree.</p>"
    "</body></html>",
}
# (question, the document and the words its answer must come from)
ON_TOPIC = [
    ("How do I restore a snapshot?", "guide.md", "run quill restore"),
    ("How many nodes does a cluster need?", "replication.txt", "at least three nodes"),
    ("Which port does the server listen on?", "guide.md", "port 7070"),
]
OFF_TOPIC = "How long should I boil pasta for carbonara?"
Frames = list[tuple[str, Any]]


@dataclass
class Harness:
    client: AsyncClient
    service: RagService

    async def ask_post(self, question: str, **extra: object) -> Frames:
        response = await self.client.post("/v1/ask", json={"question": question, **extra})
        return sse_frames(response)

    async def ask_get(self, question: str) -> Frames:
        return sse_frames(await self.client.get("/v1/ask", params={"q": question}))

    async def chunk_texts(self) -> dict[str, str]:
        async with self.service.sessions() as session:
            rows = await session.execute(select(Chunk.id, Chunk.text))
            return {chunk_id: text for chunk_id, text in rows}


def sse_frames(response: Response) -> Frames:
    """The stream's events as (name, decoded data), heartbeat comments left out."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    return [
        (name, json.loads(data)) for name, data in parse_sse(response.text) if name != "comment"
    ]


def check_order(frames: Frames) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """sources, one or more deltas, done; returns the sources, the streamed text and done."""
    names = [name for name, _ in frames]
    assert names[0] == "sources" and names[-1] == "done", names
    assert len(names) >= 3 and set(names[1:-1]) == {"delta"}, names
    streamed = "".join(data["text"] for name, data in frames if name == "delta")
    return frames[0][1], streamed, frames[-1][1]


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@asynccontextmanager
async def open_harness(
    tmp_path: Path, database_url: str, **retrieval: object
) -> AsyncIterator[Harness]:
    settings = make_settings(
        tmp_path,
        database={"url": database_url},
        retrieval={"min_relevance": 0.3, **retrieval},
    )
    async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
        report = await service.ingest([write_docs(tmp_path / "docs")])
        assert (report.new, report.failed, report.skipped) == (3, 0, 0)
        async with app_client(create_app(settings, service=service)) as client:
            yield Harness(client, service)


@pytest.fixture
async def rag(tmp_path: Path, database_url: str) -> AsyncIterator[Harness]:
    async with open_harness(tmp_path, database_url) as harness:
        yield harness


@pytest.fixture
async def strict_rag(tmp_path: Path, database_url: str) -> AsyncIterator[Harness]:
    """An evidence gate no question about these documents can clear."""
    async with open_harness(tmp_path, database_url, min_relevance=0.99) as harness:
        yield harness


@pytest.mark.parametrize(("question", "document", "words"), ON_TOPIC)
async def test_post_ask_streams_a_grounded_cited_answer(
    rag: Harness, question: str, document: str, words: str
) -> None:
    sources, streamed, done = check_order(await rag.ask_post(question))
    assert sources and [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    assert sources[0]["document"] == document
    assert {s["document"] for s in sources} <= set(DOCS)
    assert all(
        set(s)
        == {
            "n",
            "chunk_id",
            "document",
            "title",
            "page",
            "score",
            "snippet",
            "recognised",
            "confidence",
        }
        for s in sources
    )
    scores = [s["score"] for s in sources]
    assert scores[0] == max(scores) >= 0.3

    assert done["answer"] == streamed.strip()
    assert words in done["answer"]
    assert done["grounded"] is True
    assert done["citations"], done
    assert done["provider"] == "extractive" and done["cached"] is False
    assert done["usage"] == {"neurons": 0.0, "usd": 0.0, "input_tokens": 0, "output_tokens": 0}
    latency = done["latency_ms"]
    assert 0 < latency["retrieve"] <= latency["first_token"] <= latency["total"]
    assert re.fullmatch(r"[0-9a-f]{32}", done["trace_id"])
    await check_citations(rag, sources, done)


async def check_citations(
    rag: Harness, sources: list[dict[str, Any]], done: dict[str, Any]
) -> None:
    by_n = {s["n"]: s for s in sources}
    markers = [int(n) for n in re.findall(r"\[(\d+)\]", done["answer"])]
    assert markers and set(markers) <= set(by_n), (markers, list(by_n))
    assert sorted(c["n"] for c in done["citations"]) == sorted(markers)
    texts = await rag.chunk_texts()
    for citation in done["citations"]:
        source = by_n[citation["n"]]
        assert citation["chunk_id"] == source["chunk_id"]
        assert citation["document"] == source["document"]
        assert citation["page"] == source["page"]
        # Extractive answers quote their sources word for word.
        assert citation["quote"], citation
        assert citation["quote"] in texts[citation["chunk_id"]]
        assert f"{citation['quote']} [{citation['n']}]" in done["answer"]


async def test_get_ask_for_event_source_streams_the_same_answer(rag: Harness) -> None:
    question = ON_TOPIC[0][0]
    get_sources, get_text, get_done = check_order(await rag.ask_get(question))
    post_sources, post_text, post_done = check_order(await rag.ask_post(question))
    assert get_sources == post_sources
    assert get_text == post_text
    assert get_done["answer"] == post_done["answer"]
    assert get_done["citations"] == post_done["citations"]
    assert get_done["trace_id"] != post_done["trace_id"]
    await check_citations(rag, get_sources, get_done)


async def test_top_k_limits_the_sources(rag: Harness) -> None:
    sources, _, done = check_order(await rag.ask_post(ON_TOPIC[2][0], top_k=1))
    assert len(sources) == 1
    assert {c["n"] for c in done["citations"]} == {1}
    sources, _, _ = check_order(await rag.ask_post(ON_TOPIC[2][0], top_k=50))
    chunks = len(await rag.chunk_texts())
    assert len(sources) == chunks  # every chunk, never more, never a duplicate
    assert len({s["chunk_id"] for s in sources}) == chunks


async def test_off_topic_question_is_not_covered(rag: Harness) -> None:
    for frames in (await rag.ask_post(OFF_TOPIC), await rag.ask_get(OFF_TOPIC)):
        sources, streamed, done = check_order(frames)
        assert sources == []
        assert streamed == done["answer"] == NOT_COVERED
        assert done["grounded"] is False
        assert done["citations"] == []


@pytest.mark.parametrize(("question", "document", "words"), ON_TOPIC)
async def test_a_strict_evidence_gate_refuses_rather_than_invents(
    strict_rag: Harness, question: str, document: str, words: str
) -> None:
    sources, _, done = check_order(await strict_rag.ask_post(question))
    assert sources == []
    assert done["grounded"] is False
    assert done["citations"] == []
    assert done["answer"] == NOT_COVERED
    assert words not in done["answer"]
    # Search is not gated: the evidence is there, it is just not good enough to answer.
    response = await strict_rag.client.post("/v1/search", json={"query": question})
    assert response.json()["hits"][0]["document"] == document


async def test_search_returns_ranked_hits(rag: Harness) -> None:
    response = await rag.client.post("/v1/search", json={"query": "snapshot restore", "k": 3})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    hits = response.json()["hits"]
    assert 1 <= len(hits) <= 3
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    assert hits[0]["document"] == "guide.md"
    assert hits[0]["heading_path"] == ["Quillstore guide", "Backups"]
    assert "quill restore" in hits[0]["snippet"]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    texts = await rag.chunk_texts()
    for hit in hits:
        assert hit["chunk_id"] in texts
        assert hit["snippet"] == " ".join(texts[hit["chunk_id"]].split())  # short chunks


async def test_search_without_k_uses_the_configured_top_k(rag: Harness) -> None:
    response = await rag.client.post("/v1/search", json={"query": "Quillstore"})
    assert response.status_code == 200
    assert len(response.json()["hits"]) == len(await rag.chunk_texts())  # 4 chunks < top_k 5


async def test_healthz_counts_documents_and_chunks(rag: Harness) -> None:
    response = await rag.client.get("/healthz")
    assert response.status_code == 200
    health = response.json()
    async with rag.service.sessions() as session:
        chunks = await session.scalar(select(func.count()).select_from(Chunk))
    assert health["status"] == "ok"
    assert health["documents"] == 3
    assert health["chunks"] == chunks == len(await rag.chunk_texts()) >= 3
    assert health["vectors_loaded"] == chunks
    assert health["backend"] == "local"
    assert health["embedder"] == "fake-bow-256"
    assert health["answerer"] == "extractive"


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/ask", {"question": ""}, "question must not be empty"),
        ("/v1/ask", {"question": "   "}, "question must not be empty"),
        ("/v1/ask", {"question": "x" * 10_000}, "question is too long: 10000 characters"),
        ("/v1/ask", {}, "missing required field `question`"),
        ("/v1/ask", {"question": 7}, "question: Expected `str`, got `int`"),
        ("/v1/ask", {"question": ["a"]}, "question: Expected `str`, got `array`"),
        ("/v1/ask", {"question": "hi", "top_k": "3"}, "top_k: Expected `int | null`, got `str`"),
        ("/v1/ask", {"question": "hi", "top_k": 0}, "top_k: Expected `int` >= 1"),
        ("/v1/ask", ["hi"], "Expected `object`, got `array`"),
        ("/v1/search", {"query": ""}, "query must not be empty"),
        ("/v1/search", {"query": "x" * 10_000}, "query is too long: 10000 characters"),
        ("/v1/search", {"query": 1.5}, "query: Expected `str`, got `float`"),
        ("/v1/search", {"query": "hi", "k": True}, "k: Expected `int | null`, got `bool`"),
    ],
)
async def test_bad_requests_are_400s_naming_the_problem(
    rag: Harness, path: str, body: object, expected: str
) -> None:
    response = await rag.client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert expected in error["message"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": ""}, "question must not be empty"),
        ({"q": "x" * 10_000}, "question is too long: 10000 characters"),
        ({}, "Missing required query parameter 'q'"),
        ({"q": "hi", "top_k": "lots"}, "top_k"),
    ],
)
async def test_bad_get_requests_are_400s_naming_the_problem(
    rag: Harness, params: dict[str, str], expected: str
) -> None:
    response = await rag.client.get("/v1/ask", params=params)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]["message"]


async def test_malformed_json_is_a_400(rag: Harness) -> None:
    response = await rag.client.post(
        "/v1/ask", content=b'{"question": "hi"', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "request body is not valid JSON" in response.json()["error"]["message"]


async def test_a_changed_document_is_answered_from_its_new_text(
    rag: Harness, tmp_path: Path
) -> None:
    (tmp_path / "docs" / "replication.txt").write_text(
        "A Quillstore cluster needs at least five nodes to survive the loss of two nodes.\n",
        encoding="utf-8",
    )
    report = await rag.service.ingest([tmp_path / "docs"])
    assert (report.updated, report.unchanged) == (1, 2)
    _, _, done = check_order(await rag.ask_post("How many nodes does a cluster need?"))
    assert "at least five nodes" in done["answer"]
    assert "three nodes" not in done["answer"]


async def test_the_answer_quotes_no_bare_heading(rag: Harness) -> None:
    # Loaders keep a heading in its section's text (without "#"), where it reads as a
    # sentence; quoting it would cite a title as a fact.
    headings = {"Quillstore guide", "Backups", "Ports", "FAQ"}
    for question, _, _ in ON_TOPIC:
        _, _, done = check_order(await rag.ask_post(question))
        assert not {c["quote"] for c in done["citations"]} & headings, done["answer"]
