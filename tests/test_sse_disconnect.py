"""A client that hangs up stops the answer: the real app under uvicorn, over a socket.

In-process test clients buffer the whole response, so they can neither stream an
endless answer nor hang up half way; a real server on 127.0.0.1 can.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Sequence

import httpx
from fakes import SERVER_WAIT_S, ScriptedService, Step, serve

from rag.config import ServerSettings, Settings
from rag.domain import AnswerEvent, DeltaEvent, SourcesEvent
from rag.web import create_app

WAIT_S = SERVER_WAIT_S


class EndlessService(ScriptedService):
    """Streams deltas until closed, or sits idle after ``sources`` when ``idle``."""

    def __init__(self, idle: bool = False) -> None:
        super().__init__()
        self.idle = idle
        self.produced = 0
        self.ended = threading.Event()

    async def play(self, script: Sequence[Step]) -> AsyncGenerator[AnswerEvent, None]:
        try:
            yield SourcesEvent(sources=())
            while True:
                await asyncio.sleep(3600 if self.idle else 0.005)
                self.produced += 1
                yield DeltaEvent(text=f"token{self.produced} ")
        finally:
            self.ended.set()


class FrameReader:
    """SSE frames read incrementally off the socket, as a browser would."""

    def __init__(self, response: httpx.Response) -> None:
        # Kept for the whole exchange: an abandoned httpx body iterator closes the
        # connection when it is collected, which would be a disconnect of its own.
        self._chunks = response.iter_text()
        self._buffer = ""

    def read(self, count: int) -> list[str]:
        frames: list[str] = []
        while len(frames) < count:
            if "\n\n" in self._buffer:
                frame, self._buffer = self._buffer.split("\n\n", 1)
                frames.append(frame)
                continue
            chunk = next(self._chunks, None)
            assert chunk is not None, f"stream ended after {frames}"
            self._buffer += chunk
        return frames


def wait_until_quiet(service: EndlessService) -> None:
    assert service.ended.wait(WAIT_S), "the service's generator was not closed"
    produced = service.produced
    time.sleep(0.2)
    assert service.produced == produced, "the service kept producing after the disconnect"


def test_disconnect_mid_answer_closes_the_service_generator() -> None:
    service = EndlessService()
    app = create_app(Settings(), service)
    with serve(app) as live, httpx.Client(base_url=live.url) as client:
        with client.stream("POST", "/v1/ask", json={"question": "go on"}) as response:
            assert response.status_code == 200
            reader = FrameReader(response)
            frames = reader.read(3)
            assert frames[0] == "event: sources\ndata: []"
            assert frames[1].startswith("event: delta\n")
            # Still streaming: the answer is endless, so nothing here was buffered.
            assert reader.read(1)[0].startswith("event: delta\n")
            assert not service.ended.is_set()
        # Leaving the block closes the unfinished response, and with it the connection.
        wait_until_quiet(service)


def test_disconnect_while_idle_cancels_the_pending_step() -> None:
    service = EndlessService(idle=True)
    conf = Settings(server=ServerSettings(heartbeat_s=0.05))
    with serve(create_app(conf, service)) as live, httpx.Client(base_url=live.url) as client:
        with client.stream("GET", "/v1/ask", params={"q": "go on"}) as response:
            assert response.status_code == 200
            reader = FrameReader(response)
            assert reader.read(3) == ["event: sources\ndata: []", ": ping", ": ping"]
            assert not service.ended.is_set()
        wait_until_quiet(service)
    assert service.produced == 0
