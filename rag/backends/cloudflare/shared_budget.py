"""Cloudflare's API budget counted in the database, so that every replica shares it.

Cloudflare counts 1,200 requests per 5 minutes per user, whichever process sends them;
each process pacing itself to the whole budget (``ratelimit.RateLimiter`` alone) lets
two replicas and a worker send three times that, and the account is blocked for 5
minutes. Here the budget is one row of ``api_budget``, counted by one
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``: atomic on PostgreSQL and SQLite, so
two processes reserving at the same instant each see the other's calls.

The row keeps a count per tenth of the window (``SUBWINDOWS``), and a call
is let through only if the sub-windows that overlap the last 5 minutes hold fewer than
the budget. That is an upper bound, never an estimate: a burst at the end of one window
cannot be followed by another at the start of the next, as the two-window estimate of
``rag.web.shared_limit`` would allow (fine for a client's rate, not for a limit that
blocks the account). It costs at most a tenth of the budget, counted for a sub-window
partly out of the last 5 minutes.

A process reserves calls in small blocks (``block``: 1% of the budget, at most 10), so a
busy process pays one round trip per block rather than one per API call. What that
trades: a block is counted when it is reserved, not when it is spent. Unspent calls are
given back at the next reservation; they are spent only within ``LEASE_S`` and within
their sub-window, so a call is never sent outside the count that holds it. An idle
process may hold a block counted and unsent until the window slides past it. And a hold
another process saw (a 429 of the account-wide limit, written to ``held_until``) reaches
this one with its next reservation: after at most a block of calls or ``LEASE_S``.

Times are the processes' own wall clocks (Unix time), compared across machines; a few
milliseconds of drift moves a sub-window's edge by as much.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

SUBWINDOWS = 10
CELLS = SUBWINDOWS + 1
"""The last 5 minutes overlap 11 sub-windows: the current one and 10 before it."""
LEASE_S = 5.0
"""Reserved calls not spent within this long are given back at the next reservation."""
BLOCK_MAX = 10
MIN_WAIT_S = 0.5


# The row's cells are positional: c0 counts sub-window ``slot``, c1 the one before, and
# so on. A reservation in a later sub-window shifts them by ``_SHIFT`` places (those
# shifted past c10 leave the window); one from a process whose clock is behind another's
# counts in the row's latest sub-window (a row that went backwards would count the same
# calls twice, or none). Casts, so that PostgreSQL types every parameter alike.
_SLOT = "CAST(:slot AS BIGINT)"
_SHIFT = f"(CASE WHEN {_SLOT} > api_budget.slot THEN {_SLOT} - api_budget.slot ELSE 0 END)"
_AT = f"(api_budget.slot + {_SHIFT} - CAST(:back_slot AS BIGINT))"
"""Where the calls given back are counted, after the shift."""
_BACK = "CAST(:back AS INTEGER)"
# What stays in the window after a shift of ``j``: c0 to c(10 - j).
_COUNTED = (
    f"CASE {_SHIFT} "
    + " ".join(
        f"WHEN {j} THEN " + " + ".join(f"api_budget.c{k}" for k in range(CELLS - j))
        for j in range(CELLS)
    )
    + " ELSE 0 END"
)
_FREE = (
    f"(CAST(:limit AS INTEGER) - ({_COUNTED})"
    f" + CASE WHEN {_AT} BETWEEN 0 AND {SUBWINDOWS} THEN {_BACK} ELSE 0 END)"
)
# All or nothing, so that the free count is written once: a process asks again for one
# call when its block does not fit.
_WANT = "CAST(:want AS INTEGER)"
_GRANT = f"(CASE WHEN {_FREE} >= {_WANT} THEN {_WANT} ELSE 0 END)"


def _cell(k: int) -> str:
    """Cell ``k`` after the shift, less the calls given back there, plus the grant in c0."""
    shifted = " ".join(f"WHEN {j} THEN api_budget.c{k - j}" for j in range(k + 1))
    value = (
        f"c{k} = CASE {_SHIFT} {shifted} ELSE 0 END - CASE WHEN {_AT} = {k} THEN {_BACK} ELSE 0 END"
    )
    return value + (f" + {_GRANT}" if k == 0 else "")


_NAMES = ", ".join(f"c{k}" for k in range(CELLS))
RESERVE = text(
    f"INSERT INTO api_budget (name, slot, {_NAMES}, granted, held_until)"
    f" VALUES (:name, {_SLOT}, :first, {', '.join('0' * SUBWINDOWS)}, :first, 0)"
    f" ON CONFLICT (name) DO UPDATE SET slot = api_budget.slot + {_SHIFT},"
    f" {', '.join(_cell(k) for k in range(CELLS))}, granted = {_GRANT}"
    f" RETURNING slot, {_NAMES}, granted, held_until"
)
"""Give back ``back`` unspent calls (of sub-window ``back_slot``) and reserve ``want``
or none: every expression reads the row as it was before the statement."""
# The cast keeps PostgreSQL from typing the float parameter as an integer.
_UNTIL = "CAST(:until AS DOUBLE PRECISION)"
HOLD = text(
    f"INSERT INTO api_budget (name, slot, {_NAMES}, granted, held_until)"
    f" VALUES (:name, {_SLOT}, {', '.join('0' * CELLS)}, 0, {_UNTIL})"
    " ON CONFLICT (name) DO UPDATE SET held_until = CASE"
    f" WHEN api_budget.held_until < {_UNTIL} THEN {_UNTIL} ELSE api_budget.held_until END"
)


def block(limit: int) -> int:
    """Calls one reservation asks for: 1% of the budget, between 1 and ``BLOCK_MAX``."""
    return max(1, min(BLOCK_MAX, limit // 100))


@dataclass(frozen=True)
class Grant:
    calls: int
    """Calls reserved (0: the budget is spent for now)."""
    slot: int
    """The sub-window they were counted in: they may be sent only within it."""
    wait_s: float
    """With none reserved: seconds until one more fits."""
    held_s: float
    """Seconds the API still refuses every call (0 or less: it does not)."""


class SharedBudget:
    """One API budget in ``api_budget``: ``reserve`` calls, ``hold`` every process."""

    def __init__(
        self,
        sessions: Callable[[], Any],
        name: str,
        *,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self.name = name[:100]
        self.sub_s = window_s / SUBWINDOWS
        self.clock = clock

    def slot(self) -> int:
        """The sub-window now."""
        return int(self.clock() // self.sub_s)

    async def reserve(self, want: int, limit: int, back: tuple[int, int] | None = None) -> Grant:
        """Reserve up to ``want`` calls under ``limit``, first giving back ``back``
        (sub-window, calls) reserved earlier and not spent. Raises what the database
        raised."""
        now = self.clock()
        back_slot, back_calls = back or (0, 0)
        params = {
            "name": self.name,
            "slot": int(now // self.sub_s),
            "first": want if want <= limit else 0,
            "want": want,
            "limit": limit,
            "back": back_calls,
            "back_slot": back_slot,
        }
        async with self._sessions() as session:
            # One statement, atomic on its own: no BEGIN and COMMIT round trips around it.
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            row = (await session.execute(RESERVE, params)).one()
            if not row.granted and want > 1:
                # The block does not fit: one call may (what was given back stays so).
                params.update(want=1, first=1, back=0)
                row = (await session.execute(RESERVE, params)).one()
        slot, *cells, granted, held_until = row
        wait = 0.0
        if not granted:
            wait = self._wait_s(now, int(slot), [int(c) for c in cells], limit)
        return Grant(int(granted), int(slot), wait, float(held_until) - now)

    def _wait_s(self, now: float, slot: int, cells: list[int], limit: int) -> float:
        """Seconds until the oldest sub-windows leave the window with room for one call."""
        left = sum(cells)
        for back in range(SUBWINDOWS, -1, -1):
            left -= cells[back]
            if left <= limit - 1:
                # Sub-window ``slot - back`` stops overlapping the window once the
                # window's start passes its end.
                leaves = (slot - back + 1 + SUBWINDOWS) * self.sub_s
                return max(leaves - now, MIN_WAIT_S)
        return MIN_WAIT_S

    async def hold(self, seconds: float) -> None:
        """Every process holds its calls for ``seconds`` from now (or longer, if told so)."""
        now = self.clock()
        params = {"name": self.name, "slot": int(now // self.sub_s), "until": now + seconds}
        async with self._sessions() as session:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            await session.execute(HOLD, params)
