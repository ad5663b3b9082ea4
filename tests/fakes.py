"""Test doubles shared by the suite: a deterministic embedder that needs no model file,
and a chat model that plays a script."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncGenerator, Sequence

import numpy as np

from rag.domain import Hit
from rag.ports import EmbedKind, Tokenizer, Vectors

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")


class FakeTokenizer:
    """Words and punctuation marks as tokens, with BERT's two special tokens."""

    def __init__(self, max_tokens: int = 256) -> None:
        self.max_tokens = max_tokens
        self.special_tokens = 2

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _TOKEN.finditer(text)]

    def count(self, text: str) -> int:
        return len(_TOKEN.findall(text))


class FakeEmbedder:
    """Hashed bag of words: texts sharing words are close, and the same text always maps
    to the same unit vector. Counts its calls so tests can check what was embedded."""

    def __init__(self, dimension: int = 256, model_id: str = "fake-bow-256") -> None:
        self.model_id = model_id
        self.dimension = dimension
        self.tokenizer: Tokenizer = FakeTokenizer()
        self.calls: list[tuple[int, EmbedKind]] = []

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        self.calls.append((len(texts), kind))
        return self.embed_sync(texts)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self.dimension
                out[row, slot] += 1.0 if digest[4] & 1 else -1.0
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0  # no words: still a unit vector, as a real model gives
        return out


class Pause:
    """A script step: the model thinks for a while before its next piece."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class ScriptedChat:
    """A ``ChatModel`` that plays its script: strings are yielded, exceptions raised.

    It records each call (question, source ids), whether it played to the end
    (``finished``) and whether its stream was closed (``closed``).
    """

    prompt_version = "scripted-1"

    def __init__(self, *script: str | Exception | Pause, name: str = "scripted") -> None:
        self.name = name
        self.script = script
        self.calls: list[tuple[str, list[str]]] = []
        self.finished = False
        self.closed = False

    async def stream(self, question: str, sources: Sequence[Hit]) -> AsyncGenerator[str, None]:
        self.calls.append((question, [s.chunk_id for s in sources]))
        try:
            for step in self.script:
                if isinstance(step, Exception):
                    raise step
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    continue
                yield step
            self.finished = True
        finally:
            self.closed = True
