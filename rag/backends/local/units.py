"""Answer units with their vectors: computed at ingestion, read back when answering.

Embedding every candidate unit at question time made each answer cost dozens of model
calls (4.4 answers a second on 2 cores, a first ``delta`` after 6.6 s at p50 under 50
clients). Units are instead embedded once, when their chunk is written, and stored in
``chunk_units`` in the same transaction as the chunk; an answer reads them with the
hits and embeds only its question.

This is the local answerer's concern: the registry builds a ``UnitIndex`` only when the
extractive answerer is in the chain on the local backend. Elsewhere (the extractive
fallback on Cloudflare), or for a chunk stored before this table existed, the answerer
splits and embeds at question time, as it always did.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag.backends.local.answer_units import SPLITTER, AnswerUnit, answer_units
from rag.db.tables import ChunkUnits
from rag.ports import Embedder, Vectors

log = logging.getLogger(__name__)


class Units(NamedTuple):
    """A chunk's answer units and their vectors (one row per unit)."""

    units: list[AnswerUnit]
    vectors: Vectors


class UnitRow(NamedTuple):
    """What ``chunk_units`` stores for one chunk."""

    spans: list[list[Any]]
    vectors: bytes


def unit_version(model_id: str) -> str:
    return f"{SPLITTER}:{model_id}"


async def embed_units(embedder: Embedder, texts: Sequence[str]) -> list[Units]:
    """The units of each text, embedded in one batch."""
    split = [answer_units(text) for text in texts]
    pieces = [
        text[u.start : u.end] for text, units in zip(texts, split, strict=True) for u in units
    ]
    matrix = (
        await embedder.embed(pieces, "passage")
        if pieces
        else np.zeros((0, embedder.dimension), dtype=np.float32)
    )
    out, at = [], 0
    for units in split:
        out.append(Units(units, matrix[at : at + len(units)]))
        at += len(units)
    return out


class UnitIndex:
    """Units for ingestion to store (``rows``) and for the answerer to read (``load``)."""

    def __init__(self, embedder: Embedder, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.embedder = embedder
        self.sessions = sessions
        self.version = unit_version(embedder.model_id)

    async def rows(self, texts: Sequence[str]) -> list[UnitRow]:
        """Rows for ``chunk_units``, one per text."""
        return [_row(units) for units in await embed_units(self.embedder, texts)]

    async def load(self, chunk_ids: Sequence[str]) -> dict[str, Units]:
        """Stored units of these chunks, of this version; chunks without them are left out.

        A failed read is logged and answered with nothing: the answerer then embeds at
        question time, slower but never failing an answer for a cache of vectors.
        """
        try:
            async with self.sessions() as session:
                rows = await session.execute(
                    select(ChunkUnits.chunk_id, ChunkUnits.spans, ChunkUnits.vectors).where(
                        ChunkUnits.chunk_id.in_(list(chunk_ids)),
                        ChunkUnits.version == self.version,
                    )
                )
                found = {
                    cid: _units(spans, blob, self.embedder.dimension) for cid, spans, blob in rows
                }
        except Exception as exc:  # a secondary read: the answer goes on without it
            log.warning("stored answer units could not be read (%s): embedding them now", exc)
            return {}
        return found


def _row(units: Units) -> UnitRow:
    spans: list[list[Any]] = [
        [u.start, u.end, u.kind, *(u.header if u.header else (None, None))] for u in units.units
    ]
    return UnitRow(spans, np.ascontiguousarray(units.vectors, dtype="<f4").tobytes())


def _units(spans: list[list[Any]], blob: bytes, dimension: int) -> Units:
    units = [
        AnswerUnit(int(s), int(e), kind, None if hs is None else (int(hs), int(he)))
        for s, e, kind, hs, he in spans
    ]
    vectors = np.frombuffer(blob, dtype="<f4").reshape(len(units), dimension)
    return Units(units, vectors.astype(np.float32, copy=False))
