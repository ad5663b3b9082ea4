"""What a Workers AI call cost, in neurons and dollars, from the configured price table.

Workers AI bills neurons, not tokens: ``neurons = in_tok * rate_in / 1e6 + out_tok *
rate_out / 1e6`` with the per-model rates of ``[prices.models]``
(docs/cloudflare.md#neuron-prices), and ``usd = neurons * usd_per_1000_neurons / 1000``
at the list price. The day's free allocation is the usage ledger's business, not this
module's: it reports every call at full price and lets the ledger subtract what was free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rag.config import PriceSettings
from rag.errors import ConfigError

log = logging.getLogger(__name__)

CallKind = Literal[
    "embed", "rerank", "chat", "convert", "embed-timedout", "rerank-timedout", "convert-timedout"
]
"""``convert``: a Markdown conversion (``tomarkdown.py``).
``*-timedout``: an attempt whose reply timed out after its request was sent (then
re-sent, or given up on); Cloudflare may have billed it, so the ledger counts it as a
possible charge, at the price of the call."""
TIMED_OUT: dict[CallKind, CallKind] = {
    "embed": "embed-timedout",
    "rerank": "rerank-timedout",
    "convert": "convert-timedout",
}
PROVIDER = "workers-ai"


@dataclass(frozen=True)
class CallCost:
    """Tokens, neurons and dollars of one model call; ``estimated`` when we counted tokens."""

    provider: str
    model: str
    kind: CallKind
    input_tokens: int
    output_tokens: int
    neurons: float
    usd: float
    estimated: bool


CostSink = Callable[[CallCost], None]
"""Receives every call's cost as it completes (the usage ledger, an answer's tally)."""


class PriceTable:
    """Per-model neuron rates and the dollar price of a neuron.

    A model missing from the table costs 0 neurons, with one warning per model id per
    process: that only happens for a model the caller did not ``require`` (the Workers
    AI classes do at construction, so a configured model without a price fails start-up
    rather than running unmetered past the budget).
    """

    def __init__(self, prices: PriceSettings, provider: str = PROVIDER) -> None:
        self.provider = provider
        self.usd_per_1000_neurons = prices.usd_per_1000_neurons
        self._rates = dict(prices.models)
        self._warned: set[str] = set()

    def require(self, model: str) -> None:
        """Fail with a clear message unless ``model`` has a price."""
        if model not in self._rates:
            raise ConfigError(
                f"no neuron price for {model!r}: add [prices.models.{model!r}] with input "
                "(and, for chat models, output) neurons per million tokens to config.toml"
            )

    def cost(
        self,
        model: str,
        kind: CallKind,
        input_tokens: int,
        output_tokens: int,
        neurons: float | None = None,
        estimated: bool = False,
    ) -> CallCost:
        """The call's cost; a ``neurons`` figure Cloudflare returned wins over the rates."""
        if neurons is None:
            rate = self._rates.get(model)
            if rate is None:
                if model not in self._warned:
                    self._warned.add(model)
                    log.warning("no neuron price for %s: its calls are counted as 0", model)
                neurons = 0.0
            else:
                neurons = (input_tokens * rate.input + output_tokens * rate.output) / 1e6
        usd = neurons * self.usd_per_1000_neurons / 1000
        return CallCost(
            provider=self.provider,
            model=model,
            kind=kind,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            neurons=neurons,
            usd=usd,
            estimated=estimated,
        )
