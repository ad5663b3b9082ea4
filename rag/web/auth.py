"""Who may call the API: bearer API keys on ``/v1`` and the per-client rate limit
(in this process, or shared by every replica through the database: ``shared_limit``).

One app-level guard, deciding by path, so a route added later under ``/v1`` is
protected without anyone remembering to mark it. Open: ``/`` and the page's static
files, ``/healthz`` (load balancers), ``/schema`` (API docs) and ``/metrics`` unless
``[web] metrics = "auth"``. CORS preflights (``OPTIONS``) carry no credentials by
design and pass; the request that follows them is checked.

Browsers' ``EventSource`` cannot send headers, so ``GET /v1/ask`` alone also takes the
key as ``?key=``; anywhere else a key in the URL would end up in proxy logs for nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from rag.config import Settings
from rag.db.engine import shares_database
from rag.errors import RagError
from rag.keys import KeyStore
from rag.web.access_log import current_request
from rag.web.limits import RateLimiter
from rag.web.shared_limit import SharedRateLimiter

API_PREFIX = "/v1/"
QUERY_KEY_ROUTE = ("GET", "/v1/ask")
KEY_ID = "key_id"
"""Where the request's state keeps the id of the key that authenticated it (uploads
record it as the owner, for the per-key quota)."""
_REFUSED = "missing or invalid API key: send the header Authorization: Bearer <key>"


class Unauthorized(RagError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = _REFUSED) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": 'Bearer realm="rag"'}


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def auth_required(settings: Settings) -> bool:
    """``[auth] required``, or when unset: whether the server binds beyond loopback."""
    if settings.auth.required is not None:
        return settings.auth.required
    return not is_loopback(settings.server.host)


def access_warning(settings: Settings, active_keys: int) -> str | None:
    """What ``rag serve`` shouts at start when the access settings are risky or useless."""
    host = settings.server.host
    if auth_required(settings) and active_keys == 0:
        return (
            "API keys are required but none exists: every /v1 request will be refused "
            "(401). Create one with `rag keys create NAME`."
        )
    if not auth_required(settings) and not is_loopback(host):
        return (
            f"serving on {host} WITHOUT authentication ([auth] required = false): anyone "
            "who can reach this address can ask, upload and delete documents."
        )
    return None


def shared_limit(settings: Settings) -> bool:
    """Whether the rate limit is counted in the database (``[auth] rate_limit_store``)."""
    return shares_database(settings.auth.rate_limit_store, settings.database_url)


class Access:
    """The state behind the guard: whether keys are required, the key store, the counts."""

    def __init__(
        self,
        settings: Settings,
        sessions: Callable[[], Any],
        quick_sessions: Callable[[], Any] = lambda: None,
    ) -> None:
        self.required = auth_required(settings)
        self.protect_metrics = settings.web.metrics == "auth"
        per_minute = settings.auth.rate_limit_per_minute
        self.limiter: RateLimiter | SharedRateLimiter = (
            SharedRateLimiter(per_minute, quick_sessions)
            if shared_limit(settings)
            else RateLimiter(per_minute)
        )
        self._sessions = sessions
        self._store: KeyStore | None = None

    def protects(self, method: str, path: str) -> bool:
        if method == "OPTIONS":
            return False
        return path.startswith(API_PREFIX) or (self.protect_metrics and path == "/metrics")

    async def check(self, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        """Authenticate (when required), then charge the client's rate-limit bucket."""
        client = f"ip:{connection.client.host if connection.client else 'unknown'}"
        if self.required:
            key_id = await self._key_id(connection)
            if key_id is None:
                # Failed attempts spend the address's allowance: guessing gets a 429 too.
                await self._take(client)
                raise Unauthorized()
            client = f"key:{key_id}"
            connection.state[KEY_ID] = key_id
            record = current_request.get()
            if record is not None:
                record.key_id = key_id
        await self._take(client)

    async def _take(self, client: str) -> None:
        if isinstance(self.limiter, SharedRateLimiter):
            await self.limiter.take(client)
        else:
            self.limiter.take(client)

    async def _key_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> int | None:
        key = _presented_key(connection)
        store = self._key_store()
        if not key or store is None:
            return None  # no key store (a service without a database) means no valid key
        return await store.verify(key)

    def _key_store(self) -> KeyStore | None:
        if self._store is None:
            sessions = self._sessions()
            if sessions is None:
                return None
            self._store = KeyStore(sessions)
        return self._store


def _presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    method = connection.scope.get("method", "")
    if (method, connection.scope["path"]) == QUERY_KEY_ROUTE:
        return connection.query_params.get("key") or None
    return None


async def access_guard(
    connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler
) -> None:
    """App-level guard: every protected path goes through ``Access.check``."""
    access: Access = connection.app.state.access
    method = str(connection.scope.get("method", ""))
    if access.protects(method, connection.scope["path"]):
        await access.check(connection)
