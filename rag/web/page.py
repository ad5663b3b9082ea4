"""The chat page: ``/`` and its static files (plain ES modules, no build step, no CDN).

Everything the page loads comes from this server, and the Content-Security-Policy says
so: a browser refuses any script, style or connection to another origin, so the page
works on a closed network and a stray CDN link would fail loudly in the browser test.
The files are revalidated on every load (``no-cache`` plus ETag): there is no build step
to give them hashed names, and a stale ``app.js`` after an upgrade would talk to an API
it does not match.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Final

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.static_files import create_static_files_router

STATIC_DIR: Final = Path(__file__).parent / "static"

CSP: Final = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _index_html() -> bytes:
    return (STATIC_DIR / "index.html").read_bytes()


@get("/", include_in_schema=False, sync_to_thread=False)
def chat_page() -> Response[bytes]:
    """The chat page."""
    return Response(_index_html(), media_type=MediaType.HTML, headers=PAGE_HEADERS)


def _nosniff(response: Any) -> Any:
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


PAGE_ROUTES: Final = [
    chat_page,
    create_static_files_router(
        path="/static",
        directories=[STATIC_DIR],
        name="static",
        cache_control=CacheControlHeader(no_cache=True),
        after_request=_nosniff,
        include_in_schema=False,
    ),
]
