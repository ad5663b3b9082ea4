"""The per-client rate limit counted in the database, so that every replica shares it.

In memory (``rag.web.limits``) each process counts alone: two replicas behind a load
balancer let a client through at twice the rate. Here each client has one row in
``rate_counts``, and each request is counted by one statement,
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``: atomic on PostgreSQL and on SQLite
(3.35 or later), so two replicas counting the same client at the same instant each see
the other's request, with no read-then-write race.

The window slides, approximately: the requests of the last 60 s are estimated as this
minute's count plus the previous minute's, weighted by how much of the previous minute
is still within the last 60 s. A client sees the same steady rate as with the token
bucket, and may likewise send up to a minute's worth at once. Only requests let through
are counted, so a client that keeps trying past the limit still gets the limit's rate.
Minutes are read from each replica's clock: a few milliseconds of drift between them
moves the window's edge by as much.

The count is secondary to the request it guards. When the statement fails (the database
unreachable, a lock held longer than ``[database] best_effort_wait_s``), the in-process
bucket counts the request instead, the failure is logged once, and the database is tried
again ``RETRY_S`` later: a limiter never fails a request, and an outage never lets
every request wait on it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from rag.db.failures import reason
from rag.web.limits import RateLimiter, TooManyRequests

log = logging.getLogger(__name__)

WINDOW_S = 60
RETRY_S = 10.0
"""After a failed count, requests are counted in memory for this long."""

_PRIOR = (
    "CASE WHEN rate_counts.slot = :slot THEN rate_counts.prior"
    " WHEN rate_counts.slot = :slot - 1 THEN rate_counts.hits ELSE 0 END"
)
_CURRENT = "CASE WHEN rate_counts.slot = :slot THEN rate_counts.hits ELSE 0 END"
# The casts keep PostgreSQL from typing the float parameters as integers.
_ADMIT = (
    f"({_PRIOR}) * CAST(:weight AS DOUBLE PRECISION) + ({_CURRENT}) + 1"
    " <= CAST(:limit AS DOUBLE PRECISION)"
)
COUNT = text(
    "INSERT INTO rate_counts (client, slot, hits, prior, allowed)"
    " VALUES (:client, :slot, 1, 0, :first)"
    " ON CONFLICT (client) DO UPDATE SET"
    f" slot = :slot, prior = {_PRIOR},"
    f" hits = {_CURRENT} + CASE WHEN {_ADMIT} THEN 1 ELSE 0 END,"
    f" allowed = {_ADMIT}"
    " RETURNING hits, prior, allowed"
)
"""One request of ``client``: every expression reads the row as it was before it."""
_FORGET = text("DELETE FROM rate_counts WHERE slot < :slot - 1")


class SharedRateLimiter:
    """``await take(client)`` counts one request in the database, or raises 429."""

    def __init__(
        self,
        per_minute: int,
        sessions: Callable[[], Any],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self._sessions = sessions
        self.clock = clock
        self.fallback = RateLimiter(per_minute, monotonic)
        self._monotonic = monotonic
        self._failed_at: float | None = None
        self._forgot_slot = 0
        self.fallbacks = 0
        """Requests the in-process bucket counted because the database could not."""

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def take(self, client: str) -> None:
        if not self.enabled:
            return
        sessions = self._sessions()
        retry_at = None if self._failed_at is None else self._failed_at + RETRY_S
        if sessions is None or (retry_at is not None and self._monotonic() < retry_at):
            self.fallbacks += 1
            self.fallback.take(client)
            return
        now = self.clock()
        slot, elapsed = divmod(now, WINDOW_S)
        try:
            row = await self._count(sessions, client, int(slot), 1.0 - elapsed / WINDOW_S)
        except Exception as exc:
            # Never a 500 for the limiter's sake: this process's bucket stands in.
            if self._failed_at is None:
                log.warning(
                    "the shared rate limit cannot be counted in the database (%s); "
                    "counting in this process for now",
                    reason(exc),
                )
            self._failed_at = self._monotonic()
            self.fallbacks += 1
            self.fallback.take(client)
            return
        if self._failed_at is not None:
            log.info("the shared rate limit is counted in the database again")
            self._failed_at = None
        hits, prior, allowed = row
        if not allowed:
            wait = retry_after(int(hits), int(prior), elapsed, self.per_minute)
            raise TooManyRequests(
                f"rate limit exceeded: {self.per_minute} requests a minute "
                f"(auth.rate_limit_per_minute); retry in {wait} s",
                retry_after=wait,
            )

    async def _count(
        self, sessions: Callable[[], Any], client: str, slot: int, weight: float
    ) -> tuple[Any, ...]:
        params = {
            "client": client[:100],
            "slot": slot,
            "weight": weight,
            "limit": float(self.per_minute),
            "first": True,
        }
        async with sessions() as session:
            # The statement is atomic on its own: without BEGIN and COMMIT around it, a
            # count is one round trip to PostgreSQL instead of three.
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            row = (await session.execute(COUNT, params)).one()
            if slot != self._forgot_slot:
                # Once a minute per process: clients idle for two minutes hold nothing.
                self._forgot_slot = slot
                await session.execute(_FORGET, {"slot": slot})
        return tuple(row)


def retry_after(hits: int, prior: int, elapsed: float, limit: int) -> int:
    """Whole seconds until one more request fits the estimate (at least 1)."""
    if prior > 0 and hits + 1 <= limit:
        # Later this minute, once enough of the previous one has slid out of the window.
        weight = (limit - hits - 1) / prior
        wait = (1.0 - weight) * WINDOW_S - elapsed
    else:
        # Next minute, this one's hits weighing less as it slides out.
        slide = (1.0 - (limit - 1) / hits) * WINDOW_S if hits else 0.0
        wait = WINDOW_S - elapsed + max(slide, 0.0)
    return max(math.ceil(wait), 1)
