"""Workers AI behind the ports: bge embeddings, bge reranking and a streamed Llama answer.

Every call goes through ``CloudflareClient`` and is costed through ``on_cost``: from the
response's ``usage`` when it has one (chat), otherwise from tokens we count ourselves
(embeddings and reranking return no usage), flagged ``estimated``. The chat model lives
in ``chat`` (this module would outgrow its size otherwise) and is re-exported here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from rag.backends.cloudflare.chat import WorkersAIChat
from rag.backends.cloudflare.client import CloudflareClient
from rag.backends.cloudflare.neurons import TIMED_OUT, CallKind, CostSink, PriceTable
from rag.backends.cloudflare.rerank_scale import Scale, detect, relevance
from rag.backends.local.tokenizer import WordPieceTokenizer
from rag.config import CloudflareSettings
from rag.domain import Hit
from rag.errors import CloudflareError, InputError
from rag.ports import EmbedKind, Tokenizer, Vectors

MAX_TEXTS_PER_CALL = 100
BGE_MAX_TOKENS = 512
__all__ = ["WorkersAIChat", "WorkersAIEmbedder", "WorkersAIReranker", "bge_tokenizer"]
KNOWN_DIMENSIONS = {
    "@cf/baai/bge-small-en-v1.5": 384,
    "@cf/baai/bge-base-en-v1.5": 768,
    "@cf/baai/bge-large-en-v1.5": 1024,
}


def bge_tokenizer() -> WordPieceTokenizer:
    """Counts tokens as bge-*-en-v1.5 sees them: the uncased BERT WordPiece vocabulary,
    the same file all-MiniLM-L6-v2 uses, with bge's 512-token limit."""
    return WordPieceTokenizer(max_tokens=BGE_MAX_TOKENS)


def _rough_tokens(text: str) -> int:
    # Without the model's tokenizer: English averages about four characters per token.
    return (len(text) + 3) // 4


class _Costed:
    """Reports each call's cost to the sink, if there is one."""

    def __init__(self, prices: PriceTable, on_cost: CostSink | None) -> None:
        self._prices = prices
        self._on_cost = on_cost

    def _report(
        self,
        model: str,
        kind: CallKind,
        input_tokens: int,
        output_tokens: int = 0,
        neurons: float | None = None,
        estimated: bool = True,
    ) -> None:
        if self._on_cost is not None:
            cost = self._prices.cost(model, kind, input_tokens, output_tokens, neurons, estimated)
            self._on_cost(cost)

    async def _billed_call(
        self,
        client: CloudflareClient,
        path: str,
        body: dict[str, Any],
        kind: CallKind,
        model: str,
        input_tokens: int,
    ) -> Any:
        """``client.call``, re-sent after a read timeout like any retryable failure, but
        with each timed-out attempt in the ledger: Cloudflare may have run and billed it."""

        def possible_charge() -> None:
            self._report(model, TIMED_OUT[kind], input_tokens)

        return await client.call("POST", path, json=body, on_sent_timeout=possible_charge)


class WorkersAIEmbedder(_Costed):
    """``Embedder`` over a Workers AI text-embedding model (bge-base-en-v1.5: 768-d).

    Texts are cut to the model's token limit here, counted with its own tokenizer, so
    nothing is silently truncated upstream; batches of at most 100 texts run
    ``embed_concurrency`` at a time. bge v1.5 needs no query instruction (BAAI's model
    card), so queries and passages are embedded alike.
    """

    def __init__(
        self,
        client: CloudflareClient,
        settings: CloudflareSettings,
        tokenizer: Tokenizer,
        prices: PriceTable,
        on_cost: CostSink | None = None,
    ) -> None:
        super().__init__(prices, on_cost)
        prices.require(settings.embed_model)
        self.model_id = settings.embed_model
        # 0 until the first response for a model we do not know the size of.
        self.dimension = KNOWN_DIMENSIONS.get(self.model_id, 0)
        self.tokenizer = tokenizer
        self.pooling = settings.embed_pooling
        self._client = client
        self._path = f"/ai/run/{self.model_id}"
        # Shared by every embed() call on this instance: the bound is on requests in
        # flight against the rate limit, not per caller.
        self._in_flight = asyncio.Semaphore(max(1, settings.embed_concurrency))

    def fit(self, text: str) -> tuple[str, int]:
        """``text`` cut at a token boundary to the model's limit, and its token count
        (special tokens included, as the model sees them)."""
        budget = self.tokenizer.max_tokens - self.tokenizer.special_tokens
        offsets = self.tokenizer.offsets(text)
        if len(offsets) > budget:
            text = text[: offsets[budget - 1][1]]
            offsets = offsets[:budget]
        return text, len(offsets) + self.tokenizer.special_tokens

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        """L2-normalised float32 vectors, one row per text, in order."""
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        if any(not text for text in texts):
            raise InputError("cannot embed an empty text")
        fitted = [self.fit(text) for text in texts]
        batches = [
            fitted[start : start + MAX_TEXTS_PER_CALL]
            for start in range(0, len(fitted), MAX_TEXTS_PER_CALL)
        ]
        tasks = [asyncio.ensure_future(self._embed_batch(batch)) for batch in batches]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            # One failed batch fails the call: stop spending on the others.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return np.concatenate(parts)

    async def _embed_batch(self, batch: list[tuple[str, int]]) -> Vectors:
        texts = [text for text, _ in batch]
        async with self._in_flight:
            tokens = sum(count for _, count in batch)
            body = {"text": texts, "pooling": self.pooling}
            result = await self._billed_call(
                self._client, self._path, body, "embed", self.model_id, tokens
            )
        vectors = self._vectors(result, len(texts))
        self._report(self.model_id, "embed", tokens)
        return vectors

    def _vectors(self, result: Any, expected: int) -> Vectors:
        data = result.get("data") if isinstance(result, dict) else None
        try:
            matrix = np.asarray(data, dtype=np.float32)
        except (TypeError, ValueError):
            matrix = np.empty((0,), dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != expected:
            raise CloudflareError(
                f"{self.model_id}: expected {expected} vectors, got shape {matrix.shape}"
            )
        pooling = result.get("pooling", self.pooling)
        if pooling != self.pooling:
            # mean and cls vectors must never share an index.
            raise CloudflareError(
                f"{self.model_id}: asked for {self.pooling} pooling, got {pooling}"
            )
        if self.dimension == 0:
            self.dimension = int(matrix.shape[1])
        elif matrix.shape[1] != self.dimension:
            raise CloudflareError(
                f"{self.model_id}: returned {matrix.shape[1]}-d vectors, expected {self.dimension}"
            )
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        unit: Vectors = (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
        return unit


class WorkersAIReranker(_Costed):
    """``Reranker`` over bge-reranker-base: a cross-encoder scores each (query, chunk).

    ``score`` is the model's raw score; ``relevance`` is that score as a probability in
    [0, 1] (its sigmoid when the scores are logits, ``rerank_scale``), and is what the
    evidence gate compares with ``min_relevance`` (``[cloudflare] min_rerank_score``).
    """

    def __init__(
        self,
        client: CloudflareClient,
        settings: CloudflareSettings,
        prices: PriceTable,
        tokenizer: Tokenizer | None = None,
        on_cost: CostSink | None = None,
    ) -> None:
        super().__init__(prices, on_cost)
        prices.require(settings.rerank_model)
        self.name = settings.rerank_model
        self.min_relevance = settings.min_rerank_score
        self._client = client
        self._tokenizer = tokenizer
        self._path = f"/ai/run/{self.name}"
        self.scale_setting = settings.rerank_scores
        # What "auto" last detected: the fallback for a response too small to tell.
        self.scale: Scale = "logits" if settings.rerank_scores == "auto" else settings.rerank_scores

    async def rerank(self, query: str, candidates: Sequence[Hit], k: int) -> list[Hit]:
        """The best ``k`` candidates in final order, ``score`` and ``relevance`` set."""
        if not query.strip():
            raise InputError("cannot rerank for an empty query")
        # The API refuses empty contexts; an empty chunk cannot be evidence anyway.
        usable = [i for i, hit in enumerate(candidates) if hit.text.strip()]
        if not usable or k < 1:
            return []
        body = {
            "query": query,
            "contexts": [{"text": candidates[i].text} for i in usable],
            "top_k": min(k, len(usable)),
        }
        tokens = self._pair_tokens(query, [candidates[i] for i in usable])
        result = await self._billed_call(
            self._client, self._path, body, "rerank", self.name, tokens
        )
        items = result.get("response") if isinstance(result, dict) else None
        if not isinstance(items, list):
            raise CloudflareError(f"{self.name}: no 'response' list in {str(result)[:200]}")
        scored = []
        for item in items:
            index = item.get("id") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < len(usable):
                raise CloudflareError(f"{self.name}: result id {index!r} names no context")
            scored.append((candidates[usable[index]], float(item["score"])))
        if self.scale_setting == "auto":
            self.scale = detect([score for _, score in scored], self.scale)
        ranked = [
            msgspec.structs.replace(hit, score=score, relevance=relevance(score, self.scale))
            for hit, score in scored
        ]
        ranked.sort(key=lambda hit: hit.score, reverse=True)
        self._report(self.name, "rerank", tokens)
        return ranked[:k]

    def _pair_tokens(self, query: str, hits: Sequence[Hit]) -> int:
        # A cross-encoder reads the query once per context: count every pair.
        count: Callable[[str], int] = (
            self._tokenizer.count if self._tokenizer is not None else _rough_tokens
        )
        special = self._tokenizer.special_tokens + 1 if self._tokenizer is not None else 3
        query_tokens = count(query)
        return sum(query_tokens + count(hit.text) + special for hit in hits)
