"""The API docs at ``/schema``: a page of our own that renders ``/schema/openapi.json``.

Litestar's render plugins (ReDoc, Swagger UI, Elements, RapiDoc) load their code from a
CDN, so offline ``/schema`` was a blank page. Packaging one of them was weighed and
refused: ``swagger-ui-bundle`` 1.1.0, the PyPI package connexion relies on, ships
Swagger UI 4.15.5, which will not render an OpenAPI 3.1 document ("does not specify a
valid version field"), and Litestar writes 3.1.0. The PyPI packages that ship Swagger
UI 5 either come with a framework (Flask, Django), carry the whole Swagger Editor too
(about 25 MB), or are a single release with no track record. ``static/docs.js`` (a plain ES
module, no build step) shows what a reader of this API needs: every operation with its
parameters, request body, responses and whether it needs a key, and every schema.

The page and its files are served like the chat page, under the same CSP with no
exception, and ``/schema`` stays open to anyone (``rag.web.auth`` guards ``/v1`` only).
"""

from __future__ import annotations

import html
from typing import Any, Final

from litestar import MediaType, Request, Response, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import OpenAPIRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from rag.web.page import PAGE_HEADERS
from rag.web.schemas import ErrorDetail, ErrorResponse

SCHEMA_PATH: Final = "/schema"
BEARER: Final[list[dict[str, list[str]]]] = [{"bearer": []}]
"""OpenAPI: the ``/v1`` routes take ``Authorization: Bearer <key>``."""

_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="color-scheme" content="light dark">
  <title>{title} · API</title>
  <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/static/base.css">
  <link rel="stylesheet" href="/static/docs.css">
  <script type="module" src="/static/docs.js"></script>
</head>
<body>
  <main id="docs" class="docs" data-spec="{spec}" aria-busy="true">
    <h1>{title}</h1>
    <p class="muted">Loading the API description…</p>
  </main>
</body>
</html>
"""


class DocsPage(OpenAPIRenderPlugin):
    """Serves the page at the schema root; the page fetches the JSON schema itself."""

    def __init__(self) -> None:
        super().__init__(path="/")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        # A URL the page reads rather than the schema inlined: no inline script for the
        # CSP to allow, and the JSON is cached and fetched like any other resource.
        page = _PAGE.format(
            title=html.escape(str(openapi_schema["info"]["title"])),
            spec=html.escape(self.get_openapi_json_route(request)),
        )
        return page.encode()


def openapi_config() -> OpenAPIConfig:
    """The schema, its docs page, and the YAML copy; the JSON one Litestar adds itself."""
    return OpenAPIConfig(
        title="rag",
        version="1",
        description="Cited, streamed answers about your own documents.",
        path=SCHEMA_PATH,
        components=Components(
            security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
        ),
        render_plugins=[DocsPage(), YamlRenderPlugin()],
        # Our own router only to send the page's security headers with everything here.
        openapi_router=Router(
            path=SCHEMA_PATH,
            route_handlers=[],
            include_in_schema=False,
            response_headers=PAGE_HEADERS,
            after_request=_json_not_found,
        ),
    )


def _json_not_found(response: Response[Any]) -> Response[Any]:
    """Litestar answers an unknown ``/schema/...`` page with an HTML 404 of its own; the
    API's one error shape instead, like every other miss."""
    if response.status_code != 404 or response.media_type != MediaType.HTML:
        return response
    message = "no such page of the API docs: the schema is at /schema/openapi.json"
    return Response(
        ErrorResponse(ErrorDetail(code="not_found", message=message)),
        status_code=404,
        media_type=MediaType.JSON,
    )
