"""The usage ledger: every costed model call, per answer, per ingest run and per UTC day.

Model backends report each call through a ``CostSink`` (``Ledger.__call__``), which is
synchronous and never touches the database: rows wait in memory and are written by
``flush`` once an answer is done (or every ``FLUSH_EVERY`` calls during an ingest), so a
streaming answer never holds a session. A ``Meter`` opened around one answer or one
ingest run (a context variable, so concurrent answers never mix) sums what that unit of
work cost; the ``done`` event's ``usage`` is its total.

Days are UTC dates: Workers AI's free allocation resets at 00:00 UTC, and the budget
(``[budget] daily_neurons``) counts the same day.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from rag.config import BudgetSettings, PriceSettings
from rag.db.tables import UsageCall
from rag.domain import Usage
from rag.errors import RagError
from rag.ports import Cost

log = logging.getLogger(__name__)

PROMPT_OVERHEAD_TOKENS = 200
"""Instructions and source numbering around the question and sources, over-estimated."""

FLUSH_EVERY = 50
"""Pending rows that make the ledger write in the background (long ingest runs)."""

MAX_PENDING = 10_000
"""Unwritten rows kept while the database refuses writes; older ones are dropped."""


class BudgetExhausted(RagError):
    """The day's neuron budget is spent; raised where no cheaper fallback exists (ingest)."""

    status_code = 429
    code = "budget_exhausted"


@dataclass
class Meter:
    """The running cost of one answer or one ingest run."""

    purpose: str
    trace_id: str | None = None
    calls: list[Cost] = field(default_factory=list)

    def usage(self) -> Usage:
        return Usage(
            neurons=round(sum(c.neurons for c in self.calls), 6),
            usd=round(sum(c.usd for c in self.calls), 8),
            input_tokens=sum(c.input_tokens for c in self.calls),
            output_tokens=sum(c.output_tokens for c in self.calls),
        )


_meter: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("rag_meter", default=None)


def current_meter() -> Meter | None:
    """The meter of the answer or ingest run this code is part of, if any."""
    return _meter.get()


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


class Ledger:
    """A ``CostSink`` that buffers ``UsageCall`` rows and sums them per meter and per day."""

    def __init__(
        self,
        sessions: Any,
        prices: PriceSettings,
        budget: BudgetSettings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.sessions = sessions
        self.prices = prices
        self.budget = budget
        self.clock = clock
        self._pending: list[dict[str, Any]] = []
        # Neurons per UTC day as last read from the database plus everything recorded
        # since, so the budget check before a generation needs no database read.
        self._spent: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self.observers: list[Callable[[Cost], None]] = []
        """Called with every costed call (the web app's metrics count tokens and neurons)."""

    def __call__(self, cost: Cost) -> None:
        meter = _meter.get()
        if meter is not None:
            meter.calls.append(cost)
        moment = self.clock()
        day = utc_day(moment)
        self._spent[day] = self._spent.get(day, 0.0) + cost.neurons
        self._pending.append(
            {
                "at": moment.astimezone(UTC).replace(tzinfo=None),
                "day": day,
                "provider": cost.provider,
                "model": cost.model,
                "kind": cost.kind,
                "purpose": meter.purpose if meter is not None else "other",
                "input_tokens": cost.input_tokens,
                "output_tokens": cost.output_tokens,
                "neurons": cost.neurons,
                "usd": cost.usd,
                "estimated": cost.estimated,
                "trace_id": meter.trace_id if meter is not None else None,
            }
        )
        for observe in self.observers:
            observe(cost)
        if len(self._pending) >= FLUSH_EVERY:
            self._flush_soon()

    @contextmanager
    def meter(self, purpose: str, trace_id: str | None = None) -> Iterator[Meter]:
        """Attribute every cost reported inside this block (and tasks it starts) to one meter."""
        meter = Meter(purpose, trace_id)
        token = _meter.set(meter)
        try:
            yield meter
        finally:
            try:
                _meter.reset(token)
            except ValueError:
                # An answer generator finalised from another task: that context is not ours.
                _meter.set(None)

    async def flush(self, sessions: Any = None) -> None:
        """Write the buffered rows in one short transaction (through ``sessions`` when
        given: the service's quick-to-give-up engine, around an answer)."""
        async with self._lock:
            rows, self._pending = self._pending, []
            if not rows:
                return
            try:
                async with (sessions or self.sessions)() as session, session.begin():
                    await session.execute(insert(UsageCall), rows)
            except BaseException:
                self._pending[:0] = rows  # keep them for the next flush
                if (extra := len(self._pending) - MAX_PENDING) > 0:
                    # A database that stays unwritable must not grow the buffer for
                    # ever; the day's spend in memory (the budget) keeps these calls.
                    del self._pending[:extra]
                    log.warning("usage ledger: %d unwritten rows dropped, the oldest", extra)
                raise

    async def flush_quietly(self) -> None:
        """``flush`` for ``finally`` blocks: an error or a cancellation is unwinding, and
        a failed write must not replace it (the rows stay buffered for the next flush)."""
        try:
            await self.flush()
        except Exception:
            log.exception("writing the usage ledger failed; the rows stay buffered")

    async def close(self, *, quietly: bool = False) -> None:
        if self._background is not None:
            await asyncio.wait({self._background})
        await (self.flush_quietly() if quietly else self.flush())

    def _flush_soon(self) -> None:
        if self._background is not None and not self._background.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._background = loop.create_task(self._flush_logged(), name="rag-ledger-flush")

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("writing the usage ledger failed; the rows stay buffered")

    async def refresh(self) -> float:
        """Today's neurons from the database plus the rows not written yet; cached for checks.

        When the read fails the figure in memory stays: the last read plus every call
        recorded since in this process. Another process's spend since then is missed,
        which is chosen over refusing every metered answer while the database is down.
        """
        today = utc_day(self.clock())
        async with self._lock:
            async with self.sessions() as session:
                stored = await session.scalar(
                    select(func.coalesce(func.sum(UsageCall.neurons), 0.0)).where(
                        UsageCall.day == today
                    )
                )
            pending = sum(row["neurons"] for row in self._pending if row["day"] == today)
            self._spent = {today: float(stored or 0.0) + pending}
        return self._spent[today]

    async def spent_today(self) -> float:
        return await self.refresh()

    def spent_now(self) -> float:
        """Today's neurons as of the last ``refresh`` plus what was recorded since."""
        return self._spent.get(utc_day(self.clock()), 0.0)

    def over_budget(self, projected: float = 0.0) -> str | None:
        """Why spending ``projected`` more neurons today would break the cap, or None."""
        cap = self.budget.daily_neurons
        if cap <= 0:
            return None
        spent = self.spent_now()
        if spent < cap and spent + projected <= cap:
            return None
        return f"daily neuron budget spent: {spent:,.1f} of {cap:,.0f} neurons used today (UTC)" + (
            f", this call could cost {projected:,.1f} more" if projected else ""
        )

    async def daily(self, days: int) -> list[dict[str, Any]]:
        """One row per UTC day, newest first, with a breakdown per model and kind."""
        await self.flush()
        today = self.clock().astimezone(UTC).date()
        first = today - timedelta(days=max(days, 1) - 1)
        async with self.sessions() as session:
            result = await session.execute(
                select(
                    UsageCall.day,
                    UsageCall.model,
                    UsageCall.kind,
                    func.count(),
                    func.sum(UsageCall.input_tokens),
                    func.sum(UsageCall.output_tokens),
                    func.sum(UsageCall.neurons),
                    func.sum(UsageCall.usd),
                )
                .where(UsageCall.day >= first.isoformat())
                .group_by(UsageCall.day, UsageCall.model, UsageCall.kind)
                .order_by(UsageCall.day, UsageCall.model, UsageCall.kind)
            )
            grouped: dict[str, list[dict[str, Any]]] = {}
            for day, model, kind, calls, tokens_in, tokens_out, neurons, usd in result:
                grouped.setdefault(day, []).append(
                    {
                        "model": model,
                        "kind": kind,
                        "calls": int(calls),
                        "input_tokens": int(tokens_in or 0),
                        "output_tokens": int(tokens_out or 0),
                        "neurons": float(neurons or 0.0),
                        "usd": float(usd or 0.0),
                    }
                )
        return [self._day_row(day, grouped.get(day.isoformat(), [])) for day in _days(first, today)]

    def _day_row(self, day: date, models: list[dict[str, Any]]) -> dict[str, Any]:
        # Totals from the unrounded figures; rounding is for display only.
        neurons = sum(m["neurons"] for m in models)
        usd = sum(m["usd"] for m in models)
        free = self.prices.free_neurons_per_day
        for m in models:
            m["neurons"], m["usd"] = round(m["neurons"], 3), round(m["usd"], 6)
        return {
            "day": day.isoformat(),
            "calls": sum(m["calls"] for m in models),
            "input_tokens": sum(m["input_tokens"] for m in models),
            "output_tokens": sum(m["output_tokens"] for m in models),
            "neurons": round(neurons, 3),
            "usd": round(usd, 6),
            "free_neurons_left": round(max(free - neurons, 0.0), 3),
            # Calls are costed at list price; only what exceeds the free allocation is billed.
            "billable_usd": round(
                max(neurons - free, 0.0) * self.prices.usd_per_1000_neurons / 1000, 6
            ),
            "models": models,
        }

    async def report(self, days: int) -> dict[str, Any]:
        """What ``rag usage --json`` and ``GET /v1/usage`` return."""
        rows = await self.daily(days)
        spent = await self.refresh()
        cap = self.budget.daily_neurons
        return {
            "days": rows,
            "budget": {
                "daily_neurons": cap,
                "spent_today": round(spent, 3),
                "remaining_today": round(max(cap - spent, 0.0), 3) if cap > 0 else None,
            },
            "usd_per_1000_neurons": self.prices.usd_per_1000_neurons,
            "free_neurons_per_day": self.prices.free_neurons_per_day,
        }


def projected_chat_neurons(
    prices: PriceSettings, model: str, prompt_chars: int, max_tokens: int
) -> float:
    """The most a generation can cost: its prompt (about 4 characters a token, plus the
    instructions) and every token up to ``max_tokens``. Checked against the budget before
    the call, so an answer never crosses the cap; an unknown model projects nothing."""
    price = prices.models.get(model)
    if price is None:
        return 0.0
    prompt_tokens = prompt_chars / 4 + PROMPT_OVERHEAD_TOKENS
    return (prompt_tokens * price.input + max_tokens * price.output) / 1e6


def _days(first: date, last: date) -> Iterator[date]:
    day = last
    while day >= first:
        yield day
        day -= timedelta(days=1)
