"""The Litestar application factory: routes, access control, limits, observability.

Layers, outermost first: uvicorn's ``ProxyHeadersMiddleware`` (the client address and
scheme, from ``X-Forwarded-*`` only when the peer is in ``[server] trusted_proxies``),
``RequestObserver`` (one log line and the request metrics for every request, 404s
included), ``RequestGate`` (the Host check, and cross-site requests refused), CORS (only
with ``[web] cors_origins``), routing, the guards (API key and rate limit on ``/v1``,
then the body's media type), then the handler, whose request body is capped at
``[web] max_body_mb`` (uploads: ``[uploads] max_mb``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast

from litestar import Litestar, MediaType, Request, Response, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.logging import LoggingConfig
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ASGIApp, ControllerRouterHandler
from sqlalchemy.exc import SQLAlchemyError
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from rag.config import Settings
from rag.db.failures import as_storage_error
from rag.errors import RagError
from rag.jobs.queue import JobQueue
from rag.jobs.worker import Worker
from rag.logs import printable
from rag.ports import QAService
from rag.registry import blob_store
from rag.web.access_log import RequestObserver
from rag.web.answer_slots import AnswerSlots
from rag.web.api_docs import BEARER, openapi_config
from rag.web.auth import API_PREFIX, Access, access_guard
from rag.web.documents import MB, upload_handler
from rag.web.documents import ROUTES as DOCUMENT_ROUTES
from rag.web.edge import Edge
from rag.web.metrics import Metrics, metrics_endpoint
from rag.web.origin import RequestGate, body_type_guard
from rag.web.page import PAGE_ROUTES
from rag.web.routes import DEPENDENCIES, ROUTES
from rag.web.schemas import ErrorDetail, ErrorResponse
from rag.web.upload_store import UploadStore

log = logging.getLogger(__name__)


def create_app(settings: Settings, service: QAService | None = None) -> Litestar:
    """The web app. Without ``service`` it opens the real one at startup, closes it at shutdown."""
    metrics = Metrics()
    state = State(
        {
            "settings": settings,
            "service": service,
            "metrics": metrics,
            # Both opened with the service's database, at startup (``_observed``).
            "jobs": None,
            "worker": None,
            "uploads": UploadStore(settings, blob_store(settings)),
        }
    )
    metrics.jobs_running.set_function(lambda: state.worker.running if state.worker else 0)
    state.answer_slots = AnswerSlots(settings.server.max_concurrent_answers)
    # The key store reads the service's database, which may open only at startup.
    state.access = Access(
        settings,
        lambda: state.service.sessions if state.service else None,
        lambda: state.service.quick_sessions if state.service else None,
    )
    api = [h for h in ROUTES if all(path.startswith(API_PREFIX) for path in h.paths)]
    app = Litestar(
        route_handlers=[
            *[h for h in ROUTES if h not in api],
            Router(
                path="/",
                route_handlers=[*api, *DOCUMENT_ROUTES, upload_handler(settings)],
                security=BEARER,
            ),
            metrics_endpoint,
            # page.py's list mixes a handler and a Router, which mypy widens to object.
            *cast(list[ControllerRouterHandler], PAGE_ROUTES),
        ],
        dependencies=DEPENDENCIES,
        state=state,
        lifespan=[_lifespan(settings, open_service=service is None)],
        # The key first: a caller without one learns nothing about the routes' bodies.
        guards=[access_guard, body_type_guard],
        request_max_body_size=int(settings.web.max_body_mb * MB),
        cors_config=_cors(settings),
        exception_handlers={
            RagError: _rag_error,
            HTTPException: _http_error,
            SQLAlchemyError: _storage_error,
            OSError: _storage_error,
            Exception: _internal_error,
        },
        openapi_config=openapi_config(),
        # The process (CLI, uvicorn, pytest) owns the root logger; Litestar's default
        # would replace its handlers. Failures are logged by the handlers below, once.
        logging_config=LoggingConfig(configure_root_logger=False, log_exceptions="never"),
        debug=False,
    )
    # Around Litestar's own handler rather than as middleware: middleware only runs for
    # requests that matched a route, and 404s, 405s and preflights belong in the log.
    # Edge inside the observer, so what it refuses is logged and counted like the rest.
    observed = RequestObserver(
        Edge(RequestGate(app.asgi_handler, settings)), metrics, settings.web.log_questions
    )
    # In the app rather than left to the server, so the rule is the same under any ASGI
    # server and in tests; `rag serve` turns uvicorn's own copy off (it trusts loopback,
    # that is every peer of a local server). Outermost, so that the log, the rate limit
    # and the same-origin check all see the client's address and scheme.
    app.asgi_handler = cast(
        ASGIApp, ProxyHeadersMiddleware(cast(Any, observed), list(settings.server.trusted_proxies))
    )
    return app


def _cors(settings: Settings) -> CORSConfig | None:
    """None (no CORS headers at all, so browsers keep other origins out) unless configured."""
    origins = list(settings.web.cors_origins)
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Retry-After", "X-Trace-Id", "Location"],
        max_age=600,
    )


def _lifespan(
    settings: Settings, *, open_service: bool
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if not open_service:
            async with _observed(app):
                yield
            return
        # Imported here so the web layer (and its tests with a fake service) never
        # pulls in the database and model backends.
        from rag.service import open_service as open_rag_service

        async with open_rag_service(settings) as service:
            app.state.service = service
            try:
                async with _observed(app):
                    yield
            finally:
                app.state.service = None

    return lifespan


@asynccontextmanager
async def _observed(app: Litestar) -> AsyncIterator[None]:
    """Count the service's model costs in the metrics while the app runs; open the job
    queue and, with ``[jobs] run_in_server``, run a worker; settle what a killed process
    left of its uploads at start; hand running jobs back to the queue at exit."""
    service: QAService = app.state.service
    metrics: Metrics = app.state.metrics
    settings: Settings = app.state.settings
    stops = [
        service.observe_costs(metrics.observe_cost),
        service.observe_db_failures(metrics.observe_db_failure),
    ]
    worker: Worker | None = None
    if service.sessions is not None:
        jobs = app.state.jobs = JobQueue(service.sessions, settings.jobs)
        if settings.jobs.run_in_server:
            worker = app.state.worker = Worker(
                jobs,
                service,
                slots=settings.uploads.max_concurrent_jobs,
                role="serve",
                on_report=metrics.observe_ingest,
                blobs=app.state.uploads.blobs,
            )
            worker.start()
        await _recover_uploads(app.state.uploads, service, jobs)
    try:
        yield
    finally:
        # Before the service closes: a job must not write to a disposed engine.
        if worker is not None:
            await worker.close()
        app.state.jobs = app.state.worker = None
        for stop in stops:
            stop()


async def _recover_uploads(desk: UploadStore, service: QAService, jobs: JobQueue) -> None:
    # Secondary to serving: a store it cannot read is logged, and the app starts anyway.
    try:
        found = await desk.recover(service, jobs)
    except RagError as exc:
        log.warning("settling the uploads in %s at start failed: %s", desk.blobs.root, exc)
        return
    except Exception:
        log.exception("settling the uploads in %s at start failed", desk.blobs.root)
        return
    if found.queued or found.forgotten or found.adopted or found.removed:
        log.info(
            "uploads settled at start: %d pending uploads queued again, %d files "
            "recorded and queued, %d unfinished uploads forgotten, %d files removed",
            found.queued,
            found.adopted,
            found.forgotten,
            found.removed,
        )


def _error(status: int, code: str, message: str) -> Response[ErrorResponse]:
    return Response(
        ErrorResponse(ErrorDetail(code=code, message=message)),
        status_code=status,
        media_type=MediaType.JSON,
    )


def _rag_error(request: Request[Any, Any, Any], exc: RagError) -> Response[ErrorResponse]:
    if exc.status_code >= 500:
        log.error("%s %s failed: %s", request.method, printable(request.url.path), exc.message)
    response = _error(exc.status_code, exc.code, exc.message)
    headers = getattr(exc, "headers", None)  # WWW-Authenticate on 401, Retry-After on 429
    if isinstance(headers, dict):
        response.headers.update(headers)
    return response


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
}


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    if exc.status_code >= 500:
        return _internal_error(request, exc)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if isinstance(exc, ValidationException):
        message = _validation_message(exc)
    elif isinstance(exc.__cause__, SerializationException):
        message = f"request body is not valid JSON: {exc.detail}"
    elif exc.status_code == 413:
        message = _too_large(request)
    else:
        message = exc.detail
    response = _error(exc.status_code, code, message)
    if exc.headers:
        response.headers.update(exc.headers)  # e.g. Allow on a 405
    return response


def _too_large(request: Request[Any, Any, Any]) -> str:
    settings: Settings = request.app.state.settings
    if request.url.path == "/v1/documents":
        limit, name = settings.uploads.max_mb, "[uploads] max_mb"
    else:
        limit, name = settings.web.max_body_mb, "[web] max_body_mb"
    return f"request body is larger than the {limit:g} MB limit ({name})"


def _validation_message(exc: ValidationException) -> str:
    """Litestar's per-field messages (in ``extra``), each led by the field it is about."""
    problems = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid value"))
        key = str(item.get("key") or "")
        if key == "data":
            # Litestar names the body after the handler's ``data`` argument, and reports
            # an empty body as the bare KeyError text "'data'".
            if message == "'data'":
                problems.append("request body is missing: send a JSON object")
                continue
            key = "request body"
        # Always led by the key: msgspec's messages do not name the field they are about,
        # and an enum message quotes the value, which may well contain the field's name.
        problems.append(f"{key}: {message}" if key else message)
    return "; ".join(problems) or exc.detail


def _storage_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    """A full disk or a read-only folder under a write that had to happen (an upload, an
    ingest) is named (``disk_full``, 507; ``read_only``...), not an ``internal`` 500."""
    error = as_storage_error(exc, None)
    if error is None:
        return _internal_error(request, exc)
    log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return _rag_error(request, error)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    log.error("%s %s failed", request.method, printable(request.url.path), exc_info=exc)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "internal", "internal error")
