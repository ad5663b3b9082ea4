"""``rag doctor``'s checks: one tiny call per thing an operator needs to work on Cloudflare.

Each check is independent and turns its own failure into a failed ``Check``, so one
broken part (a missing index, a model id that does not exist) never hides the others.
The calls go through the real ``CloudflareClient`` on a transport that records the
rate-limit headers of every answer; nothing is written to Vectorize or the ledger, so
a doctor run leaves the account as it found it (apart from a few neurons).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec

from rag.backends.cloudflare.chat import REJECT_IF_BUSY
from rag.backends.cloudflare.client import CloudflareClient
from rag.backends.cloudflare.rerank_scale import detect
from rag.backends.cloudflare.workers_ai import KNOWN_DIMENSIONS
from rag.config import Settings
from rag.errors import AuthError, RagError

QUERY = "How do I reset my password?"
RELEVANT = "To reset your password, open Settings, choose Account and press Reset password."
IRRELEVANT = "The canteen serves soup on Thursdays."
# The generic API's limit headers (docs/cloudflare.md#rate-limits), and what AI
# Gateway and Workers AI may add under other names.
RATE_HEADERS = ("ratelimit", "ratelimit-policy", "retry-after")


class Check(msgspec.Struct, kw_only=True):
    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = {}


class HeaderLog(httpx.AsyncBaseTransport):
    """Passes requests on, keeping the last value of each rate-limit header seen."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.seen: dict[str, str] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        for name, value in response.headers.items():
            if name in RATE_HEADERS or "ratelimit" in name:
                self.seen[name] = value
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _checked(name: str, work: Callable[[], Awaitable[Check]]) -> Check:
    try:
        return await work()
    except RagError as exc:
        return Check(name=name, ok=False, detail=exc.message)
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        # An answer of an unexpected shape is a finding too, not a crash of the report.
        return Check(name=name, ok=False, detail=f"{type(exc).__name__}: {exc}")


async def token(client: CloudflareClient) -> Check:
    """The token is valid and active: a user token, or else an account-owned one."""
    try:
        result = await client.call("GET", f"{client.api_base}/user/tokens/verify", retry=False)
        kind = "user"
    except AuthError:
        # Account-owned tokens are verified under the account; a user token's endpoint
        # refuses them.
        result = await client.call("GET", "/tokens/verify", retry=False)
        kind = "account"
    status = str(result.get("status", "?"))
    return Check(
        name="token",
        ok=status == "active",
        detail=f"{kind} token, {status}",
        data={"kind": kind, "status": status, "expires_on": result.get("expires_on")},
    )


async def index(client: CloudflareClient, settings: Settings) -> Check:
    """The configured index exists and fits the embedder (dimension, cosine)."""
    cf = settings.cloudflare
    raw = await client.call("GET", f"/vectorize/v2/indexes/{cf.index_name}", retry=False)
    config = raw.get("config", {})
    dims, metric = int(config["dimensions"]), str(config["metric"])
    wanted = KNOWN_DIMENSIONS.get(cf.embed_model)
    problems = []
    if wanted is not None and dims != wanted:
        problems.append(f"the embedder needs {wanted}-d")
    if metric != "cosine":
        problems.append("the service expects cosine")
    detail = f"{cf.index_name!r}: {dims}-d {metric}"
    return Check(
        name="vectorize index",
        ok=not problems,
        detail="; ".join([detail, *problems]),
        data={"name": cf.index_name, "dimensions": dims, "metric": metric, "embedder": wanted},
    )


async def embed(client: CloudflareClient, settings: Settings) -> Check:
    cf = settings.cloudflare
    body = {"text": ["rag doctor"], "pooling": cf.embed_pooling}
    result = await client.call("POST", f"/ai/run/{cf.embed_model}", json=body, retry=False)
    shape = list(result.get("shape") or [])
    pooling = result.get("pooling")
    wanted = KNOWN_DIMENSIONS.get(cf.embed_model)
    ok = len(shape) == 2 and shape[0] == 1 and (wanted is None or shape[1] == wanted)
    ok = ok and pooling in (None, cf.embed_pooling)
    return Check(
        name="embeddings",
        ok=ok,
        detail=f"{cf.embed_model}: shape {shape}, pooling {pooling}",
        data={"model": cf.embed_model, "shape": shape, "pooling": pooling},
    )


async def rerank(client: CloudflareClient, settings: Settings) -> Check:
    """Raw scores of a relevant and an irrelevant pair, and the scale they show."""
    cf = settings.cloudflare
    body = {"query": QUERY, "contexts": [{"text": RELEVANT}, {"text": IRRELEVANT}]}
    result = await client.call("POST", f"/ai/run/{cf.rerank_model}", json=body, retry=False)
    scores = {int(item["id"]): float(item["score"]) for item in result["response"]}
    relevant, irrelevant = scores[0], scores[1]
    scale = detect([relevant, irrelevant])
    problems = []
    if relevant <= irrelevant:
        problems.append("the relevant pair did not score higher")
    if cf.rerank_scores not in ("auto", scale):
        problems.append(f"rerank_scores is {cf.rerank_scores!r}")
    detail = f"relevant {relevant:.4g}, irrelevant {irrelevant:.4g}: {scale}"
    return Check(
        name="reranker",
        ok=not problems,
        detail="; ".join([detail, *problems]),
        data={
            "model": cf.rerank_model,
            "relevant": relevant,
            "irrelevant": irrelevant,
            "scale": scale,
            "setting": cf.rerank_scores,
        },
    )


async def chat(client: CloudflareClient, settings: Settings) -> Check:
    """A stream of a few tokens: text, ``[DONE]``, and whether ``usage`` came with it."""
    cf = settings.cloudflare
    body = {
        "messages": [{"role": "user", "content": "Reply with the word OK."}],
        "max_tokens": 8,
        "stream": True,
        # As the answers ask: a busy model should say so, not queue the check.
        "options": REJECT_IF_BUSY,
    }
    text, usage, done = "", None, False
    async for line in client.stream_lines("POST", f"/ai/run/{cf.chat_model}", json=body):
        payload = line.removeprefix("data:").strip()
        if not line.startswith("data:") or not payload:
            continue
        if payload == "[DONE]":
            done = True
            continue
        event = json.loads(payload)
        usage = event.get("usage") or usage
        choices = event.get("choices") or [{}]
        piece = event.get("response") or (choices[0].get("delta") or {}).get("content")
        text += piece if isinstance(piece, str) else ""
    said = "usage reported" if usage else "no usage"
    return Check(
        name="chat",
        ok=done and bool(text.strip()),
        detail=f"{cf.chat_model}: {text.strip()[:30]!r}, {said}, "
        + ("[DONE]" if done else "no [DONE]"),
        data={"model": cf.chat_model, "text": text, "usage": usage, "done": done},
    )


async def run_checks(client: CloudflareClient, settings: Settings) -> list[Check]:
    """Every check in order; a failed one does not stop the next."""
    return [
        await _checked("token", lambda: token(client)),
        await _checked("vectorize index", lambda: index(client, settings)),
        await _checked("embeddings", lambda: embed(client, settings)),
        await _checked("reranker", lambda: rerank(client, settings)),
        await _checked("chat", lambda: chat(client, settings)),
    ]
