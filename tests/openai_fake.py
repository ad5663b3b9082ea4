"""An in-process OpenAI-compatible chat endpoint (``httpx.MockTransport``).

Each request gets the next scripted reply: a streamed answer (pieces, optional usage,
``[DONE]`` or not), a JSON body, an HTTP error, or a broken connection. The requests
are kept so tests can check what the client sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Stream:
    pieces: list[str]
    usage: dict[str, int] | None = None
    done: bool = True
    break_after: int | None = None
    """Raise a transport error after this many pieces (a connection cut mid-answer)."""
    extra_lines: list[str] = field(default_factory=list)
    """Sent first: comments, ``event:`` lines, mid-stream error chunks."""


@dataclass
class Status:
    code: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Whole:
    """A server that ignores ``stream`` and answers in one JSON body."""

    text: str
    usage: dict[str, int] | None = None


@dataclass
class Fail:
    error: Exception


Reply = Stream | Status | Whole | Fail


class _Body(httpx.AsyncByteStream):
    def __init__(self, reply: Stream) -> None:
        self.reply = reply

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for line in self.reply.extra_lines:
            yield (line + "\n\n").encode()
        for n, piece in enumerate(self.reply.pieces):
            if self.reply.break_after is not None and n == self.reply.break_after:
                raise httpx.RemoteProtocolError("peer closed connection")
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        if self.reply.usage is not None:
            yield f"data: {json.dumps({'choices': [], 'usage': self.reply.usage})}\n\n".encode()
        if self.reply.done:
            yield b"data: [DONE]\n\n"


class FakeOpenAI:
    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if self.replies else Stream(["(no more replies)"])
        if isinstance(reply, Fail):
            raise reply.error
        if isinstance(reply, Status):
            content = json.dumps(reply.body).encode() if reply.body is not None else b""
            return httpx.Response(reply.code, content=content, headers=reply.headers)
        if isinstance(reply, Whole):
            message = {"role": "assistant", "content": reply.text}
            body: dict[str, object] = {"choices": [{"message": message}]}
            if reply.usage:
                body["usage"] = reply.usage
            return httpx.Response(200, json=body)
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Body(reply)
        )
