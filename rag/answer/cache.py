"""The answer cache: the same question over the same index and models streams the same answer.

The key is a sha256 over the normalised question and everything that could change the
answer: the index (embedding model, chunker fingerprint, index generation), the chat
provider chain, the prompt version and ``top_k``. Every ingest write bumps the index
generation, so an ingest changes every key; entries of older generations are purged
when the next answer is stored, and the least recently used go once ``max_entries`` is
reached. A hit is looked up before the question is embedded, so it costs no neurons.

Only complete, grounded answers from the chain's preferred provider are stored: an
error or a truncated stream is never replayed, a "not covered" reply is cheap to
recompute, and an answer a fallback gave (say, while the neuron budget was spent)
would otherwise stand in for the better one until the next ingest; so would an answer
given in degraded mode (``DoneEvent.degraded``).
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import delete, func, select, update

from rag.answer.chain import FallbackChain
from rag.config import CacheSettings, Settings
from rag.db import upsert
from rag.db.tables import CachedAnswer
from rag.domain import AnswerEvent, DeltaEvent, DoneEvent, ErrorEvent, Latency, Usage
from rag.ingest.chunker import chunker_fingerprint

CACHE_FORMAT = "answer-cache-1"
"""Part of every key: bump it when the stored event shape changes."""

_TRAILING = re.compile(r"[\s?!.,;:…？！。]+$")


def normalise(question: str) -> str:
    """Lowercase, whitespace collapsed, trailing punctuation gone: "How?" == " how ".."""
    return _TRAILING.sub("", " ".join(question.lower().split()))


def cache_key(
    question: str,
    *,
    generation: int,
    top_k: int,
    embed_model: str,
    chunker: str,
    chat: str,
    prompt_version: str,
) -> str:
    parts = (
        CACHE_FORMAT,
        normalise(question),
        embed_model,
        chunker,
        str(generation),
        chat,
        prompt_version,
        str(top_k),
    )
    # A separator no part contains, so ("a b", "c") and ("a", "b c") differ.
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def key_parts(
    settings: Settings, embed_model: str, chat: FallbackChain, min_relevance: float
) -> dict[str, str]:
    """The parts of the key fixed for a service's life (all but question, generation, k)."""
    ingest = settings.ingest
    # Settings that shape the answer go in with the prompt versions: changing the
    # evidence gate or the answer length must not replay answers made under the old ones.
    shape = msgspec.json.encode(
        [
            [p.prompt_version for p in chat.providers],
            settings.retrieval,
            settings.answer,
            min_relevance,
            settings.cloudflare.max_tokens,
        ]
    )
    return {
        "embed_model": embed_model,
        "chunker": chunker_fingerprint(
            ingest.chunk_tokens, ingest.overlap_tokens, embed_model, ingest.max_chunk_chars
        ),
        "chat": chat.name,
        "prompt_version": shape.decode(),
    }


def cacheable(events: Sequence[AnswerEvent], preferred: str) -> bool:
    """A complete, grounded answer from the preferred provider, and nothing went wrong.

    A degraded answer is never stored: even when the preferred provider is the extractive
    one, its sources came from keyword search alone and would outlive the refusal.
    """
    if not events or any(isinstance(e, ErrorEvent) for e in events):
        return False
    done = events[-1]
    return (
        isinstance(done, DoneEvent)
        and done.grounded
        and done.provider == preferred
        and done.degraded is None
    )


def replay(events: Sequence[AnswerEvent], began: float) -> Iterator[AnswerEvent]:
    """The stored events again, the ``done`` event marked cached, free and freshly timed."""
    latency = Latency(retrieve=0.0)
    for event in events:
        if isinstance(event, DeltaEvent) and latency.first_token is None:
            latency.first_token = _ms(time.perf_counter() - began)
        if isinstance(event, DoneEvent):
            latency.total = _ms(time.perf_counter() - began)
            yield msgspec.structs.replace(
                event,
                cached=True,
                usage=Usage(),
                latency_ms=latency,
                trace_id=uuid.uuid4().hex,
            )
        else:
            yield event


class AnswerCache:
    """Cached answers in the ``answer_cache`` table, bounded by ``cache.max_entries``."""

    def __init__(
        self,
        sessions: Any,
        settings: CacheSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.enabled = settings.enabled and settings.max_entries > 0
        self.max_entries = settings.max_entries
        self.clock = clock

    async def get(self, key: str) -> list[AnswerEvent] | None:
        """The stored events for ``key``, or None. Only reads: ``count_hit`` writes."""
        if not self.enabled:
            return None
        async with self.sessions() as session:
            raw = await session.scalar(select(CachedAnswer.events).where(CachedAnswer.key == key))
        return None if raw is None else msgspec.convert(raw, list[AnswerEvent])

    async def count_hit(self, key: str) -> None:
        """Count a replay and mark the entry recently used (what trimming keeps).

        Apart from ``get`` so that the answer never waits on a write: the service does
        this after the replay, and a failure costs only the entry's place in the order.
        """
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(CachedAnswer)
                .where(CachedAnswer.key == key)
                .values(hits=CachedAnswer.hits + 1, used_at=self._now())
            )

    async def put(
        self, key: str, question: str, generation: int, events: Sequence[AnswerEvent]
    ) -> None:
        """Store one answer, drop other generations' entries, then trim to ``max_entries``."""
        if not self.enabled:
            return
        stored = msgspec.to_builtins(list(events))
        async with self.sessions() as session, session.begin():
            # ON CONFLICT DO NOTHING: the same question asked twice at once is answered
            # twice and stored once; both answers are the same, the first stays.
            await session.execute(
                upsert.insert(session, CachedAnswer)
                .values(
                    key=key,
                    question=question,
                    events=stored,
                    hits=0,
                    generation=generation,
                    used_at=self._now(),
                )
                .on_conflict_do_nothing()
            )
            await session.execute(delete(CachedAnswer).where(CachedAnswer.generation != generation))
            count = await session.scalar(select(func.count()).select_from(CachedAnswer)) or 0
            if count > self.max_entries:
                oldest = (
                    select(CachedAnswer.key)
                    .order_by(CachedAnswer.used_at, CachedAnswer.key)
                    .limit(count - self.max_entries)
                )
                await session.execute(
                    delete(CachedAnswer).where(CachedAnswer.key.in_(oldest.scalar_subquery()))
                )

    async def purge(self, keep_generation: int) -> None:
        """Drop every entry answered at another index generation (called after an ingest)."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(CachedAnswer).where(CachedAnswer.generation != keep_generation)
            )

    async def size(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(CachedAnswer)) or 0)

    def _now(self) -> datetime:
        return self.clock().astimezone(UTC).replace(tzinfo=None)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
