"""The per-client request rate limit: one token bucket per API key (or client address).

Litestar's ``RateLimitMiddleware`` was the first choice, but it runs before the guards
that know which API key a request carries, counts fixed windows (a client may send
twice the limit across a window edge) and answers 429 without ``Retry-After``. A
bucket is a few lines: each client may burst up to a minute's worth of requests, then
gets one more every ``60 / per_minute`` seconds.

In memory, per process: several replicas each allow the full rate. With
``[auth] rate_limit_store = "database"`` (the default on PostgreSQL) the replicas share
one count instead (``rag.web.shared_limit``), and this bucket stands in only while the
database cannot count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from rag.errors import RagError

MAX_CLIENTS = 10_000
"""Buckets kept before full (idle) ones are dropped: a flood of addresses stays bounded."""


class TooManyRequests(RagError):
    status_code = 429
    retryable = True
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``take(client)`` spends one request of ``client``'s allowance or raises 429."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def take(self, client: str) -> None:
        if not self.enabled:
            return
        now = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_CLIENTS:
                self._prune(now)
            bucket = self._buckets[client] = _Bucket(self.capacity, now)
        else:
            elapsed = max(now - bucket.at, 0.0)
            bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.refill_per_s)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = math.ceil((1.0 - bucket.tokens) / self.refill_per_s)
        raise TooManyRequests(
            f"rate limit exceeded: {self.per_minute} requests a minute "
            f"(auth.rate_limit_per_minute); retry in {wait} s",
            retry_after=max(wait, 1),
        )

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely holds no state worth keeping.
        full = [
            client
            for client, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.at) * self.refill_per_s >= self.capacity
        ]
        for client in full:
            del self._buckets[client]
        if len(self._buckets) >= MAX_CLIENTS:
            # Still full of active clients: forget the oldest half rather than grow.
            oldest = sorted(self._buckets, key=lambda c: self._buckets[c].at)
            for client in oldest[: len(oldest) // 2]:
                del self._buckets[client]
