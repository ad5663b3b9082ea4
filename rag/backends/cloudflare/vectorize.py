"""Vectorize v2 as the serving ``VectorIndex`` (docs/cloudflare.md#vectorize-v2).

Every limit the service knows is checked before a byte is sent (ids <= 64 bytes, metadata
<= 10 KiB, topK), so a bad batch fails whole and names the culprit instead of half-landing.
Writes are asynchronous on Cloudflare's side: each returns a ``mutationId``, which is
recorded in ``vector_mutations`` (``vectorize_mutations``) so ``wait_for_mutations``
(``rag ingest --wait``) can tell when the index serves what SQLite holds.

Ingestion does not call ``upsert``/``delete`` per document: that would be one or two
requests a document, and Cloudflare blocks an account for 5 minutes past 1,200 API
requests in 5 minutes (docs/cloudflare.md#rate-limits). It queues the writes in
``index_outbox`` in the transaction that changes the chunks (``durable_outbox``), and
``flush`` sends them in batches of up to 1,000 ids across documents; a run killed before
a flush loses nothing, the next ``flush`` (at the next run's end, or at service start)
sends what is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag.backends.cloudflare import vectorize_outbox as outbox
from rag.backends.cloudflare.client import CloudflareClient
from rag.backends.cloudflare.vectorize_mutations import (
    POLL_FIRST_S,
    MutationLog,
    Probe,
    Progress,
)
from rag.db.tables import IndexOutbox
from rag.errors import CloudflareError, IndexMismatch, InputError, NotFound
from rag.ports import VectorIndex, Vectors

Metric = Literal["cosine", "euclidean", "dot-product"]
ReturnMetadata = Literal["none", "indexed", "all"]

MAX_BATCH = 1000  # the API takes 5,000; 1,000 is wrangler's choice and keeps a body ~15 MB
MAX_ID_BYTES = 64
MAX_METADATA_BYTES = 10 * 1024
MAX_TOP_K = 100
MAX_TOP_K_DETAILED = 20  # with returnValues or returnMetadata="all"
ID_BATCH = 1000  # ids per delete_by_ids request
GET_BATCH = 100  # ids per get_by_ids request: each answer carries full vectors
LIST_PAGE = 1000
OUTBOX_PAGE = 5000
"""Outbox rows read per round of ``flush``: their vectors are held in memory (15 MB at 768-d)."""
METADATA_INDEXES = {"document_id": "string"}
"""Metadata properties the service filters on; Vectorize indexes only vectors written after."""


@dataclass(frozen=True, slots=True)
class IndexConfig:
    name: str
    dimensions: int
    metric: str
    description: str = ""
    created_on: str = ""


@dataclass(frozen=True, slots=True)
class IndexInfo:
    dimensions: int
    vector_count: int
    processed_up_to_mutation: str | None
    processed_up_to_datetime: str | None


@dataclass(frozen=True, slots=True)
class StoredVector:
    id: str
    values: Vectors
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Match:
    id: str
    score: float
    values: Vectors | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class VectorPage:
    ids: list[str]
    cursor: str | None
    """Pass back for the next page; None on the last one."""
    total: int


class VectorizeIndex(VectorIndex):
    """One Vectorize index, the vectors of one embedding model, mirrored from SQLite."""

    def __init__(
        self,
        client: CloudflareClient,
        name: str,
        dimension: int,
        sessions: async_sessionmaker[AsyncSession],
        *,
        metric: Metric = "cosine",
        auto_create: bool = True,
        poll_s: float = POLL_FIRST_S,
        model_id: str | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.dimension = dimension
        self.metric = metric
        self.sessions = sessions
        self.auto_create = auto_create
        self.poll_s = poll_s
        self._path = f"/vectorize/v2/indexes/{name}"
        self._checked = False
        self.mutations = MutationLog(sessions, name)
        self.model_id = model_id
        """The embedding model whose vectors this index serves; needed to drain the outbox."""
        self._flushing = asyncio.Lock()

    @property
    def durable_outbox(self) -> bool:
        """Ingestion queues its writes in ``index_outbox`` for ``flush`` (see the module doc)."""
        return self.model_id is not None

    # Index lifecycle.

    async def describe(self) -> IndexConfig | None:
        """The index's configuration, or None when it does not exist."""
        try:
            raw = await self.client.call("GET", self._path)
        except (NotFound, CloudflareError) as exc:
            if _is_missing(exc):
                return None
            raise
        config = raw.get("config", {})
        return IndexConfig(
            raw["name"],
            int(config["dimensions"]),
            str(config["metric"]),
            raw.get("description") or "",
            raw.get("created_on") or "",
        )

    async def create(self, dimension: int | None = None, metric: Metric | None = None) -> bool:
        """Create the index and its metadata indexes; True if the index was new.

        An existing index is kept when it matches and refused with ``IndexMismatch`` when
        its dimension or metric differs: those cannot change after creation
        (docs/cloudflare.md#limits).
        """
        self.dimension = dimension or self.dimension
        self.metric = metric or self.metric
        existing = await self.describe()
        if existing is None:
            body = {
                "name": self.name,
                "description": f"rag: {self.dimension}-d {self.metric}",
                "config": {"dimensions": self.dimension, "metric": self.metric},
            }
            try:
                await self.client.call("POST", "/vectorize/v2/indexes", json=body)
            except CloudflareError as exc:
                # duplicate_name: another process (or our own retried request, whose first
                # attempt did land) created it meanwhile; what it is gets checked below.
                if exc.cf_code != 3002:
                    raise
                existing = await self.describe()
        if existing is not None:
            self._check(existing)
        listed = await self.client.call("GET", f"{self._path}/metadata_index/list")
        have = {m["propertyName"] for m in listed.get("metadataIndexes", [])}
        # Created before any vector is written: Vectorize only indexes later writes
        # (docs/cloudflare.md#metadata-indexes).
        for prop, kind in METADATA_INDEXES.items():
            if prop not in have:
                body = {"propertyName": prop, "indexType": kind}
                result = await self.client.call(
                    "POST", f"{self._path}/metadata_index/create", json=body
                )
                await self.mutations.record("metadata", 1, result["mutationId"], prop=prop)
        self._checked = True
        return existing is None

    async def info(self) -> IndexInfo:
        raw = await self.client.call("GET", f"{self._path}/info")
        return IndexInfo(
            int(raw.get("dimensions") or 0),
            int(raw.get("vectorCount") or 0),
            _mutation_id(raw.get("processedUpToMutation")),
            raw.get("processedUpToDatetime"),
        )

    async def metadata_indexes(self) -> dict[str, str]:
        listed = await self.client.call("GET", f"{self._path}/metadata_index/list")
        return {m["propertyName"]: m["indexType"] for m in listed.get("metadataIndexes", [])}

    # Writes.

    async def upsert(
        self,
        ids: Sequence[str],
        vectors: Vectors,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Replace these vectors; ``metadata`` defaults to each chunk's ``document_id``."""
        if not ids:
            return
        block = np.asarray(vectors, dtype=np.float32)
        block = block.reshape(1, -1) if block.ndim == 1 else block
        if block.ndim != 2 or block.shape[1] != self.dimension:
            raise IndexMismatch(
                f"vectors of shape {block.shape} cannot go into Vectorize index "
                f"{self.name!r} of dimension {self.dimension}"
            )
        if block.shape[0] != len(ids):
            raise InputError(f"{len(ids)} ids for {block.shape[0]} vectors")
        if metadata is None:
            metadata = await outbox.chunk_metadata(self.sessions, ids)
        elif len(metadata) != len(ids):
            raise InputError(f"{len(ids)} ids but {len(metadata)} metadata records")
        lines = [
            _ndjson_line(vid, row, meta)
            for vid, row, meta in zip(ids, block, metadata, strict=True)
        ]
        await self._ensure()
        for start in range(0, len(lines), MAX_BATCH):
            body = b"".join(lines[start : start + MAX_BATCH])
            result = await self.client.call(
                "POST",
                f"{self._path}/upsert",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            )
            end = min(start + MAX_BATCH, len(lines))
            mutation = result["mutationId"]
            # A few sent vectors, so the write can be seen landing (get-by-ids fallback).
            picks = sorted({start, (start + end - 1) // 2, end - 1})
            probes = [(ids[i], block[i].copy()) for i in picks]
            await self.mutations.record("upsert", end - start, mutation, probes)

    async def delete(self, ids: Sequence[str]) -> None:
        wanted = list(dict.fromkeys(ids))
        for vid in wanted:
            _check_id(vid)
        if not wanted:
            return
        await self._ensure()
        for start in range(0, len(wanted), ID_BATCH):
            batch = wanted[start : start + ID_BATCH]
            body = {"ids": batch}
            result = await self.client.call("POST", f"{self._path}/delete_by_ids", json=body)
            # A few of the ids, so the delete can be seen landing when processedUpTo
            # Mutation never names it.
            picks = sorted({0, len(batch) // 2, len(batch) - 1})
            probes: list[Probe] = [(batch[i], None) for i in picks]
            await self.mutations.record("delete", len(batch), result["mutationId"], probes)

    async def flush(self) -> int:
        """Send the writes queued in ``index_outbox`` for this model; returns ids written.

        Batched across documents: up to 1,000 ids per upsert or delete request. What is
        sent for an id is decided by SQLite now, not by the queued op: an id whose chunk
        still has a vector for this model is upserted with its stored values and
        ``document_id``, any other is deleted. So the newest state wins whatever the
        order of the rows (a delete queued after an upsert is honoured), the outbox holds
        no copy of any vector, and ids in one round are disjoint between the two
        requests, so their order does not matter. Rows are removed only once Cloudflare
        has accepted the request that covers them (its mutation id recorded); a crash
        before that sends them again, which upsert and delete tolerate.

        Two processes flushing the same database at once may both send a row; within one
        process flushes are serialised.
        """
        if self.model_id is None:
            return 0
        written = 0
        async with self._flushing:
            while rows := await self._outbox_page():
                written += await self._send(rows)
        return written

    async def queued(self) -> int:
        """Writes waiting in ``index_outbox`` for this model."""
        if self.model_id is None:
            return 0
        async with self.sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(IndexOutbox)
                .where(IndexOutbox.model_id == self.model_id)
            )
        return int(count or 0)

    # Reads.

    async def query(self, vector: Vectors, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, cosine) pairs, best first."""
        return [(m.id, m.score) for m in await self.matches(vector, k)]

    async def matches(
        self,
        vector: Vectors,
        k: int,
        *,
        return_values: bool = False,
        return_metadata: ReturnMetadata = "none",
        filter: Mapping[str, Any] | None = None,
    ) -> list[Match]:
        limit = MAX_TOP_K_DETAILED if return_values or return_metadata == "all" else MAX_TOP_K
        if k > limit:
            raise InputError(
                f"Vectorize returns at most {limit} matches"
                + (" with values or all metadata" if limit == MAX_TOP_K_DETAILED else "")
                + f"; {k} were asked for"
            )
        if k < 1:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dimension:
            raise IndexMismatch(
                f"a query vector of dimension {q.shape[0]} cannot search Vectorize index "
                f"{self.name!r} of dimension {self.dimension}"
            )
        body: dict[str, Any] = {
            "vector": q.tolist(),
            "topK": k,
            "returnValues": return_values,
            "returnMetadata": return_metadata,
        }
        if filter:
            body["filter"] = dict(filter)
        raw = await self.client.call("POST", f"{self._path}/query", json=body)
        return [
            Match(
                m["id"],
                float(m["score"]),
                None if m.get("values") is None else np.asarray(m["values"], dtype=np.float32),
                m.get("metadata"),
            )
            for m in raw.get("matches", [])
        ]

    async def get_by_ids(self, ids: Sequence[str]) -> list[StoredVector]:
        """The vectors Vectorize serves for these ids now; absent ids are left out."""
        found: list[StoredVector] = []
        wanted = list(dict.fromkeys(ids))
        for start in range(0, len(wanted), GET_BATCH):
            body = {"ids": wanted[start : start + GET_BATCH]}
            raw = await self.client.call("POST", f"{self._path}/get_by_ids", json=body)
            found.extend(
                StoredVector(
                    r["id"], np.asarray(r.get("values") or [], np.float32), r.get("metadata") or {}
                )
                for r in raw
            )
        return found

    async def list_vectors(self, cursor: str | None = None, count: int = LIST_PAGE) -> VectorPage:
        """One page of ids, from a snapshot taken at the cursor-less call.

        See docs/cloudflare.md#asynchronous-writes.
        """
        params: dict[str, Any] = {"count": count}
        if cursor:
            params["cursor"] = cursor
        raw = await self.client.call("GET", f"{self._path}/list", params=params)
        ids = [v["id"] for v in raw.get("vectors", [])]
        more = bool(raw.get("isTruncated")) and raw.get("nextCursor")
        return VectorPage(ids, raw["nextCursor"] if more else None, int(raw.get("totalCount", 0)))

    async def all_ids(self) -> list[str]:
        page = await self.list_vectors()
        ids = list(page.ids)
        while page.cursor:
            page = await self.list_vectors(page.cursor)
            ids.extend(page.ids)
        return ids

    # Mutations.

    async def pending_mutations(self) -> list[tuple[int, str]]:
        """(row id, mutation id) of recorded writes not yet known processed, oldest first."""
        return await self.mutations.pending()

    async def wait_for_mutations(
        self, timeout_s: float = 600.0, progress_cb: Progress | None = None
    ) -> int:
        """Block until Vectorize has processed every recorded write; returns how many.

        Raises ``MutationsPending`` naming how many are left when ``timeout_s`` runs out.
        """

        async def processed_up_to() -> str | None:
            return (await self.info()).processed_up_to_mutation

        async def fetch(ids: list[str]) -> dict[str, Vectors]:
            return {v.id: v.values for v in await self.get_by_ids(ids)}

        async def listed() -> set[str]:
            return set(await self.metadata_indexes())

        return await self.mutations.wait(
            processed_up_to,
            fetch,
            listed,
            timeout_s,
            progress_cb,
            poll_s=self.poll_s,
            sleep=self.client.sleep,
            clock=self.client.clock,
            jitter=self.client.jitter,
        )

    # Internals.

    async def _ensure(self) -> None:
        """Before the first write: the index must exist and fit, or nothing is written."""
        if self._checked:
            return
        existing = await self.describe()
        if existing is None:
            if not self.auto_create:
                raise NotFound(
                    f"Vectorize index {self.name!r} does not exist: run `rag vectorize create`"
                )
            await self.create()
            return
        self._check(existing)
        self._checked = True

    def _check(self, existing: IndexConfig) -> None:
        if existing.dimensions != self.dimension or existing.metric != self.metric:
            raise IndexMismatch(
                f"Vectorize index {self.name!r} is {existing.dimensions}-d {existing.metric}, "
                f"but the embedder needs {self.dimension}-d {self.metric}: it is left "
                "untouched; set [cloudflare] index_name to a new index or delete this one"
            )

    async def _outbox_page(self) -> list[tuple[int, str]]:
        assert self.model_id is not None
        return await outbox.oldest(self.sessions, self.model_id, OUTBOX_PAGE)

    async def _send(self, rows: Sequence[tuple[int, str]]) -> int:
        """One round of ``flush``: every row in ``rows`` is sent and removed, or it raises."""
        assert self.model_id is not None
        by_id: dict[str, list[int]] = {}
        for row, cid in rows:
            by_id.setdefault(cid, []).append(row)
        ids = list(by_id)
        stored = await outbox.stored(self.sessions, self.model_id, ids)
        deletes = [cid for cid in ids if cid not in stored]
        upserts = [cid for cid in ids if cid in stored]
        for start in range(0, len(deletes), ID_BATCH):
            batch = deletes[start : start + ID_BATCH]
            await self.delete(batch)
            await outbox.dequeue(self.sessions, [row for cid in batch for row in by_id[cid]])
        for start in range(0, len(upserts), MAX_BATCH):
            batch = upserts[start : start + MAX_BATCH]
            matrix = np.frombuffer(b"".join(stored[cid][0] for cid in batch), dtype="<f4")
            await self.upsert(
                batch,
                matrix.reshape(len(batch), -1),
                [{"document_id": stored[cid][1]} for cid in batch],
            )
            await outbox.dequeue(self.sessions, [row for cid in batch for row in by_id[cid]])
        return len(ids)


def _mutation_id(raw: Any) -> str | None:
    """``processedUpToMutation`` as a string: the schema gives it no type, and it is
    compared with the string ``mutationId`` writes answer with (docs/cloudflare.md)."""
    return None if raw is None or raw == "" else str(raw)


def _check_id(vid: str) -> None:
    if not isinstance(vid, str) or not vid:
        raise InputError(f"a Vectorize vector id must be a non-empty string, not {vid!r}")
    size = len(vid.encode())
    if size > MAX_ID_BYTES:
        raise InputError(f"vector id {vid!r} is {size} bytes; Vectorize allows {MAX_ID_BYTES}")


def _ndjson_line(vid: str, row: Vectors, metadata: Mapping[str, Any]) -> bytes:
    """One NDJSON record, checked against Vectorize's limits before anything is sent."""
    _check_id(vid)
    for key in metadata:
        if not key or "." in key or '"' in key or key.startswith("$"):
            raise InputError(
                f"metadata key {key!r} of vector {vid!r}: keys must be non-empty, "
                "without '.' or '\"', and must not start with '$'"
            )
    encoded = msgspec.json.encode(dict(metadata))
    if len(encoded) > MAX_METADATA_BYTES:
        raise InputError(
            f"metadata of vector {vid!r} is {len(encoded)} bytes as JSON; "
            f"Vectorize allows {MAX_METADATA_BYTES}"
        )
    if not np.isfinite(row).all():
        raise InputError(f"vector {vid!r} holds NaN or infinite values")
    # float32 widened to float64 prints exactly what Vectorize will store (it keeps float32).
    record: dict[str, Any] = {"id": vid, "values": row.astype(np.float64).tolist()}
    if metadata:
        record["metadata"] = dict(metadata)
    return msgspec.json.encode(record) + b"\n"


def _is_missing(exc: Exception) -> bool:
    # Vectorize reports a missing index as code 3000 "vectorize.index.not_found", with
    # HTTP 404 or (in some reports) 400.
    if isinstance(exc, CloudflareError) and exc.cf_code == 3000:
        return True
    return isinstance(exc, NotFound) or "index.not_found" in str(exc)
