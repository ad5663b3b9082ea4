"""Degraded mode: remembering that Workers AI refuses every call, and why.

Three failures mean no Workers AI call will succeed for a while: the Free plan's daily
neurons are spent (3036, until 00:00 UTC, on every model), an outage (5xx or timeouts the
client already retried) and refused credentials (401/403, 10000). Then ``ask`` and
``search`` answer from what is local (FTS5 keyword retrieval and the extractive
answerer) and say so, and the calls that would fail again are not made: not the
embedding, not the reranker, not the chat model.

The memory lasts a 3036 until the next 00:00 UTC, anything else for ``[cloudflare]
refusal_memory_s``. It is this process's, unless replicas share a database
(``[cloudflare] state_store``): then a refusal one process meets is written to
``refusal_memory`` (``rag.retrieval.shared_refusals``), and every other reads it at
most every ``REFRESH_S`` before it asks, so none has to learn it by failing. A store that
fails leaves the process on its own memory: a secondary failure never fails an answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from rag.db.failures import reason as failure_reason
from rag.errors import (
    AuthError,
    CloudflareError,
    DailyLimitExceeded,
    UpstreamTimeout,
    UpstreamUnavailable,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

REFRESH_S = 2.0
"""How often a process reads the shared memory: at most one read per this, per process,
on the question path."""


def next_utc_midnight(now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


REFUSING: tuple[type[CloudflareError], ...] = (
    DailyLimitExceeded,
    AuthError,
    UpstreamUnavailable,
    UpstreamTimeout,
)
"""The errors that refuse every call: ``refusal_reason`` says why for each, and the shared
memory (``rag.retrieval.shared_refusals``) stores and rebuilds them by their code."""


def refusal_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means every Workers AI call is refused for now, or None when it does not.

    A 429 for capacity or the rate limit is not here: it concerns one model or one minute,
    and the client's retries and the chat fallback deal with it.
    """
    if isinstance(exc, DailyLimitExceeded):
        return (
            "Workers AI daily neuron allocation used up (3036): answers come from keyword "
            "search and the extractive answerer until 00:00 UTC"
        )
    if isinstance(exc, AuthError):
        return (
            f"Cloudflare refused access to Workers AI ({_code(exc)}): answers come from "
            "keyword search and the extractive answerer until the API token is fixed"
        )
    if isinstance(exc, UpstreamUnavailable | UpstreamTimeout):
        return (
            f"Workers AI is unavailable ({_code(exc)}): answers come from keyword search "
            "and the extractive answerer until it answers again"
        )
    return None


def _code(exc: CloudflareError) -> str:
    return str(exc.cf_code or exc.http_status or exc.code)


@dataclass
class Refusal:
    reason: str
    until: datetime
    error: CloudflareError


class RefusalStore(Protocol):
    """Where processes share the last refusal (``rag.retrieval.shared_refusals``)."""

    async def load(self) -> Refusal | None: ...

    async def save(self, refusal: Refusal) -> None: ...


class Refusals:
    """The last refusal that still holds; shared by retrieval, the chat chain and ingestion."""

    def __init__(
        self,
        memory_s: float,
        clock: Clock = lambda: datetime.now(UTC),
        store: RefusalStore | None = None,
    ) -> None:
        self.memory_s = memory_s
        self.clock = clock
        self.store = store
        self.refresh_s = REFRESH_S
        self._current: Refusal | None = None
        self._read_at: float | None = None
        self._store_failing = False

    async def note(self, exc: BaseException) -> str | None:
        """Remember ``exc`` when it is a refusal of every call; returns its reason."""
        reason = refusal_reason(exc)
        if reason is None or not isinstance(exc, CloudflareError):
            return None
        now = self.clock()
        if isinstance(exc, DailyLimitExceeded):
            until = next_utc_midnight(now)
        else:
            until = now + timedelta(seconds=max(0.0, self.memory_s))
        self._current = Refusal(reason, until, exc)
        if self.store is not None:
            try:
                await self.store.save(self._current)
            except Exception as error:
                self._store_failed(error)
        return reason

    async def refresh(self) -> None:
        """Take in the refusal another process remembered, at most every ``refresh_s``."""
        if self.store is None:
            return
        now = time.monotonic()
        if self._read_at is not None and now - self._read_at < self.refresh_s:
            return
        self._read_at = now
        try:
            shared = await self.store.load()
        except Exception as exc:
            self._store_failed(exc)
            return
        if self._store_failing:
            log.info("degraded mode's memory is shared through the database again")
            self._store_failing = False
        if shared is not None and self.clock() < shared.until:
            self._current = shared

    def _store_failed(self, exc: BaseException) -> None:
        if not self._store_failing:
            log.warning(
                "degraded mode's memory cannot be shared through the database (%s): "
                "this process remembers alone for now",
                failure_reason(exc),
            )
        self._store_failing = True

    def current(self) -> Refusal | None:
        """The refusal still remembered now, or None (it expired or none was seen)."""
        if self._current is not None and self.clock() >= self._current.until:
            self._current = None
        return self._current

    def reason(self) -> str | None:
        current = self.current()
        return current.reason if current else None
