"""In-process fake of Vectorize v2 over REST, after docs/cloudflare.md#vectorize-v2.

Writes are asynchronous as on the real service: insert, upsert, delete_by_ids and
metadata-index changes answer with a ``mutationId`` at once and take effect, in order,
only after ``delay`` further Vectorize requests (``delay=None``: only on ``process()``).
Every JSON body and every NDJSON line is validated against Cloudflare's schema fragments
in ``tests/data/cf_schemas``; a request that fails gets a 400 envelope and lands in
``schema_errors`` (the ``FakeCloudflare``'s own list when there is one), so tests can
assert that the client never sent one. Answers are checked too (``fake_errors``).

Error codes: 3000 (index not found), 3002 (duplicate name), 40012 (wrong dimension) and
40023 (unparsable NDJSON) are the real ones seen in public reports; 7003 is the
envelope example of the spec; the rest (4000x) are stand-ins where no code is documented.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np

from cf_fake.schemas import envelope_problems, problems

PRESETS = {
    "@cf/baai/bge-small-en-v1.5": 384,
    "@cf/baai/bge-base-en-v1.5": 768,
    "@cf/baai/bge-large-en-v1.5": 1024,
    "openai/text-embedding-ada-002": 1536,
    "cohere/embed-multilingual-v2.0": 768,
}
MAX_VECTORS_PER_WRITE = 5000
MAX_BODY_BYTES = 100 * 1024 * 1024
MAX_METADATA_BYTES = 10 * 1024
MAX_METADATA_INDEXES = 10
INDEXED_STRING_BYTES = 64


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Stored:
    values: list[float]
    metadata: dict[str, Any]
    namespace: str | None
    indexed: frozenset[str]
    """Metadata properties that had an index when this vector was written
    (docs/cloudflare.md#metadata-indexes)."""


@dataclass
class Mutation:
    id: str
    ready_at: int | None
    apply: Callable[[], None]


@dataclass
class FakeIndex:
    name: str
    dimensions: int
    metric: str
    description: str = ""
    created_on: str = field(default_factory=_now)
    vectors: dict[str, Stored] = field(default_factory=dict)
    metadata_indexes: dict[str, str] = field(default_factory=dict)
    queue: deque[Mutation] = field(default_factory=deque)
    processed_mutation: str | None = None
    processed_at: str | None = None

    def describe(self) -> dict[str, Any]:
        config = {"dimensions": self.dimensions, "metric": self.metric}
        return {
            "name": self.name,
            "description": self.description,
            "config": config,
            "created_on": self.created_on,
            "modified_on": self.created_on,
        }


@dataclass
class Seen:
    method: str
    route: str
    """The path after ``/vectorize/v2/indexes``."""
    content_type: str
    body: bytes


class VectorizeState:
    def __init__(
        self,
        delay: int | None = 2,
        schema_errors: list[str] | None = None,
        fake_errors: list[str] | None = None,
    ) -> None:
        self.delay = delay
        self.indexes: dict[str, FakeIndex] = {}
        self.requests: list[Seen] = []
        self.schema_errors = [] if schema_errors is None else schema_errors
        self.fake_errors = [] if fake_errors is None else fake_errors
        self.ticks = 0
        self.progress_as_number = False
        """Report ``processedUpToMutation`` as a count of applied writes, a form that never
        equals a ``mutationId``: the schema gives the field no type, and a client that
        waits for its id to appear there would wait forever."""
        self.applied = 0
        self._snapshots: dict[str, tuple[list[str], int, datetime]] = {}

    # Test helpers: set up state and drift directly, without the API.

    def add_index(self, name: str, dimensions: int, metric: str = "cosine") -> FakeIndex:
        self.indexes[name] = FakeIndex(name, dimensions, metric)
        return self.indexes[name]

    def process(self) -> int:
        """Apply every queued mutation of every index; returns how many there were."""
        done = 0
        for index in self.indexes.values():
            while index.queue:
                self._apply(index, index.queue.popleft())
                done += 1
        return done

    def put(self, name: str, vid: str, values: list[float], metadata: dict[str, Any]) -> None:
        index = self.indexes[name]
        stored = np.asarray(values, dtype=np.float32).astype(float).tolist()
        index.vectors[vid] = Stored(stored, metadata, None, frozenset(index.metadata_indexes))

    def writes(self) -> list[Seen]:
        """Requests that wrote vectors (insert and upsert)."""
        return [s for s in self.requests if s.route.endswith(("/insert", "/upsert"))]

    # The API.

    def handle(self, request: httpx.Request) -> httpx.Response:
        route = request.url.path.split("/vectorize/v2/indexes", 1)[-1]
        body = request.content
        self.ticks += 1
        self._advance()
        self.requests.append(
            Seen(request.method, route, request.headers.get("content-type", ""), body)
        )
        try:
            result = self._route(request.method, route, request)
        except ApiError as exc:
            error = {"code": exc.code, "message": exc.message}
            envelope = {"result": None, "success": False, "errors": [error], "messages": []}
            return httpx.Response(exc.status, json=envelope)
        answer = {"result": result, "success": True, "errors": [], "messages": []}
        parts = [p for p in route.split("/") if p]
        action = "/".join(parts[1:]) if parts else f"{request.method} indexes"
        action = "DELETE" if request.method == "DELETE" else action  # result: null
        if action in _RESULT_SCHEMAS:
            self.fake_errors.extend(envelope_problems(answer, _RESULT_SCHEMAS[action]))
        return httpx.Response(200, json=answer)

    def _route(self, method: str, route: str, request: httpx.Request) -> Any:
        parts = [p for p in route.split("/") if p]
        if not parts:
            if method == "GET":
                return [index.describe() for index in self.indexes.values()]
            if method == "POST":
                return self._create(self._json(request, "vectorize_create-index-request"))
            raise ApiError(405, 7001, "Method not allowed")
        name, action = parts[0], "/".join(parts[1:])
        handlers: dict[tuple[str, str], Callable[[FakeIndex, httpx.Request], Any]] = {
            ("GET", ""): lambda i, _: i.describe(),
            ("DELETE", ""): lambda i, _: self.indexes.pop(i.name) and None,
            ("GET", "info"): self._info,
            ("POST", "insert"): lambda i, r: self._write(i, r, replace=False),
            ("POST", "upsert"): lambda i, r: self._write(i, r, replace=True),
            ("POST", "query"): self._query,
            ("POST", "get_by_ids"): self._get_by_ids,
            ("POST", "delete_by_ids"): self._delete_by_ids,
            ("GET", "list"): self._list,
            ("POST", "metadata_index/create"): self._create_metadata_index,
            ("GET", "metadata_index/list"): lambda i, _: {
                "metadataIndexes": [
                    {"propertyName": p, "indexType": t} for p, t in i.metadata_indexes.items()
                ]
            },
        }
        handler = handlers.get((method, action))
        if handler is None:
            known = any(a == action for _, a in handlers)
            raise (
                ApiError(405, 7001, "Method not allowed")
                if known
                else ApiError(404, 7003, "No route for the URI")
            )
        index = self.indexes.get(name)
        if index is None:
            raise ApiError(404, 3000, f'vectorize.index.not_found - Index name "{name}"')
        return handler(index, request)

    def _json(self, request: httpx.Request, schema: str) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise ApiError(400, 40026, "vectorize.unknown_content_type")
        try:
            body = json.loads(request.content)
        except ValueError as exc:
            raise ApiError(400, 40000, f"vectorize.invalid_json - {exc}") from exc
        self._check(schema, body)
        assert isinstance(body, dict)
        return body

    def _check(self, schema: str, value: Any) -> None:
        found = problems(schema, value)
        if found:
            self.schema_errors.extend(found)
            raise ApiError(400, 40000, f"vectorize.invalid_request - {found[0]}")

    def _create(self, body: dict[str, Any]) -> Any:
        name = body["name"]
        if name in self.indexes:
            raise ApiError(409, 3002, f'vectorize.index.duplicate_name - Index name "{name}"')
        config = body["config"]
        if "preset" in config:
            index = self.add_index(name, PRESETS[config["preset"]], "cosine")
        else:
            index = self.add_index(name, config["dimensions"], config["metric"])
        index.description = body.get("description", "")
        return index.describe()

    def _info(self, index: FakeIndex, _: httpx.Request) -> Any:
        return {
            "dimensions": index.dimensions,
            "vectorCount": len(index.vectors),
            "processedUpToDatetime": index.processed_at,
            "processedUpToMutation": (
                self.applied if self.progress_as_number else index.processed_mutation
            ),
        }

    def _enqueue(self, index: FakeIndex, apply: Callable[[], None]) -> dict[str, str]:
        ready = None if self.delay is None else self.ticks + self.delay
        # Random ids, as opaque as the real ones: nothing about their order means anything.
        mutation = Mutation(str(uuid.uuid4()), ready, apply)
        index.queue.append(mutation)
        return {"mutationId": mutation.id}

    def _advance(self) -> None:
        for index in self.indexes.values():
            while (
                index.queue
                and (ready := index.queue[0].ready_at) is not None
                and ready <= self.ticks
            ):
                self._apply(index, index.queue.popleft())

    def _apply(self, index: FakeIndex, mutation: Mutation) -> None:
        mutation.apply()
        self.applied += 1
        index.processed_mutation, index.processed_at = mutation.id, _now()

    def _write(self, index: FakeIndex, request: httpx.Request, *, replace: bool) -> Any:
        if not request.headers.get("content-type", "").startswith("application/x-ndjson"):
            raise ApiError(400, 40026, "vectorize.unknown_content_type")
        if len(request.content) > MAX_BODY_BYTES:
            raise ApiError(413, 40005, "vectorize.payload_too_large")
        discard = request.url.params.get("unparsable-behavior") == "discard"
        records: list[dict[str, Any]] = []
        for n, line in enumerate(request.content.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self._check("vectorize_vector-record", record)
            except (ValueError, ApiError) as exc:
                if discard:
                    continue
                raise ApiError(400, 40023, f"failed to parse line {n} as ndjson: {exc}") from exc
            records.append(record)
        if len(records) > MAX_VECTORS_PER_WRITE:
            raise ApiError(
                400, 40007, f"vectorize.too_many_vectors - at most {MAX_VECTORS_PER_WRITE}"
            )
        for r in records:
            _check_record(index, r)

        def apply() -> None:
            for r in records:
                if replace or r["id"] not in index.vectors:
                    self.put(index.name, r["id"], r["values"], r.get("metadata", {}))
                    index.vectors[r["id"]].namespace = r.get("namespace")

        return self._enqueue(index, apply)

    def _delete_by_ids(self, index: FakeIndex, request: httpx.Request) -> Any:
        ids = list(
            self._json(request, "vectorize_index-delete-vectors-by-id-request").get("ids", [])
        )

        def apply() -> None:
            for vid in ids:
                index.vectors.pop(vid, None)

        return self._enqueue(index, apply)

    def _create_metadata_index(self, index: FakeIndex, request: httpx.Request) -> Any:
        body = self._json(request, "vectorize_create-metadata-index-request")
        prop, kind = body["propertyName"], body["indexType"]
        if (
            prop not in index.metadata_indexes
            and len(index.metadata_indexes) >= MAX_METADATA_INDEXES
        ):
            raise ApiError(400, 40008, "vectorize.too_many_metadata_indexes - at most 10")
        return self._enqueue(index, lambda: index.metadata_indexes.__setitem__(prop, kind))

    def _get_by_ids(self, index: FakeIndex, request: httpx.Request) -> Any:
        ids = self._json(request, "vectorize_index-get-vectors-by-id-request").get("ids", [])
        found = [(i, index.vectors[i]) for i in dict.fromkeys(ids) if i in index.vectors]
        return [
            {"id": i, "values": s.values, "metadata": s.metadata, "namespace": s.namespace}
            for i, s in found
        ]

    def _query(self, index: FakeIndex, request: httpx.Request) -> Any:
        body = self._json(request, "vectorize_index-query-request")
        top_k, values = body.get("topK", 5), body.get("returnValues", False)
        metadata = body.get("returnMetadata", "none")
        if (values or metadata == "all") and top_k > 20:
            raise ApiError(
                400,
                40025,
                "vectorize.invalid_top_k - topK is at most 20 "
                "with returnValues or returnMetadata=all",
            )
        query = np.asarray(body["vector"], dtype=np.float64)
        if query.shape[0] != index.dimensions:
            raise ApiError(
                400,
                40006,
                f"vectorize.invalid_vector - query vector has "
                f"{query.shape[0]} dimensions, the index {index.dimensions}",
            )
        scored = []
        for vid, s in index.vectors.items():
            if body.get("namespace") not in (None, s.namespace):
                continue
            if "filter" in body and not _matches(body["filter"], s):
                continue
            scored.append((_score(index.metric, query, np.asarray(s.values)), vid, s))
        scored.sort(key=lambda t: (t[0] if index.metric == "euclidean" else -t[0], t[1]))
        matches = []
        for score, vid, s in scored[:top_k]:
            match: dict[str, Any] = {"id": vid, "score": score}
            if values:
                match["values"] = s.values
            if metadata == "all":
                match["metadata"] = s.metadata
            elif metadata == "indexed":
                match["metadata"] = {
                    k: _indexed(v) for k, v in s.metadata.items() if k in s.indexed
                }
            matches.append(match)
        return {"count": len(matches), "matches": matches}

    def _list(self, index: FakeIndex, request: httpx.Request) -> Any:
        count = int(request.url.params.get("count", "100"))
        if not 1 <= count <= 1000:
            raise ApiError(400, 40000, "vectorize.invalid_request - count must be 1..1000")
        cursor = request.url.params.get("cursor")
        if cursor is None:
            # A snapshot at the first request: later deletes do not change the pages
            # (docs/cloudflare.md#asynchronous-writes).
            cursor = uuid.uuid4().hex
            expires = datetime.now(UTC) + timedelta(minutes=10)
            self._snapshots[cursor] = (sorted(index.vectors), 0, expires)
        if cursor not in self._snapshots or self._snapshots[cursor][2] < datetime.now(UTC):
            raise ApiError(400, 40030, "vectorize.invalid_cursor - cursor expired or unknown")
        ids, start, expires = self._snapshots.pop(cursor)
        page, end = ids[start : start + count], start + count
        truncated = end < len(ids)
        if truncated:
            self._snapshots[cursor] = (ids, end, expires)
        return {
            "count": len(page),
            "totalCount": len(ids),
            "isTruncated": truncated,
            "nextCursor": cursor if truncated else None,
            "cursorExpirationTimestamp": expires.isoformat().replace("+00:00", "Z"),
            "vectors": [{"id": i} for i in page],
        }


def _check_record(index: FakeIndex, record: dict[str, Any]) -> None:
    vid = record["id"]
    if len(vid.encode()) > 64:
        raise ApiError(400, 40020, f'vectorize.invalid_vector_id - id "{vid}" is over 64 bytes')
    if len(record["values"]) != index.dimensions:
        raise ApiError(
            400,
            40012,
            f'invalid vector for id="{vid}", expected {index.dimensions} '
            f"dimensions, and got {len(record['values'])} dimensions",
        )
    size = len(json.dumps(record.get("metadata", {}), separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise ApiError(400, 40021, f'vectorize.metadata_too_large - id "{vid}": {size} bytes')


def _score(metric: str, a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    if metric == "euclidean":
        return float(np.linalg.norm(a - b))
    dot = float(a @ b)
    if metric == "dot-product":
        return dot
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return dot / norms if norms else 0.0


def _indexed(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode()[:INDEXED_STRING_BYTES].decode(errors="ignore")
    return value


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda have, want: have == want,
    "$ne": lambda have, want: have != want,
    "$in": lambda have, want: have in want,
    "$nin": lambda have, want: have not in want,
    "$lt": lambda have, want: have is not None and have < want,
    "$lte": lambda have, want: have is not None and have <= want,
    "$gt": lambda have, want: have is not None and have > want,
    "$gte": lambda have, want: have is not None and have >= want,
}


def _matches(flt: dict[str, Any], stored: Stored) -> bool:
    for key, cond in flt.items():
        if key not in stored.indexed:
            return False  # an unindexed property (or one indexed too late) never matches
        ops = cond if isinstance(cond, dict) else {"$eq": cond}
        if not all(_OPS[op](stored.metadata.get(key), want) for op, want in ops.items()):
            return False
    return True


_RESULT_SCHEMAS = {
    "POST indexes": "vectorize_create-index-response",
    "": "vectorize_create-index-response",
    "info": "vectorize_index-info-response",
    "query": "vectorize_index-query-v2-response",
    "get_by_ids": "vectorize_index-get-vectors-by-id-response",
    "list": "vectorize_list-vectors-response",
    "insert": "vectorize_index-upsert-v2-response",
    "upsert": "vectorize_index-upsert-v2-response",
    "delete_by_ids": "vectorize_index-upsert-v2-response",
    "metadata_index/create": "vectorize_index-upsert-v2-response",  # same {mutationId}
    "metadata_index/list": "vectorize_list-metadata-index-response",
}
"""Result schema by the path after the index name ("": the index itself)."""
