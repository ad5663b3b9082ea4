"""Prometheus metrics of one app, served at ``GET /metrics`` in the text format.

prometheus-client (the Prometheus project's own library) does the exposition: label
escaping, histogram buckets and ``_sum``/``_count`` are easy to get subtly wrong by
hand. Each app gets its own registry instead of the library's global one, so two apps
in one process (tests, or an embedding program) never share or clash over series.

Where the figures come from:

* requests: the request observer around the whole app (``rag.web.access_log``);
* answer stages, providers, cache hits: each answer's ``done`` event as it streams;
* tokens, neurons, dollars by model: every costed call the usage ledger records,
  so ingestion and search count as well as answers;
* database failures: every best-effort read or write the service stepped over;
* ingestion: the reports of upload ingests and ``/v1/ingest`` jobs in this process
  (a ``rag ingest`` in another process is in the ``ingest_runs`` table, not here).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rag.domain import AnswerEvent, DoneEvent, ErrorEvent, IngestReport
from rag.ports import Cost

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format every Prometheus version scrapes."""

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OUTCOMES = ("new", "updated", "unchanged", "deleted", "skipped", "failed")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rag_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "rag_http_request_duration_seconds",
            "Time to the end of the response (a whole stream for /v1/ask).",
            ["route", "method"],
            buckets=_SECONDS,
            registry=r,
        )
        self.answer_seconds = Histogram(
            "rag_answer_stage_seconds",
            "Answer latency per stage, from the done event: retrieve, first_token, total.",
            ["stage"],
            buckets=_SECONDS,
            registry=r,
        )
        self.answers = Counter(
            "rag_answers",
            "Answers completed, by the provider that answered, groundedness and caching.",
            ["provider", "grounded", "cached"],
            registry=r,
        )
        self.cache_hits = Counter(
            "rag_answer_cache_hits", "Answers replayed from the answer cache.", registry=r
        )
        self.answer_errors = Counter(
            "rag_answer_errors",
            "Answer streams that ended in an error event.",
            ["code"],
            registry=r,
        )
        self.tokens = Counter(
            "rag_model_tokens",
            "Model tokens by model, call kind and direction (input or output).",
            ["model", "kind", "direction"],
            registry=r,
        )
        self.neurons = Counter(
            "rag_model_neurons",
            "Workers AI neurons by model and call kind.",
            ["model", "kind"],
            registry=r,
        )
        self.usd = Counter(
            "rag_model_usd",
            "List-price dollars by model and call kind.",
            ["model", "kind"],
            registry=r,
        )
        self.ingest_documents = Counter(
            "rag_ingest_documents",
            "Documents seen by ingest runs in this process, by outcome.",
            ["trigger", "outcome"],
            registry=r,
        )
        self.ingest_chunks = Counter(
            "rag_ingest_chunks_embedded",
            "Chunks embedded by ingest runs (reused vectors not counted).",
            ["trigger"],
            registry=r,
        )
        self.db_write_failures = Counter(
            "rag_db_write_failures",
            "Best-effort database writes that failed; the answers went on without them.",
            ["what"],
            registry=r,
        )
        self.db_read_failures = Counter(
            "rag_db_read_failures",
            "Best-effort database reads that failed (the cache lookup, today's spend).",
            ["what"],
            registry=r,
        )
        self.jobs_running = Gauge(
            "rag_ingest_jobs_running", "Ingestion jobs running now.", registry=r
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method).observe(seconds)

    def observe_answer(self, event: AnswerEvent) -> None:
        if isinstance(event, ErrorEvent):
            self.answer_errors.labels(event.code).inc()
            return
        if not isinstance(event, DoneEvent):
            return
        latency = event.latency_ms
        self.answer_seconds.labels("retrieve").observe(latency.retrieve / 1000)
        if latency.first_token is not None:
            self.answer_seconds.labels("first_token").observe(latency.first_token / 1000)
        self.answer_seconds.labels("total").observe(latency.total / 1000)
        self.answers.labels(event.provider, _flag(event.grounded), _flag(event.cached)).inc()
        if event.cached:
            self.cache_hits.inc()

    def observe_cost(self, cost: Cost) -> None:
        """A ``Ledger`` observer: one costed model call. Counters only go up, and a model
        call must never fail over a figure, so anything negative counts as zero."""
        model, kind = cost.model, cost.kind
        self.tokens.labels(model, kind, "input").inc(max(cost.input_tokens, 0))
        self.tokens.labels(model, kind, "output").inc(max(cost.output_tokens, 0))
        self.neurons.labels(model, kind).inc(max(cost.neurons, 0.0))
        self.usd.labels(model, kind).inc(max(cost.usd, 0.0))

    def observe_db_failure(self, what: str, op: str) -> None:
        """A service observer: one best-effort database read or write that failed."""
        (self.db_read_failures if op == "read" else self.db_write_failures).labels(what).inc()

    def observe_ingest(self, report: IngestReport, trigger: str) -> None:
        for outcome in _OUTCOMES:
            self.ingest_documents.labels(trigger, outcome).inc(getattr(report, outcome))
        self.ingest_chunks.labels(trigger).inc(report.embedded)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _flag(value: bool) -> str:
    return "true" if value else "false"


@get("/metrics", summary="Prometheus metrics (text format)", include_in_schema=False)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = request.app.state
    if state.settings.web.metrics == "off":
        raise NotFoundException("metrics are turned off ([web] metrics)")
    metrics: Metrics = state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
