"""Workers AI's Markdown conversion behind ``DocumentConverter``: one file per call.

``POST /accounts/{account_id}/ai/tomarkdown`` takes the files as multipart ``files``
parts and answers, in the usual envelope, a list with one entry per file: ``name``,
``mimeType``, ``format`` (``markdown`` or ``error``) and then ``tokens`` and ``data``, or
``error`` (docs/cloudflare.md#markdown-conversion). A file's own ``error`` is a
``ConversionFailed``; a failed call is the client's ``CloudflareError``, retried as any
other (the route is not a model run, so it never goes through AI Gateway).

One file per call, not a batch: a file's failure, a retry or a timeout then concerns
that file alone, and the ingest runner reads files one after the other anyway.

Cost: Cloudflare calls the conversion free for most formats, while an image is
described by two Workers AI models whose neurons the answer does not report. Each
conversion goes in the ledger as a "convert" call with the tokens the answer gives and
0 neurons, flagged estimated, so it is counted and visible, not priced.
"""

from __future__ import annotations

from typing import Any

from rag.backends.cloudflare.client import CloudflareClient
from rag.backends.cloudflare.neurons import TIMED_OUT, CallKind, CostSink, PriceTable
from rag.domain import Converted
from rag.errors import ConversionFailed

PATH = "/ai/tomarkdown"
MODEL = "toMarkdown"
"""The ledger's model name for conversions (no ``@cf/`` model id is named by the API)."""


class WorkersAIConverter:
    """``DocumentConverter`` over ``/ai/tomarkdown``, through the one ``CloudflareClient``."""

    name = "workers-ai"

    def __init__(
        self, client: CloudflareClient, prices: PriceTable, on_cost: CostSink | None = None
    ) -> None:
        self._client = client
        self._prices = prices
        self._on_cost = on_cost

    def _report(self, kind: CallKind, tokens: int) -> None:
        if self._on_cost is not None:
            self._on_cost(self._prices.cost(MODEL, kind, 0, tokens, 0.0, estimated=True))

    async def convert(self, name: str, data: bytes, media_type: str) -> Converted:
        """The file's Markdown; ``ConversionFailed`` when Cloudflare could not convert it."""
        result = await self._client.call(
            "POST",
            PATH,
            files=[("files", (name, data, media_type))],
            on_sent_timeout=lambda: self._report(TIMED_OUT["convert"], 0),
        )
        entry = _entry(result, name)
        if entry.get("format") != "markdown":
            detail = entry.get("error") or f"format {entry.get('format')!r}"
            raise ConversionFailed(f"Workers AI could not convert {name}: {str(detail)[:200]}")
        markdown = entry.get("data")
        if not isinstance(markdown, str):
            raise ConversionFailed(f"Workers AI returned no Markdown for {name}")
        tokens = _tokens(entry.get("tokens"))
        self._report("convert", tokens)
        return Converted(markdown=markdown, tokens=tokens)


def _entry(result: Any, name: str) -> dict[str, Any]:
    """The one result entry for the one file sent."""
    if not isinstance(result, list) or len(result) != 1 or not isinstance(result[0], dict):
        raise ConversionFailed(
            f"Workers AI answered the conversion of {name} with an unexpected result"
        )
    entry: dict[str, Any] = result[0]
    return entry


def _tokens(value: Any) -> int:
    # The docs say a number; Cloudflare's Go SDK types it as a string. Either will do.
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
