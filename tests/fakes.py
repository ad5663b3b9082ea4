"""Test doubles and helpers shared by the suite, in one place so they cannot drift apart
(mypy checks them against the Protocols in ``rag.ports``):

* ``FakeEmbedder``: a deterministic embedder that needs no model file;
* ``GatedEmbedder``, ``SlowPdfs``: an embedder and a loader that hold ingestion until
  the test lets it go;
* ``ScriptedChat``: a ``ChatModel`` that plays a script;
* ``ScriptedService``: a ``QAService`` that plays scripts and records what it was asked;
* ``Clock``: time that moves only when a test (or its ``sleep``) says so;
* ``done_event``: a ``DoneEvent`` with only what a test cares about;
* ``hit``: a ``Hit`` with only what a test cares about; ``parse_sse``: an SSE body as frames;
* ``serve``: the app under a real uvicorn on 127.0.0.1, configured as ``rag serve`` does.
* ``upload``: ``POST /v1/documents`` and wait for the document to leave ``pending``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import msgspec
import numpy as np
import uvicorn
from litestar import Litestar

from rag.config import IngestSettings, ServerSettings
from rag.domain import AnswerEvent, DoneEvent, Hit, Latency, LoadedDocument, Turn, Usage
from rag.ingest.loaders import load
from rag.ports import EmbedKind, QAService, Tokenizer, Vectors
from rag.service import checked_text
from rag.web.server import uvicorn_config

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")


class FakeTokenizer:
    """Words and punctuation marks as tokens, with BERT's two special tokens."""

    def __init__(self, max_tokens: int = 256) -> None:
        self.max_tokens = max_tokens
        self.special_tokens = 2

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _TOKEN.finditer(text)]

    def count(self, text: str) -> int:
        return len(_TOKEN.findall(text))


class FakeEmbedder:
    """Hashed bag of words: texts sharing words are close, and the same text always maps
    to the same unit vector. Counts its calls so tests can check what was embedded."""

    def __init__(self, dimension: int = 256, model_id: str = "fake-bow-256") -> None:
        self.model_id = model_id
        self.dimension = dimension
        self.tokenizer: Tokenizer = FakeTokenizer()
        self.calls: list[tuple[int, EmbedKind]] = []

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        self.calls.append((len(texts), kind))
        return self.embed_sync(texts)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self.dimension
                out[row, slot] += 1.0 if digest[4] & 1 else -1.0
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0  # no words: still a unit vector, as a real model gives
        return out


class GatedEmbedder(FakeEmbedder):
    """Holds every embedding call until the test opens the gate (any thread, any loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        for _ in range(1000):
            if self.gate.is_set():
                break
            await asyncio.sleep(0.01)
        return await super().embed(texts, kind)


class SlowPdfs:
    """A loader whose PDFs take as long as the test wants: until ``release``."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.reading = threading.Event()

    async def started(self) -> None:
        """Wait, without blocking the event loop the jobs run on, until a PDF is being read."""
        for _ in range(1000):
            if self.reading.is_set():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("no PDF was read")

    def __call__(self, path: Path, settings: IngestSettings) -> LoadedDocument:
        if path.suffix == ".pdf":
            self.reading.set()
            # Bounded: a test that fails never leaves a thread behind for long.
            self.released.wait(timeout=30)
        return load(path, settings)


class Pause:
    """A script step: the model thinks for a while before its next piece."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class ScriptedChat:
    """A ``ChatModel`` that plays its script: strings are yielded, exceptions raised.

    It records each call (question, source ids), whether it played to the end
    (``finished``) and whether its stream was closed (``closed``).
    """

    prompt_version = "scripted-1"

    def __init__(self, *script: str | Exception | Pause, name: str = "scripted") -> None:
        self.name = name
        self.script = script
        self.calls: list[tuple[str, list[str]]] = []
        self.finished = False
        self.closed = False

    async def stream(self, question: str, sources: Sequence[Hit]) -> AsyncGenerator[str, None]:
        self.calls.append((question, [s.chunk_id for s in sources]))
        try:
            for step in self.script:
                if isinstance(step, Exception):
                    raise step
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    continue
                yield step
            self.finished = True
        finally:
            self.closed = True


Step = AnswerEvent | Exception | Pause
"""A service script step: an event is sent, an exception raised, a pause waited out."""


class Call(NamedTuple):
    """What a ``ScriptedService`` was asked: ``ask`` or ``search``, the text, ``top_k``
    and, for ``ask``, the earlier turns as (question, answer) pairs."""

    kind: str
    text: str
    k: int | None
    history: tuple[tuple[str, str], ...] | None = None


class ScriptedService(QAService):
    """A ``QAService`` that plays one script per question, in order (the last repeats).

    It validates questions with the service's own check (``rag.service.checked_text``),
    so the web layer's 400s are the real ones; ``completed`` and ``closed`` tell what
    happened to the last answer stream; ``search`` returns ``hits``, or raises
    ``search_error``. It keeps no database: documents and usage are the Protocol's 404s.
    """

    def __init__(
        self,
        *scripts: Sequence[Step],
        hits: Sequence[Hit] = (),
        search_error: BaseException | None = None,
        max_question_chars: int = ServerSettings().max_question_chars,
    ) -> None:
        self.scripts = scripts or ((),)
        self.hits = list(hits)
        self.search_error = search_error
        self.max_question_chars = max_question_chars
        self.calls: list[Call] = []
        self.trace_ids: list[str | None] = []
        self.completed = False
        self.closed = False

    def ask(
        self,
        question: str,
        top_k: int | None = None,
        history: Sequence[Turn] | None = None,
        *,
        trace_id: str | None = None,
    ) -> AsyncGenerator[AnswerEvent, None]:
        text = checked_text(question, "question", self.max_question_chars)
        turns = None if history is None else tuple((t.question, t.answer) for t in history)
        self.calls.append(Call("ask", text, top_k, turns))
        self.trace_ids.append(trace_id)
        asked = sum(1 for c in self.calls if c.kind == "ask")
        return self.play(self.scripts[min(asked, len(self.scripts)) - 1])

    async def play(self, script: Sequence[Step]) -> AsyncGenerator[AnswerEvent, None]:
        self.completed = self.closed = False
        try:
            for step in script:
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, Exception):
                    raise step
                else:
                    yield step
            self.completed = True
        finally:
            self.closed = True

    async def search(self, query: str, k: int | None = None) -> list[Hit]:
        text = checked_text(query, "query", self.max_question_chars)
        self.calls.append(Call("search", text, k))
        if self.search_error is not None:
            raise self.search_error
        return list(self.hits)

    async def health(self) -> dict[str, object]:
        return {"status": "ok", "chunks": len(self.hits)}


class Clock:
    """A monotonic clock that moves only when a test sets ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """An ``asyncio.sleep`` stand-in that moves this clock instead of waiting."""
        self.slept.append(seconds)
        self.now += seconds


def done_event(answer: str, **fields: Any) -> DoneEvent:
    """A grounded, uncached extractive ``done`` carrying ``answer``; ``fields`` override."""
    done = DoneEvent(
        answer=answer,
        citations=(),
        grounded=True,
        provider="extractive",
        cached=False,
        usage=Usage(),
        latency_ms=Latency(),
        trace_id="t",
    )
    return msgspec.structs.replace(done, **fields)


def hit(n: int, text: str, **fields: Any) -> Hit:
    """Hit number ``n`` (chunk ``c<n>`` of ``doc<n>.md``), scores falling with ``n``."""
    values: dict[str, Any] = {
        "chunk_id": f"c{n}",
        "document_id": f"d{n}",
        "source": f"doc{n}.md",
        "title": f"Doc {n}",
        "text": text,
        "score": 1.0 / n if n else 1.0,
        "relevance": 0.9 - n / 10,
    }
    return Hit(**{**values, **fields})


def parse_sse(body: str) -> list[tuple[str, str]]:
    """An SSE body as (event, data) frames; a comment frame is ("comment", text)."""
    frames = []
    assert body.endswith("\n\n"), body
    for frame in body[:-2].split("\n\n"):
        if frame.startswith(": "):
            frames.append(("comment", frame[2:]))
            continue
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: "), frame
        frames.append((event_line[7:], data_line[6:]))
    return frames


SERVER_WAIT_S = 5  # whole seconds: uvicorn types timeout_graceful_shutdown as an int


class LiveServer(NamedTuple):
    url: str
    port: int
    server: uvicorn.Server


def _server(
    app: Litestar, server: ServerSettings | None, options: dict[str, Any]
) -> uvicorn.Server:
    """uvicorn as ``rag serve`` configures it (``rag.web.server.uvicorn_config``), on an
    ephemeral loopback port."""
    limits = msgspec.structs.replace(server or ServerSettings(), host="127.0.0.1", port=0)
    config = uvicorn_config(
        app,
        limits,
        **{
            "ws": "none",
            "lifespan": "on",
            "log_config": None,
            "log_level": "warning",
            "timeout_graceful_shutdown": SERVER_WAIT_S,
            **options,
        },
    )
    return uvicorn.Server(config)


def _live(uv: uvicorn.Server) -> LiveServer:
    port = uv.servers[0].sockets[0].getsockname()[1]
    return LiveServer(f"http://127.0.0.1:{port}", port, uv)


@contextmanager
def serve(
    app: Litestar, server: ServerSettings | None = None, **options: Any
) -> Iterator[LiveServer]:
    """Run ``app`` under uvicorn on an ephemeral loopback port with ``server``'s limits.

    In-process test clients buffer whole responses and have no sockets; this is the
    server ``rag serve`` runs (``rag.web.server.uvicorn_config``), in a thread.
    """
    uv = _server(app, server, options)
    thread = threading.Thread(target=uv.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + SERVER_WAIT_S
        while not uv.started:
            assert thread.is_alive(), "uvicorn exited during startup"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield _live(uv)
    finally:
        uv.should_exit = True
        thread.join(SERVER_WAIT_S * 2)
        assert not thread.is_alive(), "uvicorn did not shut down"


@asynccontextmanager
async def serve_here(
    app: Litestar, server: ServerSettings | None = None, **options: Any
) -> AsyncIterator[LiveServer]:
    """``serve``, but in the running event loop instead of a thread of its own.

    An app whose service holds asyncpg connections (PostgreSQL) must serve requests in
    the loop that opened them, which neither ``serve``'s thread nor Litestar's test
    client (a loop in another thread) does; SQLite's driver does not mind.
    """
    uv = _server(app, server, options)
    task = asyncio.create_task(uv.serve(), name="uvicorn-test")
    try:
        deadline = time.monotonic() + SERVER_WAIT_S
        while not uv.started:
            if task.done():
                task.result()  # its exception, if it raised one
                raise AssertionError("uvicorn exited during startup")
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.01)
        yield _live(uv)
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, SERVER_WAIT_S * 2)


@asynccontextmanager
async def app_client(
    app: Litestar, server: ServerSettings | None = None, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on ``app`` under a real uvicorn on 127.0.0.1 in this event loop
    (``serve_here``): the web tests run it on SQLite and on PostgreSQL alike."""
    async with (
        serve_here(app, server, **options) as live,
        httpx.AsyncClient(base_url=live.url, timeout=30.0) as client,
    ):
        yield client


async def upload(
    client: httpx.AsyncClient, name: str, content: bytes, *, timeout_s: float = 30.0, **kwargs: Any
) -> dict[str, Any]:
    """Upload a file, wait for its ingestion job to end, and return its document.

    ``client``: Litestar's ``AsyncTestClient`` (an ``httpx.AsyncClient``) or a real one.
    """
    response = await client.post("/v1/documents", files={"file": (name, content)}, **kwargs)
    assert response.status_code in (200, 202), response.text
    doc_id, job = response.json()["document"]["id"], response.json()["job"]
    deadline = asyncio.get_running_loop().time() + timeout_s
    pause = 0.01
    while job is not None and job["state"] in ("queued", "running"):
        assert asyncio.get_running_loop().time() < deadline, f"the job of {name} never ended"
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.2)  # a slow job must not spend the rate limit's allowance
        job = (await client.get(f"/v1/jobs/{job['id']}", **kwargs)).json()
    fetched = await client.get(f"/v1/documents/{doc_id}", **kwargs)
    assert fetched.status_code == 200, fetched.text
    doc: dict[str, Any] = fetched.json()
    return doc


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A minimal PDF by hand: one page per entry, one Helvetica line per string."""
    font = b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>"
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    for lines in pages:
        ops = b"".join(b"(%s) Tj 0 -14 Td " % line.encode("latin-1") for line in lines)
        stream = b"BT /F1 12 Tf 72 720 Td " + ops + b"ET"
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources %s >>" % (len(objects), font)
        )
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    info = b""
    if title:
        objects.append(b"<< /Title (%s) >>" % title.encode("latin-1"))
        info = b" /Info %d 0 R" % len(objects)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\n" % (len(objects) + 1, info)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)
