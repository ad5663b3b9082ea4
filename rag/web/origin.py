"""Requests a browser sends on another site's behalf: refused before they reach a handler.

A server on loopback with no keys is open to every page its user visits, because the
browser will send requests there for them. Three checks close that:

- **Host.** A page on a rebound DNS name (evil.example now resolving to 127.0.0.1) is
  same-origin with itself, so CORS and the Origin check both pass; only the Host header
  still says ``evil.example``. ``[server] allowed_hosts`` names the hosts served; unset,
  a loopback bind serves only its loopback names.
- **Origin.** A state-changing request (any method but GET, HEAD and OPTIONS), or a
  question (``GET /v1/ask`` spends the model budget), from a page of another origin is
  refused, unless ``[web] cors_origins`` lists that origin. A form post, a "simple"
  fetch or an ``EventSource`` needs no CORS preflight: closed CORS hides the response
  but the request is still made. A request without ``Origin`` or ``Sec-Fetch-Site`` is
  not from a browser (curl, the CLI, scripts) and passes: such a client could send any
  header it liked anyway.
- **Body type.** A handler that decodes a JSON body accepts only ``application/json``
  (a multipart one only multipart): ``text/plain`` is exactly the type a cross-site
  page may send without a preflight.

The first two run outside routing (``RequestGate``), so unknown paths and methods are
covered too; the third is a guard, as it needs the handler to know what body it takes.
Why these three: docs/design.md#requests-from-other-sites.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import msgspec
from litestar.connection import ASGIConnection
from litestar.datastructures import Headers
from litestar.enums import RequestEncodingType, ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from rag.config import Settings
from rag.errors import RagError
from rag.web.auth import is_loopback
from rag.web.schemas import ErrorDetail, ErrorResponse

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
COSTLY_READS = frozenset({("GET", "/v1/ask")})
"""Safe requests that still spend money, so another site's page may not make them."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ECHO_MAX = 100
"""Characters of a refused Host or Origin quoted back in the message."""

Host = tuple[str, int | None]


class UnsupportedMediaType(RagError):
    status_code = 415
    code = "unsupported_media_type"


def split_host(value: str) -> Host:
    """``name[:port]`` or ``[v6][:port]``, lower-cased; IPv6 keeps its brackets, as in Host."""
    value = value.strip().lower()
    name, _, port = value.rpartition(":")
    # A colon inside an unbracketed name means a bare IPv6 address, which has no port.
    if port.isdigit() and name and (":" not in name or name.endswith("]")):
        return name, int(port)
    return value, None


def served_hosts(settings: Settings) -> frozenset[Host] | None:
    """The Host values this server answers to, or None for any (as ``auth_required`` does,
    the default follows the bind address: ``rag serve --host`` rewrites ``[server] host``)."""
    if settings.server.allowed_hosts:
        if "*" in settings.server.allowed_hosts:
            return None
        return frozenset(split_host(entry) for entry in settings.server.allowed_hosts)
    bind = settings.server.host.strip("[]").lower()
    if not is_loopback(bind):
        return None
    own = f"[{bind}]" if ":" in bind else bind  # e.g. 127.0.0.2, or ::1 written out
    return frozenset((name, None) for name in {*LOOPBACK_HOSTS, own})


def host_warning(settings: Settings) -> str | None:
    """What ``rag serve`` warns about when any Host is answered without anyone choosing it."""
    if settings.server.allowed_hosts or served_hosts(settings) is not None:
        return None
    return (
        f"serving on {settings.server.host} with [server] allowed_hosts unset: any Host "
        "header is answered, so a web page can reach the API through DNS rebinding. List "
        'the names clients use (or "*" to answer any).'
    )


def normalise_origin(value: str) -> str:
    """``scheme://host[:port]`` lower-cased, the default port left out; unparsable as is."""
    try:
        parts = urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:
        return value
    if not parts.scheme or not parts.hostname:
        return value  # "null" (sandboxed frames, file: pages) and other oddities
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


class RequestGate:
    """The Host and Origin checks, around the app's whole ASGI handler."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = served_hosts(settings)
        self.cors = frozenset(normalise_origin(o) for o in settings.web.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            http: HTTPScope = scope
            refusal = self._refusal(http)
            if refusal is not None:
                await _refuse(send, *refusal)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: HTTPScope) -> tuple[int, str, str] | None:
        headers = Headers.from_scope(scope)
        host = headers.get("host", "")
        if self.hosts is not None and not self._serves(host):
            # 421 Misdirected Request (RFC 9110, 15.5.20): the request is well formed but
            # names an authority this server does not answer for; 400 would blame its
            # syntax, 403 the client's rights, when it is the name that is wrong.
            shown = _quoted(host) if host else "(none)"
            return (
                421,
                "unknown_host",
                f"this server does not answer to the Host {shown}: "
                "add the name to [server] allowed_hosts to serve it",
            )
        request = (scope["method"], scope["path"])
        if request[0] in SAFE_METHODS and request not in COSTLY_READS:
            return None
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site")
        if origin is not None and normalise_origin(origin) in self.cors:
            return None
        # The browser's own verdict, which no page can forge; it also holds behind a
        # proxy whose scheme or host this server cannot see.
        if site == "same-origin":
            return None
        own = normalise_origin(f"{scope['scheme']}://{host}")
        if site in ("cross-site", "same-site") or (
            origin is not None and normalise_origin(origin) != own
        ):
            source = f"origin {_quoted(origin)}" if origin else f"a {site} page"
            return (
                403,
                "cross_site",
                f"cross-site request refused: {scope['method']} from {source}, not from "
                f"this server's own pages ({own}); to let that origin call the API, "
                "list it in [web] cors_origins",
            )
        return None

    def _serves(self, host: str) -> bool:
        assert self.hosts is not None
        name, port = split_host(host)
        return (name, None) in self.hosts or (port is not None and (name, port) in self.hosts)


def _quoted(value: str) -> str:
    return repr(value if len(value) <= _ECHO_MAX else value[:_ECHO_MAX] + "...")


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = msgspec.json.encode(ErrorResponse(ErrorDetail(code=code, message=message)))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def body_media_type(handler: BaseRouteHandler) -> str | None:
    """The media type of the body ``handler`` decodes (its ``data``), or None if it takes none."""
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return None
    encoding = getattr(data.kwarg_definition, "media_type", None) or RequestEncodingType.JSON
    return str(RequestEncodingType(encoding).value)


async def body_type_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """App-level guard: a body is decoded only when it is sent as the type the handler takes."""
    expected = body_media_type(handler)
    if expected is None:
        return
    sent = connection.headers.get("content-type", "")
    if sent.partition(";")[0].strip().lower() != expected:
        raise UnsupportedMediaType(
            f"{connection.scope['path']} takes its body as {expected}: send the header "
            f"Content-Type: {expected} (got {_quoted(sent) if sent else 'none'})"
        )
