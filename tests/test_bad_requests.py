"""Every malformed request seen in the wild is a 4xx in the JSON error shape, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import LOCAL_URL
from litestar import Litestar
from litestar.testing import AsyncTestClient

from rag.config import Settings
from rag.service import RagService
from rag.web import create_app

HUGE = "9223372036854775808"  # 2**63: one past the database's largest integer

# Litestar's in-process client runs the app's startup (upload recovery, the job worker)
# on an event loop of its own, which asyncpg's pooled connections, opened on the test's
# loop, cannot be used from; these requests are about parsing, not the database.
pytestmark = pytest.mark.database("sqlite")


@pytest.fixture
async def client(
    settings: Settings, service: RagService
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(settings, service), base_url=LOCAL_URL) as client:
        yield client


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    error: dict[str, str] = body["error"]
    return error


@pytest.mark.parametrize(
    "path",
    ["/static/%00", '/static/%00%0A{"forged":true}', "/static/app.js%0D", "/v1/documents/a%00b"],
)
async def test_control_characters_in_the_path_are_a_400(
    client: AsyncTestClient[Litestar], path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 400
    assert "control character" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        (f"/v1/documents?offset={HUGE}", "offset"),
        (f"/v1/documents?offset={HUGE}0000000000", "offset"),
        (f"/v1/documents?limit={HUGE}", "limit"),
        (f"/v1/usage?days={HUGE}", "days"),
        (f"/v1/ask?q=hello&top_k={HUGE}", "top_k"),
        ("/v1/documents?offset=-1", "offset"),
    ],
)
async def test_huge_integers_in_query_parameters_are_a_400_naming_them(
    client: AsyncTestClient[Litestar], url: str, parameter: str
) -> None:
    response = await client.get(url)
    assert response.status_code == 400, response.text
    assert error_of(response)["message"].startswith(f"{parameter}:")


def multipart(*parts: bytes) -> tuple[bytes, dict[str, str]]:
    body = b"".join(b"--B\r\n" + part + b"\r\n" for part in parts) + b"--B--\r\n"
    return body, {"content-type": "multipart/form-data; boundary=B"}


FILE_BODY = b"Content-Type: text/markdown\r\n\r\n# Guide\n\nSome text."


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((b'Content-Disposition: form-data; name="note"\r\n\r\nhello',), "has no file"),
        ((b'Content-Disposition: form-data; name="file"; filename=""\r\n' + FILE_BODY,), "no file"),
        (
            (b'Content-Disposition: form-data; name="file"; filename="a\rb.md"\r\n' + FILE_BODY,),
            "control",
        ),
        (
            (b'Content-Disposition: form-data; name="file"; filename="a\nb.md"\r\n' + FILE_BODY,),
            "control",
        ),
        (
            (
                b'Content-Disposition: form-data; name="file"; filename="a%0D%0Ab.md"\r\n'
                + FILE_BODY,
            ),
            "control",
        ),
    ],
)
async def test_uploads_without_a_proper_file_are_a_400_naming_the_problem(
    client: AsyncTestClient[Litestar], parts: tuple[bytes, ...], expected: str
) -> None:
    body, headers = multipart(*parts)
    response = await client.post("/v1/documents", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert expected in error_of(response)["message"]


async def test_an_upload_with_no_parts_at_all_is_a_400(client: AsyncTestClient[Litestar]) -> None:
    body, headers = multipart()
    response = await client.post("/v1/documents", content=body, headers=headers)
    assert response.status_code == 400, response.text
    error_of(response)
