"""SQLAlchemy 2 models: the source of truth for documents, chunks and vectors.

The FTS5 table ``chunks_fts`` (external content over ``chunks``, keyed by ``seq``) and
the triggers that keep it in step are created by the migration, not here: SQLAlchemy
has no model for virtual tables, and triggers make the keyword index commit or roll
back with the chunk rows. On PostgreSQL the keyword index is the generated column
``chunks.search_vector`` (a ``tsvector``, GIN-indexed), also made by the migration only: the
models stay the same on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    """Now, as every ``DateTime`` column here holds it: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


Int64 = BigInteger().with_variant(Integer(), "sqlite")
"""Byte counts and nanosecond times, past 2**31 (an mtime_ns is about 1.8e18). SQLite's
INTEGER is 64-bit already, and stays INTEGER there so its schema needs no change."""


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text, unique=True)
    """Absolute POSIX path of the file."""
    root: Mapped[str] = mapped_column(Text, index=True)
    """The folder it was ingested from; deletions are decided per root."""
    path: Mapped[str] = mapped_column(Text)
    """Path relative to ``root``: what people and evaluation sets name."""
    title: Mapped[str] = mapped_column(Text, default="")
    media_type: Mapped[str] = mapped_column(String(100), default="")
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Int64)
    mtime_ns: Mapped[int] = mapped_column(Int64, default=0)
    pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    """ok, skipped or failed; pending while an upload waits for its ingestion job."""
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The API key that uploaded it (``api_keys.id``), for the per-key upload quota; None
    for folder ingests and for uploads made while keys are not required."""
    chunker: Mapped[str] = mapped_column(String(64), default="")
    """Fingerprint of the chunker settings that cut this document."""
    blob_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Where an upload's bytes are kept (``rag.storage``): a path in the upload folder or
    ``s3://bucket/key``. None for a document ingested from a folder, whose ``source`` is
    the path on the machine that ingested it. A failed upload keeps it, though its bytes
    were removed on purpose (its status says so)."""
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, server_default=func.now(), onupdate=func.now()
    )


class Chunk(Base):
    __tablename__ = "chunks"

    # An integer key that VACUUM never renumbers: the FTS5 index is keyed by it.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    page_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    page_end: Mapped[int | None] = mapped_column(Integer, nullable=True)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    heading_path: Mapped[list[str]] = mapped_column(JSON, default=list)
    token_count: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    recognised: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The text was recognised from a scan or image by OCR, not read from a text layer."""
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    """The recogniser's confidence (0-1) in a recognised chunk; null otherwise."""


class Vector(Base):
    __tablename__ = "vectors"

    chunk_id: Mapped[str] = mapped_column(
        ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    dimension: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    """float32, little-endian, L2-normalised."""

    __table_args__ = (Index("ix_vectors_model", "model_id"),)


class ChunkUnits(Base):
    """The answer units of a chunk and their vectors, for the local extractive answerer.

    Computed at ingestion (``rag.backends.local.units``) so an answer embeds only its
    question. A chunk's id stands for its text, so the row stays right for as long as
    the chunk exists, and goes with it (the cascade). ``version`` names the splitter and
    the embedding model: a row of another version is computed again.
    """

    __tablename__ = "chunk_units"

    chunk_id: Mapped[str] = mapped_column(
        ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[str] = mapped_column(String(200))
    spans: Mapped[list[list[object]]] = mapped_column(JSON)
    """[start, end, kind, header start or null, header end or null] per unit, in order."""
    vectors: Mapped[bytes] = mapped_column(LargeBinary)
    """float32, little-endian, L2-normalised: one row per unit, in the order of ``spans``."""


class IngestRun(Base):
    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    roots: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    """running, finished, interrupted (its heartbeat stopped: the process died)."""
    started_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    """Written every ``[jobs] heartbeat_s`` while the run is alive (UTC); a running run
    whose heartbeat is older than ``[jobs] stale_after_s`` is marked interrupted."""
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    errors: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


ACTIVE_JOB_STATES = ("queued", "running")
"""States that hold a job's target: no second job over it may be queued or run."""
_ACTIVE = text("state IN ('queued', 'running')")


class Job(Base):
    """An ingestion job (``rag.jobs``): what to ingest, who runs it, how far it got.

    Every replica and worker reads and claims the same rows, so a job started on one is
    visible on all, and one whose worker died is claimed again once its heartbeat is
    older than ``[jobs] stale_after_s``.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """folder (``POST /v1/ingest``), upload (``POST /v1/documents``) or cli (``rag ingest``)."""
    target: Mapped[str] = mapped_column(Text)
    """The resolved paths it ingests, one a line: at most one active job per target."""
    paths: Mapped[list[str]] = mapped_column(JSON)
    document_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The uploaded document an upload job ingests (no foreign key: a delete cancels the
    job and the row keeps saying why)."""
    state: Mapped[str] = mapped_column(String(16))
    """queued, running, finished, failed or cancelled."""
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """Who holds (or last held) it: host, process id and a random suffix."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Claims so far: above 1, a worker died (or stopped) and another took it up."""
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    files_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    embedded: Mapped[int] = mapped_column(Integer, default=0)
    pages_recognised: Mapped[int] = mapped_column(Integer, default=0)
    """Pages read by OCR so far (migration 0013)."""
    current: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Set by whoever asks a running job to stop; its worker sees it at the next heartbeat."""

    __table_args__ = (
        # The one-job-per-folder rule, kept by the database for every replica and worker:
        # a second insert over an active target fails however the two requests interleave.
        Index(
            "ux_jobs_active_target",
            "target",
            unique=True,
            sqlite_where=_ACTIVE,
            postgresql_where=_ACTIVE,
        ),
        Index("ix_jobs_state_created", "state", "created_at"),
        Index("ix_jobs_document", "document_id"),
    )


class Meta(Base):
    """Small key/value facts, such as the index generation bumped by every ingest write."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class UsageCall(Base):
    """One costed model call: the ledger that per-answer, per-run and per-day figures sum."""

    __tablename__ = "usage_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    day: Mapped[str] = mapped_column(String(10), index=True)
    """UTC date, YYYY-MM-DD: Workers AI's free allocation resets at 00:00 UTC."""
    provider: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    """embed, rerank or chat."""
    purpose: Mapped[str] = mapped_column(String(16))
    """ask, ingest or eval."""
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    neurons: Mapped[float] = mapped_column(Float, default=0.0)
    usd: Mapped[float] = mapped_column(Float, default=0.0)
    estimated: Mapped[bool] = mapped_column(default=False)
    """True when tokens were counted locally because the response carried no usage."""
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class VectorMutation(Base):
    """A Vectorize write, remembered until the index reports it processed."""

    __tablename__ = "vector_mutations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    index_name: Mapped[str] = mapped_column(String(100))
    mutation_id: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """upsert or delete."""
    count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class IndexOutbox(Base):
    """A serving-index write owed for a committed chunk change (the transactional outbox).

    Written by ``rag.ingest.store`` in the transaction that changes the chunk, and only
    for an index that declares ``durable_outbox`` (Vectorize); the index deletes a row
    once Cloudflare has accepted the write it stands for. No vector is copied here: the
    values and ``document_id`` are read from ``vectors`` and ``chunks`` when it is sent.
    """

    __tablename__ = "index_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(200))
    chunk_id: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(8))
    """upsert or delete."""
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())

    __table_args__ = (Index("ix_index_outbox_model", "model_id", "id"),)




class IndexLog(Base):
    """A vector added or removed, for every process that mirrors the vectors in memory.

    Written by ``rag.ingest.store`` in the transaction that changes the chunk, tagged with
    the index generation that transaction bumped to; each process applies the rows past
    the generation it holds (``rag.backends.local.follower``). Rows carry no vector: the
    reader takes the stored one (or its absence) when it applies the row.
    """

    __tablename__ = "index_log"

    id: Mapped[int] = mapped_column(Int64, primary_key=True, autoincrement=True)
    """64 bits where a counter may outlive 2**31; on SQLite an INTEGER PRIMARY KEY, the
    only kind it auto-increments (``Int64``)."""
    generation: Mapped[int] = mapped_column(BigInteger, index=True)
    chunk_id: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(8))
    """add or remove."""


class RateCount(Base):
    """Requests a client made in the current and the previous minute, shared by replicas
    (``rag.web.shared_limit``)."""

    __tablename__ = "rate_counts"

    client: Mapped[str] = mapped_column(String(100), primary_key=True)
    slot: Mapped[int] = mapped_column(BigInteger)
    """The minute counted: Unix time // 60."""
    hits: Mapped[int] = mapped_column(Integer)
    """Requests let through in ``slot``."""
    prior: Mapped[int] = mapped_column(Integer)
    """Requests let through in the minute before ``slot``."""
    allowed: Mapped[bool] = mapped_column()
    """Whether the last request was let through (what the one statement returns)."""


class BlobDeletion(Base):
    """An upload's bytes that must go: recorded with the change that made them garbage.

    Written in the transaction that deletes a document (or fails an upload), removed once
    the blob store has deleted the object. A row left behind means the store refused or
    was unreachable: the next delete and the next start try again (``rag.storage.cleanup``),
    and nothing adopts the object as an unrecorded upload meanwhile.
    """

    __tablename__ = "blob_deletions"

    location: Mapped[str] = mapped_column(Text, primary_key=True)
    """The ``documents.blob_uri`` of the bytes."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())


class CachedAnswer(Base):
    __tablename__ = "answer_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """sha256 of normalised question, index fingerprint, chat model and prompt version."""
    question: Mapped[str] = mapped_column(Text)
    events: Mapped[list[dict[str, object]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    hits: Mapped[int] = mapped_column(Integer, default=0)
    generation: Mapped[int] = mapped_column(Integer, index=True, default=0)
    """The index generation it was answered at: entries of older generations are purged."""
    used_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    """Last stored or served (UTC); the least recently used go first when the cache is full."""


class EvalRun(Base):
    __tablename__ = "eval_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dataset: Mapped[str] = mapped_column(Text)
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    questions: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[dict[str, object]] = mapped_column(JSON)
    """What produced the run: models, chunking, top-K, thresholds, prompt, git commit."""
    metrics: Mapped[dict[str, object]] = mapped_column(JSON)


class EvalResult(Base):
    __tablename__ = "eval_results"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("eval_runs.id", ondelete="CASCADE"), primary_key=True
    )
    question_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    """Position in the dataset, so a run reads back in the order it was asked."""
    question: Mapped[str] = mapped_column(Text)
    answerable: Mapped[bool] = mapped_column()
    result: Mapped[dict[str, object]] = mapped_column(JSON)
    """Retrieved and reranked ids with scores, answer, citations, per-question metrics."""


class ApiKey(Base):
    """An API key for the HTTP API; only its sha256 is stored (``rag.keys``)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    """The key's first characters, so people can tell keys apart; far too short to guess."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ApiBudget(Base):
    """Calls reserved from an API's budget by every process, shared by replicas
    (``rag.backends.cloudflare.shared_budget``)."""

    __tablename__ = "api_budget"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    """Whose budget: ``cloudflare:<account id>``."""
    slot: Mapped[int] = mapped_column(BigInteger)
    """The latest sub-window counted: Unix time // a tenth of the window (30 s)."""
    # Calls reserved in the last 11 sub-windows: c0 in ``slot``, c1 in the one before, and
    # so on (calls a process gave back are taken off).
    c0: Mapped[int] = mapped_column(Integer)
    c1: Mapped[int] = mapped_column(Integer)
    c2: Mapped[int] = mapped_column(Integer)
    c3: Mapped[int] = mapped_column(Integer)
    c4: Mapped[int] = mapped_column(Integer)
    c5: Mapped[int] = mapped_column(Integer)
    c6: Mapped[int] = mapped_column(Integer)
    c7: Mapped[int] = mapped_column(Integer)
    c8: Mapped[int] = mapped_column(Integer)
    c9: Mapped[int] = mapped_column(Integer)
    c10: Mapped[int] = mapped_column(Integer)
    granted: Mapped[int] = mapped_column(Integer)
    """Calls the last reservation got (what the one statement returns)."""
    held_until: Mapped[float] = mapped_column(Float)
    """Unix time until which the API refuses every call (a 429 seen by any process)."""


class RefusalMemory(Base):
    """The last refusal of every call of a service (degraded mode), shared by replicas
    (``rag.retrieval.shared_refusals``)."""

    __tablename__ = "refusal_memory"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    """Who refused: ``workers-ai``."""
    code: Mapped[str] = mapped_column(String(32))
    """The error's code (``daily_limit``, ``auth``, ``upstream_unavailable``, ...)."""
    reason: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    cf_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    until: Mapped[float] = mapped_column(Float)
    """Unix time the refusal holds until (00:00 UTC for a 3036)."""
