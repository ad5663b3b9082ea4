"""An in-process fake of Cloudflare's REST API (Workers AI here, Vectorize in ``vectorize``).

``FakeCloudflare().transport`` is an ``httpx.MockTransport`` the real
``CloudflareClient`` is built on, so tests run the production client code unchanged.
It checks the bearer token and the account, answers in Cloudflare's envelope, records
every request, validates each against Cloudflare's schemas (``schema_errors``; tests
assert it stays empty) and can be scripted to fail: ``fail_next`` queues an error
envelope (429 with ``Retry-After``, 3036, 5xx, ...) before the body, ``busy`` is a model
at capacity (3040, with a long ``Retry-After`` as seen in the wild), ``stall_next``
receives a request whole and then keeps its reply past the client's read timeout, and
``script_chat`` makes a stream break mid-way or end without ``[DONE]``. Clients made by
``client()`` sleep and tell the time on ``now``, a clock only their sleeps move.

It also converts files to Markdown (``/ai/tomarkdown``, ``tomarkdown.py``), checked
against what Cloudflare's documentation says of the request, as no schema is published.

It also plays AI Gateway (``GATEWAY_BASE``): Workers AI on the gateway's ``workers-ai``
route, validated like the direct route; Vectorize there is refused (the gateway does
not serve it) and counted in ``schema_errors``. With ``gateway_token`` set the gateway is
an authenticated one and answers 401 code 2009 without ``cf-aig-authorization``.

With ``rate_limit`` set it plays the account-wide API limit on the REST host: past that
many requests in ``rate_window_s`` (on ``clock``) every call is refused for the window
with 429, code 971 and ``Retry-After``, as reported for the real API (docs/cloudflare.md
#rate-limits); ``rate_headers`` adds ``Ratelimit``/``Ratelimit-Policy`` to every answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import httpx
import msgspec

from cf_fake import ai
from cf_fake.ai import ApiError, ChatScript
from cf_fake.tomarkdown import Converter
from cf_fake.vectorize import VectorizeState
from rag.backends.cloudflare.client import CloudflareClient
from rag.backends.local.tokenizer import WordPieceTokenizer
from rag.config import Settings

__all__ = [
    "API_BASE",
    "GATEWAY_BASE",
    "ChatScript",
    "FakeCloudflare",
    "Recorded",
    "error_envelope",
    "shared_tokenizer",
]

API_BASE = "https://api.cloudflare.test/client/v4"
GATEWAY_BASE = "https://gateway.ai.cloudflare.test/v1"
GATEWAY_HOST = httpx.URL(GATEWAY_BASE).host
# The default models' Workers AI paths, and a chat body the schemas accept, for tests
# that drive the client directly.
EMBED = "/ai/run/@cf/baai/bge-base-en-v1.5"
RERANK = "/ai/run/@cf/baai/bge-reranker-base"
CHAT = "/ai/run/@cf/meta/llama-3.1-8b-instruct-fast"
CHAT_BODY = {
    "messages": [{"role": "user", "content": "hi there"}],
    "stream": True,
    "options": {"rejectIfBusy": True},
}
FOREVER = -1
"""A scripted failure's ``times`` that never runs out."""


@cache
def shared_tokenizer() -> WordPieceTokenizer:
    """bge's tokenizer (BERT uncased WordPiece, 512 tokens), loaded once per test run."""
    return WordPieceTokenizer(max_tokens=512)


@dataclass
class Recorded:
    method: str
    path: str
    """Relative to ``/accounts/{account_id}``, percent-decoded; a gateway call is recorded
    under the REST path it stands for (``/ai/run/{model}``), so scripting works on both."""
    headers: httpx.Headers
    body: bytes
    url: str = ""
    """The whole URL, as sent."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Failure:
    path: str
    status: int
    cf_code: int | None
    retry_after: str | None
    times: int
    message: str


@dataclass
class Stall:
    path: str
    seconds: float
    times: int


@dataclass
class FakeCloudflare:
    account_id: str = "0123456789abcdef0123456789abcdef"
    token: str = "test-token-never-logged"
    gateway_id: str = "rag-gateway"
    gateway_token: str | None = None
    """Set: the gateway is authenticated and wants this in ``cf-aig-authorization``."""
    latency_s: float = 0.0
    """Added to every request, for concurrency tests and benchmarks."""
    path_latency_s: dict[str, float] = field(default_factory=dict)
    """Added to requests whose account path starts with a key ("/ai/run/": an embedding
    call's, "/vectorize/": an upsert's), on top of ``latency_s``; for benchmarks."""
    chunk_delay_s: float = 0.0
    """Between streamed events."""
    rerank_scale: Literal["logits", "probabilities"] = "logits"
    """What the reranker returns: Cloudflare's page shows logits; no live run has said."""
    token_owner: Literal["user", "account"] = "user"
    """Whose token ``token`` is: each verify endpoint accepts only its own kind."""
    rate_limit_headers: dict[str, str] = field(default_factory=dict)
    """Sent on every answer, as the REST API sends ``Ratelimit`` and ``Ratelimit-Policy``."""
    requests: list[Recorded] = field(default_factory=list)
    schema_errors: list[str] = field(default_factory=list)
    """Requests that broke Cloudflare's schemas or documented limits: must stay empty."""
    fake_errors: list[str] = field(default_factory=list)
    """Answers of this fake that broke Cloudflare's schemas (a bug in the fake)."""
    failures: list[Failure] = field(default_factory=list)
    chat_scripts: deque[ChatScript] = field(default_factory=deque)
    embedded_tokens: list[int] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    sleeps: list[float] = field(default_factory=list)
    """What clients made by ``client()`` slept between retries (they never really sleep)."""
    rate_limit: int = 0
    """Requests the REST host accepts per ``rate_window_s``; 0: no limit."""
    rate_window_s: float = 300.0
    rate_headers: bool = False
    clock: Callable[[], float] = time.monotonic
    rate_limited: int = 0
    """Requests refused by the simulated API limit."""
    now: float = 0.0
    """The clock of clients made by ``client()``, in seconds: their sleeps advance it."""
    stalls: list[Stall] = field(default_factory=list)
    converter: Converter = field(default_factory=Converter)
    """The Markdown conversion (``/ai/tomarkdown``): scripted results, files received."""
    vectorize: VectorizeState = field(init=False)
    """The Vectorize side; shares ``schema_errors`` and ``fake_errors`` with this fake."""

    def __post_init__(self) -> None:
        self.tokenizer = shared_tokenizer()
        self.transport = httpx.MockTransport(self._handle)
        self.vectorize = VectorizeState(
            schema_errors=self.schema_errors, fake_errors=self.fake_errors
        )
        self._accepted: deque[float] = deque()
        self._blocked_until = 0.0

    # Scripting.

    def fail_next(
        self,
        path_substring: str,
        status: int,
        cf_code: int | None = None,
        retry_after: float | str | None = None,
        times: int = 1,
        message: str = "scripted failure",
    ) -> None:
        """The next ``times`` requests whose path contains ``path_substring`` fail so."""
        after = None if retry_after is None else str(retry_after)
        self.failures.append(Failure(path_substring, status, cf_code, after, times, message))

    def busy(self, path_substring: str, retry_after: float = 30, times: int = FOREVER) -> None:
        """A model at capacity: 429, code 3040, and Cloudflare's ``Retry-After``."""
        message = "Capacity temporarily exceeded, please try again."
        self.fail_next(path_substring, 429, 3040, retry_after, times, message)

    def stall_next(self, path_substring: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` requests whose path contains ``path_substring`` are received
        and processed, but answered only after ``seconds`` (real ones: keep the client's
        ``timeout_s`` small). Past the client's read timeout, the client gets
        ``httpx.ReadTimeout``, raised here because a ``MockTransport`` enforces no timeouts."""
        self.stalls.append(Stall(path_substring, seconds, times))

    def refuse_workers_ai(self, status: int, cf_code: int | None, message: str) -> None:
        """Every Workers AI call fails so, whatever the model, until ``stop_refusing``:
        a Free plan out of neurons (429, 3036), an outage (a 5xx)."""
        self.fail_next("/ai/run/", status, cf_code, times=FOREVER, message=message)

    def stop_refusing(self) -> None:
        self.failures = [f for f in self.failures if f.times != FOREVER]

    def script_chat(self, script: ChatScript | None = None, **fields: Any) -> None:
        """Queue how the next chat stream behaves (``ChatScript`` fields as keywords)."""
        self.chat_scripts.append(script or ChatScript(**fields))

    def calls(self, path_substring: str = "") -> list[Recorded]:
        return [r for r in self.requests if path_substring in r.path]

    def settings(self, **cloudflare: Any) -> Settings:
        """Settings for the cloudflare backend pointed at this fake."""
        section = {
            "api_base": API_BASE,
            "gateway_base_url": GATEWAY_BASE,
            "account_id": self.account_id,
            **cloudflare,
        }
        return msgspec.convert({"backend": "cloudflare", "cloudflare": section}, Settings)

    def client(
        self,
        aig_token: str | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
        **cloudflare: Any,
    ) -> CloudflareClient:
        """A real client on this fake; its sleeps are recorded in ``sleeps`` and move
        ``now`` unless a test gives its own ``sleep`` (and ``clock``, which that sleep
        moves)."""
        environ = {"CLOUDFLARE_API_TOKEN": self.token}
        if aig_token is not None:
            environ["CLOUDFLARE_AIG_TOKEN"] = aig_token
        return CloudflareClient.from_settings(
            self.settings(**cloudflare),
            environ=environ,
            transport=self.transport,
            sleep=sleep or self._sleep,
            clock=clock or self._clock,
        )

    def violations(self) -> list[str]:
        """Schema and limit violations of the client, and of the fake itself."""
        lists = [self.schema_errors, self.fake_errors]
        for extra in (self.vectorize.schema_errors, self.vectorize.fake_errors):
            # The Vectorize state normally shares these very lists: count them once.
            if all(extra is not seen for seen in lists):
                lists.append(extra)
        return [problem for found in lists for problem in found]

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def _clock(self) -> float:
        return self.now

    async def _stall(self, path: str, request: httpx.Request) -> None:
        for stall in self.stalls:
            if stall.path in path and stall.times > 0:
                stall.times -= 1
                read = request.extensions.get("timeout", {}).get("read")
                if read is not None and stall.seconds > read:
                    await asyncio.sleep(read)
                    raise httpx.ReadTimeout(f"no reply within {read} s", request=request)
                await asyncio.sleep(stall.seconds)
                return

    # The API.

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        response = await self._answer(request)
        response.headers.update(self.rate_limit_headers)
        return response

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == GATEWAY_HOST:
            path, refusal = self._through_gateway(request)
            prefix_ok = refusal is None
        else:
            prefix = f"/accounts/{self.account_id}"
            full = request.url.path
            path = full.split(prefix, 1)[1] if prefix in full else full
            prefix_ok = prefix in full
            refusal = None
        self.requests.append(
            Recorded(request.method, path, request.headers, request.content, str(request.url))
        )
        if refusal is not None:
            return refusal
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return error_envelope(401, 10000, "Authentication error")
        if self.rate_limit and request.url.host != GATEWAY_HOST:
            return self._rate_limited() or self._with_budget(
                await self._serve(path, request, prefix_ok)
            )
        return await self._serve(path, request, prefix_ok)

    async def _serve(self, path: str, request: httpx.Request, prefix_ok: bool) -> httpx.Response:
        if request.url.path.endswith("/user/tokens/verify"):
            return self._verify("user")
        if not prefix_ok:
            return error_envelope(404, 7003, "Could not route to the requested account")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.latency_s + next(
                (s for prefix, s in self.path_latency_s.items() if path.startswith(prefix)), 0.0
            )
            if delay:
                await asyncio.sleep(delay)
            response = self._route(path, request)
            await self._stall(path, request)
            return response
        except ApiError as exc:
            return error_envelope(exc.status, exc.code, exc.message)
        finally:
            self.in_flight -= 1

    def _rate_limited(self) -> httpx.Response | None:
        """The account-wide limit: past it, every call is refused until the block ends."""
        now = self.clock()
        while self._accepted and self._accepted[0] <= now - self.rate_window_s:
            self._accepted.popleft()
        if now < self._blocked_until or len(self._accepted) >= self.rate_limit:
            self._blocked_until = max(self._blocked_until, now + self.rate_window_s)
            self.rate_limited += 1
            wait = str(math.ceil(self._blocked_until - now))
            return self._with_budget(
                error_envelope(
                    429,
                    971,
                    "Please wait and consider throttling your request speed",
                    {"Retry-After": wait},
                )
            )
        self._accepted.append(now)
        return None

    def _with_budget(self, response: httpx.Response) -> httpx.Response:
        if self.rate_headers:
            now = self.clock()
            left = 0 if now < self._blocked_until else self.rate_limit - len(self._accepted)
            oldest = self._accepted[0] if self._accepted else now
            reset = math.ceil(max(self._blocked_until, oldest + self.rate_window_s) - now)
            response.headers["Ratelimit"] = f'"default";r={left};t={reset}'
            window = f"{self.rate_window_s:g}"
            response.headers["Ratelimit-Policy"] = f'"default";q={self.rate_limit};w={window}'
        return response

    def _verify(self, owner: str) -> httpx.Response:
        # Not in the shared OpenAPI subset, so not validated: the shape is Cloudflare's
        # API reference for both verify endpoints (an id and a status).
        if owner != self.token_owner:
            return error_envelope(401, 1000, "Invalid API Token")
        result = {"id": "f267e341f3dd4697bd3b9f71dd96247f", "status": "active"}
        return httpx.Response(200, json={"result": result, "success": True, "errors": []})

    def _route(self, path: str, request: httpx.Request) -> httpx.Response:
        if path == "/tokens/verify" and request.method == "GET":
            return self._verify("account")
        if "/vectorize/v2/" in path:
            # A scripted failure means the request never reached the index.
            return self._scripted(path) or self.vectorize.handle(request)
        if path == "/ai/tomarkdown" and request.method == "POST":
            if (failed := self._scripted(path)) is not None:
                return failed
            try:
                result = self.converter.answer(request, self.schema_errors)
            except ValueError as exc:
                raise ApiError(400, 5004, f"Invalid data: {exc}") from None
            envelope = {"result": result, "success": True, "errors": [], "messages": []}
            return httpx.Response(200, json=envelope)
        if path.startswith("/ai/run/") and request.method == "POST":
            model = path.removeprefix("/ai/run/")
            body = ai.validate(self, model, request)
            return self._scripted(path) or ai.respond(self, model, body)
        self.schema_errors.append(f"{request.method} {path}: no such endpoint in the spec")
        return error_envelope(404, 7003, "No route for that URI")

    def _through_gateway(self, request: httpx.Request) -> tuple[str, httpx.Response | None]:
        """The REST path a gateway request stands for, or the gateway's own refusal.

        Only 2009 is a documented gateway code; 2001 and 2008 are this fake's own, in the
        gateway's error shape, and no test depends on their numbers.
        """
        full = request.url.path
        prefix = f"{httpx.URL(GATEWAY_BASE).path}/{self.account_id}/{self.gateway_id}/"
        if not full.startswith(prefix):
            return full, gateway_error(404, 2001, "gateway not found")
        provider, _, rest = full.removeprefix(prefix).partition("/")
        if provider != "workers-ai":
            self.schema_errors.append(f"{request.method} {full}: AI Gateway has no {provider!r}")
            return full, gateway_error(400, 2008, f"unsupported provider {provider}")
        wanted = self.gateway_token
        if wanted and request.headers.get("cf-aig-authorization") != f"Bearer {wanted}":
            return f"/ai/run/{rest}", gateway_error(401, 2009, "Unauthorized")
        return f"/ai/run/{rest}", None

    def _scripted(self, path: str) -> httpx.Response | None:
        for failure in self.failures:
            if failure.path in path and (failure.times > 0 or failure.times == FOREVER):
                if failure.times != FOREVER:
                    failure.times -= 1
                headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
                return error_envelope(failure.status, failure.cf_code, failure.message, headers)
        return None


def gateway_error(status: int, code: int, message: str) -> httpx.Response:
    """AI Gateway's own refusal: "error", not "errors" (docs/cloudflare.md#ai-gateway)."""
    body = {
        "success": False,
        "result": [],
        "messages": [],
        "error": [{"code": code, "message": message}],
    }
    return httpx.Response(status, json=body)


def error_envelope(
    status: int, code: int | None, message: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["code"] = code
    body = {"result": None, "success": False, "errors": [error], "messages": []}
    return httpx.Response(status, json=body, headers=headers)
