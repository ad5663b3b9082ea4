"""The usage ledger: neuron arithmetic, per-answer meters, per-UTC-day rollup, budget, report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import make_settings
from sqlalchemy import select

from rag.backends.cloudflare.neurons import PriceTable
from rag.config import BudgetSettings, PriceSettings
from rag.db.engine import create_engine, session_factory, upgrade
from rag.db.tables import UsageCall
from rag.domain import Usage
from rag.usage import FLUSH_EVERY, Ledger, projected_chat_neurons

PRICES = PriceTable(PriceSettings())
LLAMA = "@cf/meta/llama-3.1-8b-instruct-fast"
BGE = "@cf/baai/bge-base-en-v1.5"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Any]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'u.db'}"
    await upgrade(url)
    engine = create_engine(url)
    yield session_factory(engine)
    await engine.dispose()


def ledger_on(sessions: Any, clock: Clock, cap: float = 0.0) -> Ledger:
    return Ledger(sessions, PriceSettings(), BudgetSettings(daily_neurons=cap), clock)


async def stored(sessions: Any) -> list[UsageCall]:
    async with sessions() as session:
        return list((await session.scalars(select(UsageCall).order_by(UsageCall.id))).all())


def test_neurons_and_dollars_follow_the_published_rates() -> None:
    chat = PRICES.cost(LLAMA, "chat", 1000, 200)
    assert chat.neurons == pytest.approx(1000 * 4119 / 1e6 + 200 * 34868 / 1e6)  # 11.0926
    assert chat.usd == pytest.approx(11.0926 * 0.011 / 1000)
    assert PRICES.cost(BGE, "embed", 1_000_000, 0).neurons == pytest.approx(6058)
    # A figure Cloudflare returned wins over the rates.
    assert PRICES.cost(LLAMA, "chat", 1000, 200, neurons=3.5).neurons == 3.5


async def test_a_meter_sums_one_answer_and_rows_wait_for_flush(sessions: Any) -> None:
    ledger = ledger_on(sessions, Clock(datetime(2026, 3, 1, 12, tzinfo=UTC)))
    with ledger.meter("ask", "trace-1") as meter:
        ledger(PRICES.cost(BGE, "embed", 12, 0, estimated=True))
        ledger(PRICES.cost("@cf/baai/bge-reranker-base", "rerank", 4000, 0, estimated=True))
        ledger(PRICES.cost(LLAMA, "chat", 1000, 200))
    ledger(PRICES.cost(BGE, "embed", 50, 0))  # outside the answer: not in its meter
    expected = 12 * 6058 / 1e6 + 4000 * 283 / 1e6 + 11.0926
    usage = meter.usage()
    assert usage.neurons == pytest.approx(expected, abs=1e-6)
    assert usage.usd == pytest.approx(expected * 0.011 / 1000, abs=1e-8)
    assert (usage.input_tokens, usage.output_tokens) == (12 + 4000 + 1000, 200)
    assert await stored(sessions) == []  # nothing written while the answer streamed
    await ledger.flush()
    rows = await stored(sessions)
    assert [(r.kind, r.purpose, r.trace_id) for r in rows] == [
        ("embed", "ask", "trace-1"),
        ("rerank", "ask", "trace-1"),
        ("chat", "ask", "trace-1"),
        ("embed", "other", None),
    ]
    assert rows[0].estimated and not rows[2].estimated and rows[0].day == "2026-03-01"


async def test_concurrent_answers_keep_their_own_meters(sessions: Any) -> None:
    ledger = ledger_on(sessions, Clock(datetime(2026, 3, 1, tzinfo=UTC)))

    async def answer(tokens: int) -> Usage:
        with ledger.meter("ask") as meter:
            for _ in range(3):
                await asyncio.sleep(0)
                ledger(PRICES.cost(LLAMA, "chat", tokens, 0))
            return meter.usage()

    first, second = await asyncio.gather(answer(1000), answer(10))
    assert (first.input_tokens, second.input_tokens) == (3000, 30)


async def test_days_roll_over_at_utc_midnight(sessions: Any) -> None:
    # 23:30 in New York on 1 March is 04:30 UTC on 2 March: the UTC day counts.
    clock = Clock(datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC))
    ledger = ledger_on(sessions, clock)
    ledger(PRICES.cost(LLAMA, "chat", 0, 0, neurons=100.0))
    clock.now = datetime(2026, 3, 2, 0, 0, 0, tzinfo=UTC)
    ledger(PRICES.cost(LLAMA, "chat", 0, 0, neurons=7.0))
    clock.now = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    ledger(PRICES.cost(LLAMA, "chat", 0, 0, neurons=0.5))
    assert ledger.spent_now() == pytest.approx(7.5)
    assert await ledger.spent_today() == pytest.approx(7.5)
    clock.now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    days = await ledger.daily(3)
    assert [d["day"] for d in days] == ["2026-03-02", "2026-03-01", "2026-02-28"]
    assert [d["neurons"] for d in days] == [7.5, 100.0, 0.0]
    assert [d["calls"] for d in days] == [2, 1, 0]
    assert days[0]["free_neurons_left"] == pytest.approx(10000 - 7.5)
    assert days[0]["models"][0]["model"] == LLAMA


async def test_free_allocation_and_billable_dollars(sessions: Any) -> None:
    ledger = ledger_on(sessions, Clock(datetime(2026, 3, 1, tzinfo=UTC)))
    ledger(PRICES.cost(LLAMA, "chat", 0, 0, neurons=12_000.0))
    (day,) = await ledger.daily(1)
    assert day["usd"] == pytest.approx(0.132)  # list price of every neuron
    assert day["billable_usd"] == pytest.approx(2000 * 0.011 / 1000)
    assert day["free_neurons_left"] == 0.0


async def test_spent_today_reads_other_processes_rows(sessions: Any) -> None:
    clock = Clock(datetime(2026, 3, 1, 8, tzinfo=UTC))
    other = ledger_on(sessions, clock)
    other(PRICES.cost(BGE, "embed", 0, 0, neurons=40.0))
    await other.flush()
    mine = ledger_on(sessions, clock, cap=50)
    assert mine.spent_now() == 0.0  # not read yet
    assert await mine.refresh() == pytest.approx(40.0)
    mine(PRICES.cost(BGE, "embed", 0, 0, neurons=5.0))  # not flushed, still counted
    assert await mine.spent_today() == pytest.approx(45.0)


async def test_budget_check_counts_what_the_next_call_could_cost(sessions: Any) -> None:
    ledger = ledger_on(sessions, Clock(datetime(2026, 3, 1, tzinfo=UTC)), cap=100)
    ledger(PRICES.cost(LLAMA, "chat", 0, 0, neurons=90.0))
    assert ledger.over_budget() is None
    assert ledger.over_budget(projected=10.0) is None
    reason = ledger.over_budget(projected=10.5)
    assert reason is not None and "90.0 of 100 neurons" in reason and "10.5 more" in reason
    ledger(PRICES.cost(LLAMA, "chat", 0, 0, neurons=10.0))
    assert ledger.over_budget() is not None
    assert ledger_on(sessions, Clock(datetime(2026, 3, 1, tzinfo=UTC))).over_budget(1e9) is None


def test_projection_of_an_answer() -> None:
    prices = PriceSettings()
    projected = projected_chat_neurons(prices, LLAMA, prompt_chars=4000, max_tokens=512)
    assert projected == pytest.approx((1200 * 4119 + 512 * 34868) / 1e6)
    assert projected_chat_neurons(prices, "unknown-model", 4000, 512) == 0.0


async def test_long_runs_flush_in_the_background(sessions: Any) -> None:
    ledger = ledger_on(sessions, Clock(datetime(2026, 3, 1, tzinfo=UTC)))
    with ledger.meter("ingest") as meter:
        for _ in range(FLUSH_EVERY):
            ledger(PRICES.cost(BGE, "embed", 100, 0))
        # Written by a background task, without anyone awaiting a flush.
        for _ in range(500):
            if await stored(sessions):
                break
            await asyncio.sleep(0.01)
        assert len(await stored(sessions)) == FLUSH_EVERY
    await ledger.close()
    assert meter.usage().input_tokens == 100 * FLUSH_EVERY


def spent(tmp_path: Path, config_text: str, calls: int, tokens: tuple[int, int]) -> Path:
    """A config file whose database's ledger holds ``calls`` chat calls of ``tokens`` today."""
    settings = make_settings(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{settings.data_dir}"\n{config_text}')

    async def spend() -> None:
        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        ledger = Ledger(session_factory(engine), PriceSettings(), BudgetSettings())
        for _ in range(calls):
            ledger(PRICES.cost(LLAMA, "chat", *tokens))
        await ledger.flush()
        await engine.dispose()

    asyncio.run(spend())
    return config


def test_rag_usage_prints_the_days_as_json(tmp_path: Path) -> None:
    from rag.cli import main

    config = spent(tmp_path, "[budget]\ndaily_neurons = 500\n", 1, (1000, 200))
    result = CliRunner().invoke(main, ["--config", str(config), "usage", "--days", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["days"]) == 2
    assert report["days"][0]["neurons"] == pytest.approx(11.093, abs=1e-3)
    assert report["budget"]["daily_neurons"] == 500
    assert report["budget"]["remaining_today"] == pytest.approx(500 - 11.0926, abs=1e-3)
    table = CliRunner().invoke(main, ["--config", str(config), "usage"])
    assert table.exit_code == 0 and "neurons spent" in table.output


def test_rag_usage_fits_80_columns(tmp_path: Path) -> None:
    from rag.cli import main

    config = spent(tmp_path, "", 1200, (100_000, 20_000))
    result = CliRunner().invoke(
        main, ["--config", str(config), "usage", "--days", "3"], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    assert " ".join(lines[0].split()) == (
        "UTC day calls tok in tok out neurons USD billable free left"
    )
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    assert [line.split()[0] for line in lines[2:5]] == days  # whole, oldest first
    assert lines[4].split()[1:4] == ["1,200", "120.0M", "24.0M"]
