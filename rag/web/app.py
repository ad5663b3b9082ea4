"""The Litestar application factory and its error mapping."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from rag.config import Settings
from rag.errors import RagError
from rag.ports import QAService
from rag.web.routes import DEPENDENCIES, ROUTES
from rag.web.schemas import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)


def create_app(settings: Settings, service: QAService | None = None) -> Litestar:
    """The web app. Without ``service`` it opens the real one at startup, closes it at shutdown."""
    lifespan = [] if service is not None else [_service_lifespan(settings)]
    return Litestar(
        route_handlers=ROUTES,
        dependencies=DEPENDENCIES,
        state=State({"settings": settings, "service": service}),
        lifespan=lifespan,
        exception_handlers={
            RagError: _rag_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        openapi_config=OpenAPIConfig(
            title="rag",
            version="1",
            description="Cited, streamed answers about your own documents.",
            path="/schema",
        ),
        # The process (CLI, uvicorn, pytest) owns the root logger; Litestar's default
        # would replace its handlers. Failures are logged by the handlers below, once.
        logging_config=LoggingConfig(configure_root_logger=False, log_exceptions="never"),
        debug=False,
    )


def _service_lifespan(
    settings: Settings,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Imported here so the web layer (and its tests with a fake service) never
        # pulls in the database and model backends.
        from rag.service import open_service

        async with open_service(settings) as service:
            app.state.service = service
            try:
                yield
            finally:
                app.state.service = None

    return lifespan


def _error(status: int, code: str, message: str) -> Response[ErrorResponse]:
    return Response(
        ErrorResponse(ErrorDetail(code=code, message=message)),
        status_code=status,
        media_type=MediaType.JSON,
    )


def _rag_error(request: Request[Any, Any, Any], exc: RagError) -> Response[ErrorResponse]:
    if exc.status_code >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return _error(exc.status_code, exc.code, exc.message)


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    if exc.status_code >= 500:
        return _internal_error(request, exc)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if isinstance(exc, ValidationException):
        message = _validation_message(exc)
    elif isinstance(exc.__cause__, SerializationException):
        message = f"request body is not valid JSON: {exc.detail}"
    else:
        message = exc.detail
    response = _error(exc.status_code, code, message)
    if exc.headers:
        response.headers.update(exc.headers)  # e.g. Allow on a 405
    return response


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
        problems.append(f"{key}: {message}" if key and key not in message else message)
    return "; ".join(problems) or exc.detail


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "internal", "internal error")
