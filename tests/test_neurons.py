"""Neuron and dollar arithmetic against hand-computed figures from the published rates.

Rates (docs/cloudflare.md#neuron-prices): bge-base 6,058 neurons per million input
tokens, reranker 283, llama-3.1-8b-instruct-fast 4,119 in / 34,868 out,
llama-3.3-70b-fp8-fast 26,668 / 204,805; $0.011 per 1,000 neurons.
"""

from __future__ import annotations

import dataclasses
import logging

import msgspec
import pytest

from rag.backends.cloudflare.neurons import CallCost, PriceTable
from rag.config import PriceSettings
from rag.errors import ConfigError

BGE = "@cf/baai/bge-base-en-v1.5"
RERANK = "@cf/baai/bge-reranker-base"
LLAMA_8B = "@cf/meta/llama-3.1-8b-instruct-fast"
LLAMA_70B = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"


@pytest.fixture
def table() -> PriceTable:
    return PriceTable(PriceSettings())


def test_thousand_tokens_on_bge_base(table: PriceTable) -> None:
    # 1,000 x 6,058 / 1e6 = 6.058 neurons; x $0.011 / 1,000 = $0.000066638
    cost = table.cost(BGE, "embed", 1000, 0, estimated=True)
    assert cost.neurons == pytest.approx(6.058)
    assert cost.usd == pytest.approx(0.000066638)
    assert round(cost.usd, 7) == 0.0000666
    assert (cost.provider, cost.model, cost.kind, cost.estimated) == (
        "workers-ai",
        BGE,
        "embed",
        True,
    )


def test_reranker(table: PriceTable) -> None:
    # 40 pairs of ~250 tokens = 10,000 tokens: 10,000 x 283 / 1e6 = 2.83 neurons
    cost = table.cost(RERANK, "rerank", 10_000, 0)
    assert cost.neurons == pytest.approx(2.83)
    assert cost.usd == pytest.approx(0.00003113)


def test_llama_8b_input_and_output(table: PriceTable) -> None:
    # 1,000 x 4,119 / 1e6 + 500 x 34,868 / 1e6 = 4.119 + 17.434 = 21.553 neurons
    cost = table.cost(LLAMA_8B, "chat", 1000, 500)
    assert cost.neurons == pytest.approx(21.553)
    assert cost.usd == pytest.approx(0.000237083)
    assert (cost.input_tokens, cost.output_tokens, cost.estimated) == (1000, 500, False)


def test_llama_70b(table: PriceTable) -> None:
    # 2,000 x 26,668 / 1e6 + 300 x 204,805 / 1e6 = 53.336 + 61.4415 = 114.7775 neurons
    cost = table.cost(LLAMA_70B, "chat", 2000, 300)
    assert cost.neurons == pytest.approx(114.7775)
    assert cost.usd == pytest.approx(0.0012625525)


def test_a_returned_neuron_figure_wins_over_the_rates(table: PriceTable) -> None:
    cost = table.cost(LLAMA_8B, "chat", 1000, 500, neurons=30.0)
    assert cost.neurons == 30.0
    assert cost.usd == pytest.approx(0.00033)


def test_free_daily_allocation_in_dollars(table: PriceTable) -> None:
    settings = PriceSettings()
    # 10,000 neurons at list price is $0.11: what a free day is worth.
    assert settings.free_neurons_per_day * table.usd_per_1000_neurons / 1000 == pytest.approx(0.11)


def test_prices_come_from_settings() -> None:
    settings = msgspec.convert(
        {"usd_per_1000_neurons": 0.02, "models": {"m": {"input": 1000, "output": 2000}}},
        PriceSettings,
    )
    cost = PriceTable(settings).cost("m", "chat", 500, 250)
    # 500 x 1,000 / 1e6 + 250 x 2,000 / 1e6 = 0.5 + 0.5 = 1 neuron; x $0.02 / 1,000
    assert cost.neurons == pytest.approx(1.0)
    assert cost.usd == pytest.approx(0.00002)


def test_unknown_model_costs_nothing_and_warns_once(
    table: PriceTable, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="rag.backends.cloudflare.neurons"):
        first = table.cost("@cf/some/new-model", "chat", 1000, 1000)
        table.cost("@cf/some/new-model", "chat", 1000, 1000)
    assert first.neurons == 0.0 and first.usd == 0.0
    warnings = [r for r in caplog.records if "@cf/some/new-model" in r.getMessage()]
    assert len(warnings) == 1


def test_unknown_model_with_returned_neurons_is_still_costed(table: PriceTable) -> None:
    assert table.cost("@cf/some/new-model", "chat", 10, 10, neurons=5.0).neurons == 5.0


def test_require_names_the_model_and_the_setting(table: PriceTable) -> None:
    table.require(BGE)
    with pytest.raises(ConfigError) as info:
        table.require("@cf/some/new-model")
    assert "@cf/some/new-model" in str(info.value)
    assert "prices.models" in str(info.value)


def test_call_cost_is_frozen(table: PriceTable) -> None:
    cost: CallCost = table.cost(BGE, "embed", 1, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cost.neurons = 1.0  # type: ignore[misc]
