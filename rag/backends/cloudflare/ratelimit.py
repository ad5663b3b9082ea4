"""One budget for every call this process makes to Cloudflare's REST API.

Cloudflare allows 1,200 requests per 5 minutes per user across its whole API and, past
that, refuses every call for 5 minutes (docs/cloudflare.md#rate-limits). An ask makes
several calls and a wait polls, so nothing stops a busy process from tripping it: this
sliding window holds each call until it fits in ``limit`` per ``window_s`` instead.

Each call reserves the first instant it may go and then sleeps until then, with no
re-check afterwards, so a test's clock that a sleep advances (or does not) cannot make it
spin. What Cloudflare says about its own count wins over ours when it is stricter: a
``Ratelimit`` item with nothing remaining (other processes share the budget) makes calls
wait for its reset, and ``Ratelimit-Policy`` can lower our quota. A refusal (a 429 with
``Retry-After``) means the account is already blocked: calls are then held, and a hold
longer than ``max_hold_s`` is raised at once, as the client does with a long
``Retry-After``, since no request should sit for minutes. The budget is per process;
sharing it between replicas is issue 9's.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable

import httpx

from rag.errors import CapacityError

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

WINDOW_S = 300.0
_ITEM = re.compile(r";\s*([a-z]+)\s*=\s*([0-9.]+)")


class RateLimiter:
    def __init__(
        self,
        limit: int,
        clock: Clock,
        sleep: Sleep,
        *,
        window_s: float = WINDOW_S,
        max_hold_s: float = 60.0,
    ) -> None:
        self.limit = max(0, limit)
        """0: no budget of our own (Cloudflare's holds are still honoured)."""
        self.window_s = window_s
        self.max_hold_s = max_hold_s
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._held_until = 0.0
        """Cloudflare refused a call: the account is blocked until then."""
        self._spent_until = 0.0
        """Cloudflare said the budget is spent: calls wait until then."""
        self.waited_s = 0.0
        """Seconds calls have been held in all, for tests and diagnostics."""

    async def acquire(self) -> None:
        """Wait until one more call fits; raises ``CapacityError`` on a long Cloudflare hold."""
        now = self._clock()
        if self._held_until - now > self.max_hold_s:
            raise CapacityError(
                f"Cloudflare's API rate limit holds every call for another "
                f"{self._held_until - now:.0f} s (1,200 requests per 5 minutes per user)",
                http_status=429,
                retry_after=self._held_until - now,
            )
        at = max(now, self._held_until, self._spent_until)
        if self.limit:
            while self._sent and self._sent[0] <= now - self.window_s:
                self._sent.popleft()
            if len(self._sent) >= self.limit:
                at = max(at, self._sent[-self.limit] + self.window_s)
            if self._sent:
                at = max(at, self._sent[-1])
            self._sent.append(at)
        if at > now:
            self.waited_s += at - now
            await self._sleep(at - now)

    def observe(self, headers: httpx.Headers) -> None:
        """Take in what a response's headers say about the budget: hold calls when spent."""
        reset = spent_reset(headers.get("ratelimit", ""))
        if reset is not None:
            self._spent_until = max(self._spent_until, self._clock() + reset)
        quota = policy_quota(headers.get("ratelimit-policy", ""), self.window_s)
        if quota is not None and 0 < quota < self.limit:
            self.limit = quota

    def hold(self, seconds: float | None) -> None:
        """Hold every call for ``seconds`` (Cloudflare refused one: 5 minutes if unsaid)."""
        wait = self.window_s if seconds is None else seconds
        self._held_until = max(self._held_until, self._clock() + wait)

    def release_hold(self) -> None:
        """The caller itself waited out the hold (a retry after ``Retry-After``)."""
        self._held_until = min(self._held_until, self._clock())


def spent_reset(value: str) -> float | None:
    """Seconds until reset of the first ``Ratelimit`` item with nothing remaining.

    The header lists items as ``"name";r=REMAINING;t=SECONDS_TO_RESET``, comma-separated.
    """
    for item in value.split(","):
        fields = dict(_ITEM.findall(item))
        if "r" in fields and "t" in fields and float(fields["r"]) <= 0:
            return float(fields["t"])
    return None


def policy_quota(value: str, window_s: float) -> int | None:
    """The smallest quota ``Ratelimit-Policy`` states for a window as long as ours.

    Items read ``"name";q=QUOTA;w=WINDOW_SECONDS``; other windows (a burst policy) are not
    comparable with a 5-minute budget and are left to ``Ratelimit`` and ``Retry-After``.
    """
    quotas = []
    for item in value.split(","):
        fields = dict(_ITEM.findall(item))
        if "q" in fields and "w" in fields and float(fields["w"]) == window_s:
            quotas.append(int(float(fields["q"])))
    return min(quotas) if quotas else None
