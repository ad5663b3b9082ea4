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
``Retry-After``, since no request should sit for minutes.

Where replicas share a database (``[cloudflare] state_store``), the budget is counted
there instead (``shared_budget.SharedBudget``, reserved in small blocks), and a refusal
is written there for every process to hold its calls; the window here stands in while
the database cannot answer, so a database outage slows no call and fails none. What
``Ratelimit`` says stays per process: every process reads it on its own responses.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable

import httpx

from rag.backends.cloudflare.shared_budget import LEASE_S, SharedBudget, block
from rag.db.failures import reason
from rag.errors import CapacityError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

WINDOW_S = 300.0
RETRY_S = 10.0
"""After the shared budget failed, calls are counted in this process for this long."""
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
        self._shared: SharedBudget | None = None
        self._reserving = asyncio.Lock()
        self._credits = 0
        """Calls reserved from the shared budget and not spent yet."""
        self._leased_at = 0.0
        self._lease_slot = 0
        self._failed_at: float | None = None

    def share(self, budget: SharedBudget) -> None:
        """Count calls in ``budget`` (the database), with this process's window as stand-in."""
        self._shared = budget

    async def acquire(self) -> None:
        """Wait until one more call fits; raises ``CapacityError`` on a long Cloudflare hold."""
        now = self._clock()
        self._refuse_long_hold(now)
        if self.limit and self._shared_usable(now):
            await self._wait_until(max(now, self._held_until, self._spent_until), now)
            if await self._take_shared():
                return
            now = self._clock()
        at = max(now, self._held_until, self._spent_until)
        if self.limit:
            while self._sent and self._sent[0] <= now - self.window_s:
                self._sent.popleft()
            if len(self._sent) >= self.limit:
                at = max(at, self._sent[-self.limit] + self.window_s)
            if self._sent:
                at = max(at, self._sent[-1])
            self._sent.append(at)
        await self._wait_until(at, now)

    def _refuse_long_hold(self, now: float) -> None:
        if self._held_until - now > self.max_hold_s:
            raise CapacityError(
                f"Cloudflare's API rate limit holds every call for another "
                f"{self._held_until - now:.0f} s (1,200 requests per 5 minutes per user)",
                http_status=429,
                retry_after=self._held_until - now,
            )

    async def _wait_until(self, at: float, now: float) -> None:
        if at > now:
            self.waited_s += at - now
            await self._sleep(at - now)

    def _shared_usable(self, now: float) -> bool:
        return self._shared is not None and (
            self._failed_at is None or now - self._failed_at >= RETRY_S
        )

    async def _take_shared(self) -> bool:
        """One call from the shared budget, to be sent now (waiting while the budget is
        spent or the API holds every call); False when the database could not say, and
        this process's window counts the call instead."""
        shared = self._shared
        assert shared is not None
        # One reservation at a time: calls arriving meanwhile take from its block.
        async with self._reserving:
            while True:
                now = self._clock()
                # Spent only within the lease and the sub-window they are counted in.
                fresh = now - self._leased_at < LEASE_S and shared.slot() <= self._lease_slot
                if self._credits and fresh:
                    self._credits -= 1
                    return True
                back = (self._lease_slot, self._credits) if self._credits else None
                self._credits = 0
                try:
                    grant = await shared.reserve(block(self.limit), self.limit, back)
                except Exception as exc:
                    # Never a failed call for the budget's sake: this process counts alone.
                    if self._failed_at is None:
                        log.warning(
                            "the Cloudflare API budget cannot be counted in the database "
                            "(%s); this process counts its own calls for now",
                            reason(exc),
                        )
                    self._failed_at = now
                    return False
                if self._failed_at is not None:
                    log.info("the Cloudflare API budget is counted in the database again")
                    self._failed_at = None
                self._leased_at, self._lease_slot, self._credits = now, grant.slot, grant.calls
                if grant.held_s > 0:
                    # Another process was refused: wait it out here too (the calls just
                    # reserved go back at the next reservation).
                    self._held_until = max(self._held_until, now + grant.held_s)
                    self._refuse_long_hold(now)
                    await self._wait_until(self._held_until, self._clock())
                    continue
                if self._credits:
                    self._credits -= 1
                    return True
                # From the clock after the round trip: the wait is a time, not a length.
                await self._wait_until(now + grant.wait_s, self._clock())

    def observe(self, headers: httpx.Headers) -> None:
        """Take in what a response's headers say about the budget: hold calls when spent."""
        reset = spent_reset(headers.get("ratelimit", ""))
        if reset is not None:
            self._spent_until = max(self._spent_until, self._clock() + reset)
        quota = policy_quota(headers.get("ratelimit-policy", ""), self.window_s)
        if quota is not None and 0 < quota < self.limit:
            self.limit = quota

    async def hold(self, seconds: float | None) -> None:
        """Hold every call for ``seconds`` (Cloudflare refused one: 5 minutes if unsaid),
        in every process that shares the budget."""
        wait = self.window_s if seconds is None else seconds
        now = self._clock()
        self._held_until = max(self._held_until, now + wait)
        if self._shared is None or not self._shared_usable(now):
            return
        try:
            await self._shared.hold(wait)
        except Exception as exc:
            # The others learn it from their own next refusal, as without a database.
            log.warning("a Cloudflare API hold could not be shared: %s", reason(exc))

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
