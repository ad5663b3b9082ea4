"""Query embeddings kept on disk, so repeated runs rank from the very same vectors.

One ``.npz`` file per evaluation workdir, keyed by sha256 of model id and question:
no schema to migrate, and deleting the file is the way to start over. On Cloudflare
it also saves the embedding neurons of every re-run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.ports import Embedder, EmbedKind, Tokenizer, Vectors


class QueryVectorCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._vectors: dict[str, Vectors] = {}
        self._dirty = False
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                keys, matrix = data["keys"], data["vectors"]
                for key, row in zip(keys.tolist(), matrix, strict=True):
                    self._vectors[str(key)] = np.asarray(row, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._vectors)

    @staticmethod
    def key(model_id: str, text: str) -> str:
        return hashlib.sha256(f"{model_id}\0{text}".encode()).hexdigest()

    def get(self, key: str) -> Vectors | None:
        return self._vectors.get(key)

    def put(self, key: str, vector: Vectors) -> None:
        self._vectors[key] = np.asarray(vector, dtype=np.float32)
        self._dirty = True

    def save(self) -> None:
        """Write atomically (temp file, then rename): a killed run leaves the old cache."""
        if not self._dirty or not self._vectors:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._vectors)
        temp = self.path.with_suffix(".tmp.npz")
        np.savez(temp, keys=np.asarray(keys), vectors=np.stack([self._vectors[k] for k in keys]))
        os.replace(temp, self.path)
        self._dirty = False


class CachingEmbedder:
    """An ``Embedder`` that serves query vectors from the cache and stores new ones.

    With ``read=False`` it still embeds every query (so the answer flow's latency and
    cost are what users get) but records the vectors for the ranking pass to reuse.
    Passages always go to the model: ingestion has its own store of them.
    """

    def __init__(self, inner: Embedder, cache: QueryVectorCache, *, read: bool = True) -> None:
        self.inner = inner
        self.cache = cache
        self.read = read
        self.model_id: str = inner.model_id
        self.dimension: int = inner.dimension
        self.tokenizer: Tokenizer = inner.tokenizer
        self.hits = 0
        self.misses = 0

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        if kind != "query":
            return await self.inner.embed(texts, kind)
        keys = [QueryVectorCache.key(self.model_id, t) for t in texts]
        found = [self.cache.get(k) if self.read else None for k in keys]
        missing = [i for i, vector in enumerate(found) if vector is None]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = await self.inner.embed([texts[i] for i in missing], kind)
            for i, vector in zip(missing, fresh, strict=True):
                self.cache.put(keys[i], vector)
                found[i] = vector
        rows = [v for v in found if v is not None]
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)
