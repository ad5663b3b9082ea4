"""The one HTTP client for Cloudflare's REST API: envelope, typed errors, retries.

Every Workers AI and Vectorize call goes through ``CloudflareClient``: it owns the only
``httpx.AsyncClient`` (with an injectable transport, so tests run this very code against
an in-process fake), parses the ``{"success", "result", "errors"}`` envelope, maps
Cloudflare's codes to the ``CloudflareError`` family and retries what may succeed later.
With ``[cloudflare] gateway_id`` set, Workers AI calls go to AI Gateway instead (absolute
URLs on the same client, ``gateway.py``); retries and error mapping stay the same.

Retries: at most ``max_retries`` more attempts, exponential backoff from 0.5 s capped at
8 s with jitter; a ``Retry-After`` from Cloudflare is honoured up to 60 s, and a longer
one is raised at once (the global API limit blocks for 5 minutes: no request should
sit that long). Before any of that, every request waits its turn in the process's one
``RateLimiter`` (``ratelimit.py``, ``[cloudflare] requests_per_5min``), counted with the
other replicas' calls where they share a database (``shared_budget.py``). Streams retry
only before the first byte of the body: once output has arrived, a failure is raised as
``StreamTruncated`` and never retried, so an answer is never generated (and billed)
twice.

A chat stream has a first-token deadline (``[cloudflare] first_token_deadline_s``): no
backoff and no ``Retry-After`` wait is started that would end past it, so a busy model
(3040 with ``Retry-After: 30``) fails at once with its retryable error and the fallback
chain asks the next provider instead of holding the first token for minutes.

A read timeout (``httpx.ReadTimeout``) comes after the whole request was written, so
Cloudflare may have run, and billed, the call. Such a call is not re-sent blindly:

- a chat stream is never re-sent after one: the error is raised and the chain moves on;
- embeddings and rerank are idempotent and cheap, so ``call`` re-sends them, but a
  caller that passes ``on_sent_timeout`` is told of every such attempt and records it in
  the usage ledger as a possible charge (kind ``embed-timedout``, ``rerank-timedout``);
- a non-streamed chat call (``condense``) is never retried at all.

Failures before the request was written (connect, write, pool timeouts, 5xx, 429)
were not billed and are retried as above.
"""

from __future__ import annotations

import asyncio
import codecs
import json as jsonlib
import os
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpx

from rag.backends.cloudflare.gateway import AUTH_HINT, Gateway
from rag.backends.cloudflare.ratelimit import Clock, RateLimiter
from rag.config import Settings
from rag.errors import (
    AuthError,
    CapacityError,
    CloudflareError,
    ConfigError,
    DailyLimitExceeded,
    ModelNotFound,
    RequestTooLarge,
    StreamTruncated,
    UpstreamTimeout,
    UpstreamUnavailable,
)

Sleep = Callable[[float], Awaitable[None]]

BASE_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 60.0
TOKEN_HINT = "check CLOUDFLARE_API_TOKEN permissions: Workers AI Read+Edit, Vectorize Edit"
TIMEOUT_CODES = frozenset({3007, 3008, 3046})
MODEL_CODES = frozenset({5007, 3042})
# 429s that are about one model, not the account's API budget (docs/cloudflare.md#rate-limits).
NOT_ACCOUNT_WIDE = frozenset({3036, 3040})
# 403s that are about the model or the plan, not the token (docs/cloudflare.md#error-codes).
ACCESS_CODES = frozenset({5016, 5018, 3023, 3041, 5035})


class CloudflareClient:
    """Calls ``{api_base}/accounts/{account_id}{path}`` with the API token."""

    def __init__(
        self,
        *,
        api_base: str,
        account_id: str,
        token: str,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Clock = time.monotonic,
        gateway: Gateway | None = None,
        requests_per_5min: int = 1200,
    ) -> None:
        self.account_id = account_id
        self.gateway = gateway
        self.api_base = api_base.rstrip("/")
        self.max_retries = max(0, max_retries)
        self.sleep = sleep
        self.clock = clock
        """Shared with whatever polls Cloudflare through this client (``--wait``)."""
        self.jitter = jitter
        self.limiter = RateLimiter(requests_per_5min, clock, sleep, max_hold_s=MAX_RETRY_AFTER_S)
        self._http = httpx.AsyncClient(
            base_url=f"{self.api_base}/accounts/{account_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=transport,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> CloudflareClient:
        """The client ``[cloudflare]`` and the environment describe; fails fast if unusable."""
        env = os.environ if environ is None else environ
        cf = settings.cloudflare
        account = cf.account_id or env.get("CLOUDFLARE_ACCOUNT_ID", "")
        token = env.get("CLOUDFLARE_API_TOKEN", "")
        missing = []
        if not token:
            missing.append(
                "set CLOUDFLARE_API_TOKEN to an API token (Workers AI Read+Edit, Vectorize Edit)"
            )
        if not account:
            missing.append("set [cloudflare] account_id in config.toml or CLOUDFLARE_ACCOUNT_ID")
        if missing:
            raise ConfigError("the cloudflare backend needs credentials: " + "; ".join(missing))
        gateway = None
        if cf.gateway_id:
            aig_token = env.get("CLOUDFLARE_AIG_TOKEN", "")
            gateway = Gateway.build(cf.gateway_base_url, account, cf.gateway_id, aig_token)
        return cls(
            api_base=cf.api_base,
            account_id=account,
            token=token,
            timeout_s=cf.timeout_s,
            max_retries=cf.max_retries,
            transport=transport,
            sleep=sleep,
            clock=clock,
            gateway=gateway,
            requests_per_5min=cf.requests_per_5min,
        )

    def __repr__(self) -> str:
        # Never the tokens: only where the calls go.
        where = f"api_base={self.api_base!r}, account_id={self.account_id!r}"
        if self.gateway:
            where += f", gateway={self.gateway.prefix!r}"
        return f"CloudflareClient({where})"

    def _target(
        self, path: str, headers: Mapping[str, str] | None
    ) -> tuple[str, Mapping[str, str] | None]:
        """Where ``path`` is sent: the gateway's absolute URL for Workers AI when one is
        set (httpx leaves an absolute URL alone, so the one client serves both hosts)."""
        if self.gateway is None or (url := self.gateway.url(path)) is None:
            return path, headers
        return url, {**(headers or {}), **self.gateway.headers()}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> CloudflareClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        retry: bool = True,
        on_sent_timeout: Callable[[], None] | None = None,
    ) -> Any:
        """The envelope's ``result``; retries retryable failures unless ``retry`` is off.

        ``on_sent_timeout`` is called for every attempt whose reply timed out after the
        request was written: Cloudflare may have billed it (see the module docstring).
        ``files`` sends a multipart body: (field, (file name, bytes, media type)) pairs.
        """
        attempt = 0
        while True:
            url, sent_headers = self._target(path, headers)
            try:
                await self.limiter.acquire()
                response = await self._http.request(
                    method,
                    url,
                    json=json,
                    content=content,
                    files=files,
                    headers=sent_headers,
                    params=params,
                )
                self._observe(response, url)
                return result_of(response, path)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ReadTimeout) and on_sent_timeout is not None:
                    on_sent_timeout()
                error = transport_error(exc, path)
            except CloudflareError as exc:
                error = exc
                await self._hold_all(error, url)
            if not retry or not await self._backoff(error, attempt):
                raise error
            attempt += 1

    async def stream_lines(
        self, method: str, path: str, *, json: Any, deadline_s: float | None = None
    ) -> AsyncGenerator[str, None]:
        """The response body line by line, as it arrives (SSE), without line endings.

        Retries before the first byte stop ``deadline_s`` after the call; a read timeout
        is never retried (the model may be generating, and billing, that answer).

        A model that ignores ``stream`` and answers with a JSON envelope is turned into
        one ``data:`` line holding its ``result`` followed by ``data: [DONE]``, so callers
        parse a single format.
        """
        deadline = None
        if deadline_s is not None:
            deadline = self.clock() + deadline_s
        attempt = 0
        while True:
            started = False
            url, headers = self._target(path, {"Accept": "text/event-stream"})
            try:
                await self.limiter.acquire()
                async with self._http.stream(method, url, json=json, headers=headers) as response:
                    self._observe(response, url)
                    if response.status_code >= 400 or "json" in response.headers.get(
                        "content-type", ""
                    ):
                        await response.aread()
                        result = result_of(response, path)
                        yield "data: " + jsonlib.dumps(result)
                        yield "data: [DONE]"
                        return
                    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                    pending = ""
                    async for chunk in response.aiter_bytes():
                        started = started or bool(chunk)
                        pending += decoder.decode(chunk)
                        # Split on "\n" only: str.splitlines would also break on
                        # U+2028 and friends, which JSON strings may carry raw.
                        *lines, pending = pending.split("\n")
                        for line in lines:
                            yield line.removesuffix("\r")
                    pending += decoder.decode(b"", final=True)
                    if pending:
                        yield pending.removesuffix("\r")
                    return
            except httpx.TransportError as exc:
                if started:
                    raise StreamTruncated(
                        f"the stream from {path} broke after output had started: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                error = transport_error(exc, path)
                if isinstance(exc, httpx.ReadTimeout):
                    raise error from exc
            except CloudflareError as exc:
                error = exc
                await self._hold_all(error, url)
            if not await self._backoff(error, attempt, deadline):
                raise error
            attempt += 1

    def _observe(self, response: httpx.Response, url: str) -> None:
        # AI Gateway's headers are about the gateway, not the account's API budget.
        if url.startswith("/"):
            self.limiter.observe(response.headers)

    async def _hold_all(self, error: CloudflareError, url: str) -> None:
        """A 429 of the account-wide API limit holds every call, not just this one.

        Not a model's own capacity (3040), the daily neurons (3036) or the gateway's own
        limit: those concern one model or route, and the retry below waits for them.
        """
        if error.http_status == 429 and error.cf_code not in NOT_ACCOUNT_WIDE and url[:1] == "/":
            await self.limiter.hold(error.retry_after)

    async def _backoff(
        self, error: CloudflareError, attempt: int, deadline: float | None = None
    ) -> bool:
        """Sleep before the next attempt; False when the error must be raised instead,
        including when the sleep would end past ``deadline`` (on ``clock``)."""
        if not error.retryable or attempt >= self.max_retries:
            return False
        if error.retry_after is not None:
            if error.retry_after > MAX_RETRY_AFTER_S:
                return False
            # A little jitter on top, so clients told the same time do not return at once.
            delay = error.retry_after + BASE_BACKOFF_S * self.jitter()
        else:
            delay = jittered(BASE_BACKOFF_S * 2**attempt, MAX_BACKOFF_S, self.jitter())
        if deadline is not None and self.clock() + delay > deadline:
            return False
        await self.sleep(delay)
        if error.retry_after is not None:
            self.limiter.release_hold()
        return True


def jittered(delay: float, cap: float, jitter: float) -> float:
    """``delay`` capped at ``cap``, then scaled into its upper half by ``jitter`` in [0, 1)."""
    return min(cap, delay) * (0.5 + 0.5 * jitter)


def result_of(response: httpx.Response, path: str) -> Any:
    """The ``result`` of a successful envelope, or the typed error it describes."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code < 400 and isinstance(body, dict) and body.get("success") is True:
        return body.get("result")
    cf_code, message = _first_error(body)
    if message is None:
        text = response.text[:200].strip() or response.reason_phrase
        message = f"HTTP {response.status_code}: {text}"
    raise error_for(
        response.status_code, cf_code, message, path, parse_retry_after(response.headers)
    )


def _first_error(body: Any) -> tuple[int | None, str | None]:
    if not isinstance(body, dict):
        return None, None
    # AI Gateway's own refusals (2009, an authenticated gateway without its token) say
    # "error" where the REST API says "errors" (docs/cloudflare.md#ai-gateway).
    errors = body.get("errors") or body.get("error")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    raw_code, message = errors[0].get("code"), errors[0].get("message")
    # The 2024 spec types the code as a string on some paths; the documented codes are ints.
    try:
        cf_code = int(raw_code) if raw_code is not None else None
    except (TypeError, ValueError):
        cf_code = None
    return cf_code, str(message) if message is not None else None


def error_for(
    status: int, cf_code: int | None, message: str, path: str, retry_after: float | None = None
) -> CloudflareError:
    """Map Cloudflare's HTTP status and internal code to one error class."""
    where = f"Cloudflare {path}"
    if cf_code is not None:
        where += f" (code {cf_code})"
    kwargs: dict[str, Any] = {
        "cf_code": cf_code,
        "http_status": status,
        "retry_after": retry_after,
    }
    if cf_code == 3036:
        return DailyLimitExceeded(
            f"{where}: the daily Workers AI allocation is used up (resets 00:00 UTC): {message}",
            **kwargs,
        )
    if cf_code in MODEL_CODES:
        model = path.removeprefix("/ai/run/") if path.startswith("/ai/run/") else path
        return ModelNotFound(
            f"{where}: Workers AI has no model {model!r}: check the model ids in "
            f"[cloudflare] ({message})",
            **kwargs,
        )
    if cf_code == 3040 or status == 429:
        return CapacityError(f"{where}: {message}", **kwargs)
    if cf_code == 3006 or status == 413:
        return RequestTooLarge(f"{where}: request too large: {message}", **kwargs)
    if cf_code in TIMEOUT_CODES or status == 408:
        return UpstreamTimeout(f"{where}: timed out: {message}", **kwargs)
    if cf_code == 2009:
        return AuthError(f"{where}: {message}; {AUTH_HINT}", **kwargs)
    if status in (401, 403) or cf_code == 10000:
        hint = "" if cf_code in ACCESS_CODES else f"; {TOKEN_HINT}"
        return AuthError(f"{where}: access refused: {message}{hint}", **kwargs)
    if status >= 500:
        return UpstreamUnavailable(f"{where}: server error: {message}", **kwargs)
    return CloudflareError(f"{where}: {message}", **kwargs)


def transport_error(exc: httpx.TransportError, path: str) -> CloudflareError:
    """A failure below HTTP: no response at all, so nothing was processed (or billed)."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"Cloudflare {path}: timed out ({detail})")
    return UpstreamUnavailable(f"Cloudflare {path}: connection failed ({detail})")


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), if present and sane."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
