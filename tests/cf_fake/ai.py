"""The Workers AI half of the fake: ``POST /ai/run/{model}`` after docs/cloudflare.md#workers-ai.

Embeddings are deterministic pseudo-random vectors per (text, pooling), deliberately
not unit length, so the client's normalisation is exercised. The reranker scores word
overlap as a logit, or as its sigmoid (``rerank_scale``). Chat answers from the first
source it was given, streamed as SSE in the native or the OpenAI style, with padding, a
final usage chunk and ``[DONE]``, unless a ``ChatScript`` says otherwise (cut mid-way,
no ``[DONE]``, no usage).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
import numpy as np

from cf_fake import schemas

if TYPE_CHECKING:
    from cf_fake import FakeCloudflare

EMBED_MODELS = {"@cf/baai/bge-base-en-v1.5": 768}
RERANK_MODELS = {"@cf/baai/bge-reranker-base"}
CHAT_MODELS = {
    "@cf/meta/llama-3.1-8b-instruct-fast",
    "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
}
MAX_EMBED_TOKENS = 512
PADDING = "abcdefghijklmnopqrstuvwxyz0123456789"
WORD = re.compile(r"\w+")


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class ChatScript:
    """How the next chat stream behaves; ``text=None`` answers from the sources."""

    text: str | None = None
    style: Literal["native", "openai"] = "native"
    usage: bool = True
    neurons: float | None = None
    done: bool = True
    cut_after: int | None = None
    """Break the connection after this many text events (a stream cut mid-way)."""
    piece_words: int = 2


def validate(fake: FakeCloudflare, model: str, request: httpx.Request) -> Any:
    """The request body, checked against the model's schema (or the generic one)."""
    try:
        body = json.loads(request.content or b"null")
    except ValueError:
        fake.schema_errors.append(f"{model}: request body is not JSON")
        raise ApiError(400, 5004, "Invalid data") from None
    names = schemas.model_schemas(model)
    found = schemas.problems(names["input"] if names else schemas.any_model_input(), body)
    if model in CHAT_MODELS:
        # A chat call must not queue behind a busy model: the chain has other providers.
        found += schemas.problems("workers-ai_options", body)
    if found:
        fake.schema_errors += found
        raise ApiError(400, 5004, f"Invalid data: {found[0]}")
    return body


def respond(fake: FakeCloudflare, model: str, body: Any) -> httpx.Response:
    names = schemas.model_schemas(model)
    if model in EMBED_MODELS:
        return _ok(fake, _embed(fake, model, body), names)
    if model in RERANK_MODELS:
        return _ok(fake, _rerank(body, fake.rerank_scale), names)
    if model in CHAT_MODELS:
        return _chat(fake, body, names)
    raise ApiError(400, 5007, f"No such model {model} or task")


def _ok(fake: FakeCloudflare, result: Any, names: dict[str, str] | None) -> httpx.Response:
    body = {"result": result, "success": True, "errors": [], "messages": []}
    # Checking one vector is as good as checking all 100 x 768 floats, and 1,000x faster.
    sample = {**result, "data": result["data"][:1]} if "data" in result else result
    checked = {**body, "result": sample}
    fake.fake_errors += schemas.envelope_problems(checked, names.get("output") if names else None)
    return httpx.Response(200, json=body)


def vector_for(text: str, pooling: str, dimension: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(f"{pooling}\0{text}".encode()).digest()[:8], "big")
    values = np.random.default_rng(seed).standard_normal(dimension) * 3.0
    # Five decimals keep the JSON small: 100 x 768 floats per call add up in every test.
    rounded: list[float] = np.round(values, 5).tolist()
    return rounded


def _embed(fake: FakeCloudflare, model: str, body: Any) -> dict[str, Any]:
    texts = body["text"] if isinstance(body["text"], list) else [body["text"]]
    pooling = body.get("pooling", "mean")
    for text in texts:
        tokens = fake.tokenizer.count(text) + fake.tokenizer.special_tokens
        fake.embedded_tokens.append(tokens)
        if tokens > MAX_EMBED_TOKENS:
            fake.schema_errors.append(f"{model}: a text of {tokens} tokens (limit 512)")
            raise ApiError(400, 5004, "Invalid data: input exceeds 512 tokens")
    dimension = EMBED_MODELS[model]
    data = [vector_for(text, pooling, dimension) for text in texts]
    return {"shape": [len(texts), dimension], "data": data, "pooling": pooling}


def _words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(text)}


def _rerank(body: dict[str, Any], scale: str) -> dict[str, Any]:
    query = _words(body["query"])
    scored = []
    for index, context in enumerate(body["contexts"]):
        overlap = len(query & _words(context.get("text", ""))) / max(1, len(query))
        logit = 6.0 * overlap - 3.0
        score = logit if scale == "logits" else 1.0 / (1.0 + math.exp(-logit))
        scored.append({"id": index, "score": round(score, 6)})
    scored.sort(key=lambda item: -item["score"])
    return {"response": scored[: body.get("top_k", len(scored))]}


def _answer(body: dict[str, Any]) -> str:
    user = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
    match = re.search(r"^\[1\][^\n]*\n([^\n]+)", user, flags=re.M)
    if match is None:
        return "The documents do not cover this."
    words = match.group(1).split()[:12]
    return "According to the sources, " + " ".join(words) + " [1]."


def _chat(fake: FakeCloudflare, body: Any, names: dict[str, str] | None) -> httpx.Response:
    script = fake.chat_scripts.popleft() if fake.chat_scripts else ChatScript()
    text = script.text if script.text is not None else _answer(body)
    words = text.split(" ")
    words = words[: body.get("max_tokens", 256)]
    step = max(1, script.piece_words)
    pieces = [" ".join(words[i : i + step]) + " " for i in range(0, len(words), step)]
    if pieces:
        pieces[-1] = pieces[-1].rstrip(" ")
    prompt_tokens = sum(len(m.get("content", "").split()) + 5 for m in body["messages"])
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(words),
        "total_tokens": prompt_tokens + len(words),
    }
    if script.neurons is not None:
        usage["neurons"] = script.neurons
    if not body.get("stream"):
        result = {"response": "".join(pieces), "usage": usage}
        return _ok(fake, result, names)
    headers = {"content-type": "text/event-stream"}
    return httpx.Response(200, headers=headers, content=_events(fake, script, pieces, usage))


async def _events(
    fake: FakeCloudflare, script: ChatScript, pieces: list[str], usage: dict[str, Any]
) -> AsyncIterator[bytes]:
    for n, piece in enumerate(pieces):
        if script.cut_after is not None and n >= script.cut_after:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete body")
        if script.style == "native":
            chunk: dict[str, Any] = {"response": piece, "p": PADDING[: 3 + n % 20]}
            fake.fake_errors += schemas.problems("workers-ai_text-generation-output", chunk)
        else:
            chunk = {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece}}],
            }
        yield f"data: {json.dumps(chunk)}\n\n".encode()
        if fake.chunk_delay_s:
            await asyncio.sleep(fake.chunk_delay_s)
    if script.usage:
        if script.style == "native":
            final: dict[str, Any] = {"response": "", "usage": usage}
        else:
            final = {
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": usage,
            }
        yield f"data: {json.dumps(final)}\n\n".encode()
    if script.done:
        yield b"data: [DONE]\n\n"
