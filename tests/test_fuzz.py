"""Generated requests against every route: never a 5xx, every 4xx in the error shape.

The routes come from the app itself (``app.routes``), their query parameters and body
fields from its OpenAPI schema, so a new route or parameter is fuzzed without a change
here. Values are JSON of every type and strings and numbers chosen to break parsers
(huge integers, control characters, ``NaN``). Deterministic: derandomized, no example
database, a bounded number of examples per route.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx
import pytest
from conftest import LOCAL_URL
from fakes import ScriptedService
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from rag.config import Settings
from rag.service import RagService
from rag.web import create_app

# With no example database Hypothesis still caches the constants it finds in the code
# under test, in ./.hypothesis, as soon as this module is collected: somewhere temporary
# instead (TemporaryDirectory removes itself when the process ends).
_HYPOTHESIS_HOME = tempfile.TemporaryDirectory(prefix="rag-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME.name)

EXAMPLES = 30
"""Per route and service: finds a huge `offset` (the 500 this file was written after);
the whole module takes 10 to 18 s on 2 shared cores."""

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=EXAMPLES,
    # One service (and its database) serves every example of a test, on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

NASTY = [
    "",
    "-1",
    "0",
    "9223372036854775808",
    "-9223372036854775809",
    "1" * 40,
    "1e999",
    "NaN",
    "null",
    "[]",
    "{}",
    "true",
    "\x00",
    "a\r\nb",
    "%00",
    "../../etc/passwd",
    "é" * 10,
]


class Operation(NamedTuple):
    method: str
    path: str
    """Litestar's template, e.g. ``/v1/documents/{doc_id:str}``."""
    query: tuple[str, ...]
    fields: tuple[str, ...]
    """Top-level fields of the JSON body, when the operation takes one."""


def operations(app: Litestar) -> list[Operation]:
    schema = app.openapi_schema.to_schema()
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        documented = schema["paths"].get(re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path), {})
        for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
            spec = documented.get(method.lower(), {})
            query = tuple(p["name"] for p in spec.get("parameters", []) if p["in"] == "query")
            found.append(Operation(method, route.path, query, _body_fields(schema, spec)))
    return found


def _body_fields(schema: dict[str, Any], spec: dict[str, Any]) -> tuple[str, ...]:
    body = spec.get("requestBody", {}).get("content", {}).get("application/json", {})
    refs = [part["$ref"] for part in body.get("schema", {}).get("allOf", []) if "$ref" in part]
    if ref := body.get("schema", {}).get("$ref"):
        refs.append(ref)
    names: list[str] = []
    for ref in refs:
        names += schema["components"]["schemas"][ref.rsplit("/", 1)[1]].get("properties", {})
    return tuple(names)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(NASTY),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
query_values = st.one_of(
    st.sampled_from(NASTY),
    st.integers(min_value=2**63 - 2, max_value=2**70).map(str),  # around the database's limit
    st.integers().map(str),
    st.floats().map(str),
    st.text(max_size=30),
)


@st.composite
def requests(draw: st.DrawFn, op: Operation) -> tuple[str, dict[str, str], Any]:
    path = re.sub(
        r"\{\w+:\w+\}",
        lambda _: quote(draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=20))), safe=""),
        op.path,
    )
    names = [*op.query, "unknown"]
    # One parameter alone as often as several: a bad value among valid ones reaches the
    # code behind validation, where several bad ones would stop at the first 400.
    query = draw(
        st.one_of(
            st.sampled_from(names).flatmap(
                lambda name: st.fixed_dictionaries({name: query_values})
            ),
            st.fixed_dictionaries({}, optional=dict.fromkeys(names, query_values)),
        )
    )
    body = draw(
        st.one_of(
            st.fixed_dictionaries({}, optional=dict.fromkeys(op.fields, json_values)),
            json_values,
        )
        if op.fields
        else st.none()
    )
    return path, query, body


async def send(client: AsyncTestClient[Litestar], op: Operation, request: Any) -> None:
    path, query, body = request
    response = await client.request(op.method, path, params=query, json=body if op.fields else None)
    check(op, request, response)


def check(op: Operation, request: Any, response: httpx.Response) -> None:
    where = f"{op.method} {op.path} {request!r}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, where
        assert isinstance(body["error"]["code"], str), where
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], where


def _scripted_app() -> Litestar:
    return create_app(Settings(), ScriptedService())


SCRIPTED = operations(_scripted_app())
DOCUMENT_ROUTES = [op for op in SCRIPTED if op.path.startswith(("/v1/documents", "/v1/chunks"))]


def test_every_route_is_fuzzed() -> None:
    paths = {op.path for op in SCRIPTED}
    assert {"/v1/ask", "/v1/search", "/v1/documents", "/static/{file_path:path}"} <= paths
    ask = next(op for op in SCRIPTED if op.path == "/v1/ask" and op.method == "POST")
    assert set(ask.fields) == {"question", "top_k", "history"}


@pytest.fixture
async def scripted() -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=_scripted_app(), base_url=LOCAL_URL) as client:
        yield client


@pytest.mark.parametrize("op", SCRIPTED, ids=lambda op: f"{op.method} {op.path}")
@FUZZ
@given(data=st.data())
async def test_no_request_gets_a_5xx_from_the_scripted_service(
    scripted: AsyncTestClient[Litestar], op: Operation, data: st.DataObject
) -> None:
    await send(scripted, op, data.draw(requests(op)))


@pytest.fixture
async def documents(service: RagService) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(
        app=create_app(service.settings, service), base_url=LOCAL_URL
    ) as client:
        yield client


# SQLite only: the fuzzing is aimed at request parsing, the same on both databases, and
# Hypothesis drives the app from a portal thread's event loop, which asyncpg's pooled
# connections (bound to the loop that made them) cannot be shared with.
@pytest.mark.database("sqlite")
@pytest.mark.parametrize("op", DOCUMENT_ROUTES, ids=lambda op: f"{op.method} {op.path}")
@FUZZ
@given(data=st.data())
async def test_no_document_request_gets_a_5xx_from_the_real_service(
    documents: AsyncTestClient[Litestar], op: Operation, data: st.DataObject
) -> None:
    await send(documents, op, data.draw(requests(op)))
