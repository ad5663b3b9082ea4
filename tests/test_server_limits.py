"""Slow and excess clients are bounded: a real uvicorn on 127.0.0.1, real sockets.

The server is configured as ``rag serve`` configures it (``rag.web.server``), with
short timeouts so the tests are quick.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncGenerator, Sequence

import httpx
import msgspec
from fakes import Pause, ScriptedService, Step, serve

from rag.config import ServerSettings, Settings
from rag.domain import AnswerEvent, SourcesEvent
from rag.web import create_app

HEADER_TIMEOUT_S = 0.5


def limits(**fields: object) -> ServerSettings:
    return msgspec.structs.replace(ServerSettings(header_timeout_s=HEADER_TIMEOUT_S), **fields)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_connection_that_sends_half_a_header_line_is_closed_in_time() -> None:
    with (
        serve(create_app(Settings(), ScriptedService()), limits()) as live,
        connect(live.port) as sock,
    ):
        began = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: loc")
        assert read_until_closed(sock) == b""
        waited = time.monotonic() - began
    assert HEADER_TIMEOUT_S * 0.8 <= waited < HEADER_TIMEOUT_S + 2, waited


def test_a_silent_connection_is_closed_in_time() -> None:
    with (
        serve(create_app(Settings(), ScriptedService()), limits()) as live,
        connect(live.port) as sock,
    ):
        began = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - began < HEADER_TIMEOUT_S + 2


def test_a_kept_alive_connection_trickling_its_next_request_is_closed() -> None:
    # uvicorn's keep-alive timer stops at the first byte; the header deadline does not.
    with (
        serve(create_app(Settings(), ScriptedService()), limits(keepalive_timeout_s=60)) as live,
        connect(live.port) as sock,
    ):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200"), first
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        began = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - began < HEADER_TIMEOUT_S + 2


def test_headers_in_time_are_served_however_long_the_answer_takes() -> None:
    # The deadline covers the headers only: an answer streaming past it is not cut.
    service = ScriptedService([SourcesEvent(sources=()), Pause(HEADER_TIMEOUT_S * 3)])
    conf = Settings(server=ServerSettings(heartbeat_s=0.2))
    with serve(create_app(conf, service), limits()) as live:
        response = httpx.post(f"{live.url}/v1/ask", json={"question": "slow one"}, timeout=10)
    assert response.status_code == 200
    assert response.text.startswith("event: sources\n")
    assert service.completed


class HeldService(ScriptedService):
    """Every answer sends ``sources`` and then waits until the client leaves."""

    async def play(self, script: Sequence[Step]) -> AsyncGenerator[AnswerEvent, None]:
        yield SourcesEvent(sources=())
        await asyncio.sleep(3600)


def test_answers_beyond_the_cap_get_503_with_retry_after() -> None:
    conf = Settings(server=ServerSettings(max_concurrent_answers=2, heartbeat_s=0.2))
    with (
        serve(create_app(conf, HeldService()), conf.server) as live,
        httpx.Client(base_url=live.url, timeout=10) as one,
        httpx.Client(base_url=live.url, timeout=10) as two,
        httpx.Client(base_url=live.url, timeout=10) as three,
    ):
        with one.stream("GET", "/v1/ask", params={"q": "first"}) as first:
            assert first.status_code == 200
            with two.stream("POST", "/v1/ask", json={"question": "second"}) as second:
                assert second.status_code == 200
                for refused in (
                    three.get("/v1/ask", params={"q": "third"}),
                    three.post("/v1/ask", json={"question": "third"}),
                ):
                    assert refused.status_code == 503
                    assert refused.headers["retry-after"] == "2"
                    error = refused.json()["error"]
                    assert error["code"] == "busy"
                    assert "max_concurrent_answers" in error["message"]
                # Other routes are not answers: they are served meanwhile.
                assert three.get("/healthz").status_code == 200
        # Both clients left: their slots are free again.
        deadline = time.monotonic() + 5
        while (status := _ask_status(three)) == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == 200


def _ask_status(client: httpx.Client) -> int:
    with client.stream("GET", "/v1/ask", params={"q": "again"}) as response:
        return response.status_code


def test_a_refused_question_gives_its_slot_back() -> None:
    conf = Settings(server=ServerSettings(max_concurrent_answers=1))
    with serve(create_app(conf, ScriptedService()), conf.server) as live:
        for _ in range(3):
            response = httpx.post(f"{live.url}/v1/ask", json={"question": " "}, timeout=10)
            assert response.status_code == 400, response.text
        assert httpx.post(f"{live.url}/v1/ask", json={"question": "ok"}).status_code == 200


def test_connections_beyond_the_limit_get_503() -> None:
    with serve(create_app(Settings(), ScriptedService()), limits(max_connections=2)) as live:
        with connect(live.port), connect(live.port):
            time.sleep(0.1)  # let the server register both connections
            response = httpx.get(f"{live.url}/healthz", timeout=10)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "busy"
        assert "[server] max_connections" in response.json()["error"]["message"]
        # Once the others are gone, the next client is served.
        deadline = time.monotonic() + 5
        while httpx.get(f"{live.url}/healthz", timeout=10).status_code == 503:
            assert time.monotonic() < deadline, "the server never served again"
            time.sleep(0.05)


def test_shutdown_mid_upload_answers_503_in_the_error_shape() -> None:
    # A client still sending its body when the server stops: the request is cancelled
    # after the graceful wait, and the answer is JSON, not uvicorn's plain-text 500.
    app = create_app(Settings(), ScriptedService())
    with (
        serve(app, limits(), timeout_graceful_shutdown=1) as live,
        connect(live.port) as sock,
    ):
        sock.sendall(
            b"POST /v1/documents HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=B\r\n\r\n--B\r\n"
        )
        time.sleep(0.2)
        live.server.should_exit = True
        raw = read_until_closed(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), raw
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "shutting_down"
