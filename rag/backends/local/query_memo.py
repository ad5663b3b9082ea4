"""The question's vector, computed once per answer on the local backend.

Retrieval embeds the question, and the extractive answerer needs the very same vector
to score its units: embedding it twice cost 9 ms of the 30 ms of CPU an uncached answer
took on 2 cores (profiled over corpus/qa.jsonl). This wrapper remembers the last few
single-question embeddings, so the answerer's call is served from memory.

Only single "query" texts are remembered, and only a few (``SIZE``): enough for every
answer in flight to find its own question (``[server] max_concurrent_answers`` is 8 by
default), too few to stand in for the answer cache. Passages pass straight through.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from rag.ports import Embedder, EmbedKind, Tokenizer, Vectors

SIZE = 64


class QueryMemo:
    """An ``Embedder`` that serves a recently embedded question from memory."""

    def __init__(self, inner: Embedder, size: int = SIZE) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self.tokenizer: Tokenizer = inner.tokenizer
        self.size = size
        self._recent: OrderedDict[str, Vectors] = OrderedDict()

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        if kind != "query" or len(texts) != 1:
            return await self.inner.embed(texts, kind)
        text = texts[0]
        found = self._recent.get(text)
        if found is not None:
            self._recent.move_to_end(text)
            return found.copy()
        vectors = await self.inner.embed(texts, kind)
        self._recent[text] = vectors.copy()
        while len(self._recent) > self.size:
            self._recent.popitem(last=False)
        return vectors
