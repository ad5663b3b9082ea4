"""The one Cloudflare HTTP client: credentials, envelope, error mapping, retries, streaming.

Runs the real ``CloudflareClient`` against the in-process fake (``cf_fake``); every
request it sends is validated against Cloudflare's schemas there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from cf_fake import API_BASE, CHAT, CHAT_BODY, EMBED, FakeCloudflare

from rag.backends.cloudflare.client import TOKEN_HINT, CloudflareClient
from rag.errors import (
    AuthError,
    CapacityError,
    CloudflareError,
    ConfigError,
    DailyLimitExceeded,
    ModelError,
    ModelNotFound,
    RequestTooLarge,
    StreamTruncated,
    UpstreamTimeout,
    UpstreamUnavailable,
)


def exact_client(
    fake: FakeCloudflare,
    jitter: float = 0.0,
    transport: httpx.AsyncBaseTransport | None = None,
    **kw: Any,
) -> CloudflareClient:
    """A client with fixed jitter (exact backoff delays), on the fake or ``transport``."""

    async def sleep(seconds: float) -> None:
        fake.sleeps.append(seconds)

    return CloudflareClient(
        api_base=API_BASE,
        account_id=fake.account_id,
        token=fake.token,
        transport=transport or fake.transport,
        sleep=sleep,
        jitter=lambda: jitter,
        **kw,
    )


# Credentials and the one place the client is built.


def test_missing_token_says_what_to_set(fake: FakeCloudflare) -> None:
    with pytest.raises(ConfigError) as info:
        CloudflareClient.from_settings(fake.settings(), environ={})
    message = str(info.value)
    assert "CLOUDFLARE_API_TOKEN" in message
    assert "account_id" not in message


def test_missing_account_says_what_to_set(fake: FakeCloudflare) -> None:
    settings = fake.settings(account_id="")
    with pytest.raises(ConfigError) as info:
        CloudflareClient.from_settings(settings, environ={"CLOUDFLARE_API_TOKEN": "t"})
    message = str(info.value)
    assert "[cloudflare] account_id" in message and "CLOUDFLARE_ACCOUNT_ID" in message
    assert "CLOUDFLARE_API_TOKEN" not in message


def test_missing_both_names_both(fake: FakeCloudflare) -> None:
    with pytest.raises(ConfigError) as info:
        CloudflareClient.from_settings(fake.settings(account_id=""), environ={})
    assert "CLOUDFLARE_API_TOKEN" in str(info.value) and "CLOUDFLARE_ACCOUNT_ID" in str(info.value)


async def test_account_from_environment_and_token_never_shown(fake: FakeCloudflare) -> None:
    environ = {"CLOUDFLARE_API_TOKEN": fake.token, "CLOUDFLARE_ACCOUNT_ID": fake.account_id}
    async with CloudflareClient.from_settings(
        fake.settings(account_id=""), environ=environ, transport=fake.transport
    ) as client:
        assert client.account_id == fake.account_id
        assert fake.token not in repr(client)
        result = await client.call("POST", EMBED, json={"text": ["hello"]})
    assert result["shape"] == [1, 768]


async def test_url_and_auth_header(fake: FakeCloudflare, client: CloudflareClient) -> None:
    await client.call("POST", EMBED, json={"text": "hello"})
    (sent,) = fake.requests
    assert sent.headers["authorization"] == f"Bearer {fake.token}"
    # The model id goes into the path as is: no %2F for its slashes.
    raw = sent.headers.get("host"), sent.path
    assert raw == ("api.cloudflare.test", EMBED)


async def test_wrong_token_is_an_auth_error_without_the_token(fake: FakeCloudflare) -> None:
    secret = "wrong-secret-token"
    environ = {"CLOUDFLARE_API_TOKEN": secret}
    async with CloudflareClient.from_settings(
        fake.settings(), environ=environ, transport=fake.transport
    ) as client:
        with pytest.raises(AuthError) as info:
            await client.call("POST", EMBED, json={"text": "hello"})
    error = info.value
    assert isinstance(error, ConfigError) and isinstance(error, CloudflareError)
    assert TOKEN_HINT in error.message
    assert "Workers AI Read+Edit, Vectorize Edit" in error.message
    assert secret not in error.message and secret not in repr(error)
    assert (error.cf_code, error.http_status, error.retryable) == (10000, 401, False)
    assert len(fake.requests) == 1


# Error mapping: Cloudflare's HTTP status and internal code -> one class each.


@pytest.mark.parametrize(
    ("status", "cf_code", "kind", "retryable"),
    [
        (429, 3040, CapacityError, True),
        (429, 971, CapacityError, True),
        (429, 3036, DailyLimitExceeded, False),
        (400, 5007, ModelNotFound, False),
        (404, 3042, ModelNotFound, False),
        (413, 3006, RequestTooLarge, False),
        (413, None, RequestTooLarge, False),
        (408, 3007, UpstreamTimeout, True),
        (408, 3008, UpstreamTimeout, True),
        (408, 3046, UpstreamTimeout, True),
        (408, None, UpstreamTimeout, True),
        (500, None, UpstreamUnavailable, True),
        (502, None, UpstreamUnavailable, True),
        (503, 1000, UpstreamUnavailable, True),
        (401, 10000, AuthError, False),
        (403, 10000, AuthError, False),
        (403, 5016, AuthError, False),
        (400, 5004, CloudflareError, False),
    ],
)
async def test_error_mapping(
    fake: FakeCloudflare,
    client: CloudflareClient,
    status: int,
    cf_code: int | None,
    kind: type[CloudflareError],
    retryable: bool,
) -> None:
    fake.fail_next("bge-base", status, cf_code, message="upstream says no")
    with pytest.raises(CloudflareError) as info:
        await client.call("POST", EMBED, json={"text": "hello"}, retry=False)
    error = info.value
    assert type(error) is kind
    assert isinstance(error, ModelError)
    assert (error.cf_code, error.http_status, error.retryable) == (cf_code, status, retryable)
    assert "upstream says no" in error.message
    assert len(fake.requests) == 1


async def test_model_not_found_names_the_model(client: CloudflareClient) -> None:
    # Not scripted: the fake answers 5007 for a model it does not serve.
    with pytest.raises(ModelNotFound) as info:
        await client.call("POST", "/ai/run/@cf/meta/llama-9-nonexistent", json={"prompt": "hi"})
    assert "@cf/meta/llama-9-nonexistent" in info.value.message
    assert isinstance(info.value, ConfigError)
    assert info.value.cf_code == 5007


async def test_access_codes_do_not_blame_the_token(
    fake: FakeCloudflare, client: CloudflareClient
) -> None:
    fake.fail_next("bge-base", 403, 5016, message="model agreement not accepted")
    with pytest.raises(AuthError) as info:
        await client.call("POST", EMBED, json={"text": "hello"})
    assert TOKEN_HINT not in info.value.message


async def test_non_json_error_body(fake: FakeCloudflare, client: CloudflareClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad gateway</html>")

    async with exact_client(fake, max_retries=0, transport=httpx.MockTransport(handler)) as plain:
        with pytest.raises(UpstreamUnavailable) as info:
            await plain.call("GET", "/anything")
    assert "502" in info.value.message and "Bad gateway" in info.value.message


async def test_unsuccessful_envelope_with_200_is_an_error(fake: FakeCloudflare) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"result": None, "success": False, "errors": [{"code": "5004", "message": "bad"}]}
        return httpx.Response(200, json=body)

    async with exact_client(fake, transport=httpx.MockTransport(handler)) as plain:
        with pytest.raises(CloudflareError) as info:
            await plain.call("GET", "/anything")
    # The 2024 spec types the code as a string on some paths.
    assert info.value.cf_code == 5004


async def test_call_passes_content_headers_and_params(fake: FakeCloudflare) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"result": {"mutationId": "m1"}, "success": True})

    async with exact_client(fake, transport=httpx.MockTransport(handler)) as plain:
        result = await plain.call(
            "POST",
            "/vectorize/v2/indexes/rag/upsert",
            content=b'{"id":"a","values":[1]}\n',
            headers={"Content-Type": "application/x-ndjson"},
            params={"unparsable-behavior": "error"},
        )
    assert result == {"mutationId": "m1"}
    (request,) = seen
    assert (
        request.url.path == f"/client/v4/accounts/{fake.account_id}/vectorize/v2/indexes/rag/upsert"
    )
    assert request.url.params["unparsable-behavior"] == "error"
    assert request.headers["content-type"] == "application/x-ndjson"
    assert request.content == b'{"id":"a","values":[1]}\n'


# Retries.


async def test_retry_after_is_honoured(fake: FakeCloudflare) -> None:
    fake.fail_next("bge-base", 429, 3040, retry_after=7, times=2)
    async with exact_client(fake, jitter=1.0) as client:
        result = await client.call("POST", EMBED, json={"text": "hello"})
    assert result["shape"] == [1, 768]
    assert len(fake.requests) == 3
    # Retry-After, plus at most half a second of jitter so clients do not return at once.
    assert fake.sleeps == [7.5, 7.5]


async def test_retry_after_as_http_date(fake: FakeCloudflare) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    fake.fail_next("bge-base", 429, 3040, retry_after=when)
    async with exact_client(fake) as client:
        await client.call("POST", EMBED, json={"text": "hello"})
    (slept,) = fake.sleeps
    assert 28 <= slept <= 30


async def test_retry_after_beyond_a_minute_is_raised_at_once(
    fake: FakeCloudflare, client: CloudflareClient
) -> None:
    fake.fail_next("bge-base", 429, None, retry_after=300)
    with pytest.raises(CapacityError) as info:
        await client.call("POST", EMBED, json={"text": "hello"})
    assert info.value.retry_after == 300
    assert fake.sleeps == [] and len(fake.requests) == 1


async def test_exponential_backoff_is_bounded(fake: FakeCloudflare) -> None:
    fake.fail_next("bge-base", 503, None, times=6)
    async with exact_client(fake, jitter=1.0, max_retries=6) as client:
        await client.call("POST", EMBED, json={"text": "hello"})
    assert fake.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


async def test_jitter_halves_at_most(fake: FakeCloudflare) -> None:
    fake.fail_next("bge-base", 500, None, times=3)
    async with exact_client(fake, jitter=0.0) as client:
        await client.call("POST", EMBED, json={"text": "hello"})
    assert fake.sleeps == [0.25, 0.5, 1.0]


async def test_gives_up_after_max_retries(fake: FakeCloudflare) -> None:
    fake.fail_next("bge-base", 500, None, times=10)
    async with exact_client(fake, max_retries=2) as client:
        with pytest.raises(UpstreamUnavailable):
            await client.call("POST", EMBED, json={"text": "hello"})
    assert len(fake.requests) == 3 and len(fake.sleeps) == 2


async def test_daily_limit_is_not_retried(fake: FakeCloudflare, client: CloudflareClient) -> None:
    fake.fail_next("bge-base", 429, 3036, retry_after=5, times=5)
    with pytest.raises(DailyLimitExceeded):
        await client.call("POST", EMBED, json={"text": "hello"})
    assert len(fake.requests) == 1 and fake.sleeps == []


async def test_retry_false_raises_retryable_errors_at_once(
    fake: FakeCloudflare, client: CloudflareClient
) -> None:
    fake.fail_next("bge-base", 429, 3040)
    with pytest.raises(CapacityError):
        await client.call("POST", EMBED, json={"text": "hello"}, retry=False)
    assert len(fake.requests) == 1


def flaky(fake: FakeCloudflare, *errors: Exception) -> httpx.MockTransport:
    """Raises ``errors`` in turn, then behaves as the fake."""
    pending = list(errors)

    async def handler(request: httpx.Request) -> httpx.Response:
        if pending:
            raise pending.pop(0)
        return await fake.transport.handle_async_request(request)

    return httpx.MockTransport(handler)


async def test_connection_failures_and_timeouts_are_retried(fake: FakeCloudflare) -> None:
    transport = flaky(fake, httpx.ConnectError("refused"), httpx.ReadTimeout("slow"))
    async with exact_client(fake, transport=transport) as client:
        result = await client.call("POST", EMBED, json={"text": "hello"})
    assert result["shape"] == [1, 768] and len(fake.sleeps) == 2


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ConnectError("refused"), UpstreamUnavailable),
        (httpx.ReadTimeout("slow"), UpstreamTimeout),
    ],
)
async def test_transport_errors_are_typed(
    fake: FakeCloudflare, error: Exception, kind: type[CloudflareError]
) -> None:
    async with exact_client(fake, max_retries=0, transport=flaky(fake, error)) as client:
        with pytest.raises(kind):
            await client.call("POST", EMBED, json={"text": "hello"})


# Streaming: retried only before the first byte of the body.


async def collect(client: CloudflareClient, path: str = CHAT) -> list[str]:
    return [line async for line in client.stream_lines("POST", path, json=CHAT_BODY)]


async def test_stream_lines(fake: FakeCloudflare, client: CloudflareClient) -> None:
    lines = await collect(client)
    data = [line for line in lines if line]
    assert data[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in data)
    assert fake.requests[0].headers["accept"] == "text/event-stream"


async def test_stream_429_before_the_body_is_retried(
    fake: FakeCloudflare, client: CloudflareClient
) -> None:
    fake.fail_next("llama", 429, 3040, retry_after=2)
    lines = await collect(client)
    assert "data: [DONE]" in lines
    assert len(fake.requests) == 2
    assert 2 <= fake.sleeps[0] <= 2.5


async def test_stream_connection_failure_before_the_body_is_retried(
    fake: FakeCloudflare,
) -> None:
    async with exact_client(fake, transport=flaky(fake, httpx.ConnectError("refused"))) as client:
        lines = await collect(client)
    assert "data: [DONE]" in lines and len(fake.sleeps) == 1


async def test_stream_cut_after_output_is_not_retried(
    fake: FakeCloudflare, client: CloudflareClient
) -> None:
    fake.script_chat(cut_after=1)
    received: list[str] = []
    with pytest.raises(StreamTruncated) as info:
        async for line in client.stream_lines("POST", CHAT, json=CHAT_BODY):
            received.append(line)
    assert received and received[0].startswith("data: {")
    assert len(fake.requests) == 1 and fake.sleeps == []
    assert "after output had started" in info.value.message


async def test_stream_error_status_is_typed(fake: FakeCloudflare, client: CloudflareClient) -> None:
    fake.fail_next("llama", 429, 3036)
    with pytest.raises(DailyLimitExceeded):
        await collect(client)
    assert len(fake.requests) == 1


def scripted_body(*chunks: bytes, content_type: str = "text/event-stream") -> httpx.MockTransport:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=body())

    return httpx.MockTransport(handler)


async def test_lines_split_across_chunks_and_utf8(fake: FakeCloudflare) -> None:
    snowman = "☃".encode()
    chunks = (
        b'data: {"response":"a',
        snowman[:1],
        snowman[1:] + b'"}\r',
        b"\n\r\ndata: [DO",
        b"NE]",
    )
    async with exact_client(fake, transport=scripted_body(*chunks)) as client:
        lines = await collect(client)
    assert lines == ['data: {"response":"a☃"}', "", "data: [DONE]"]


async def test_json_answer_to_a_stream_request_becomes_events(fake: FakeCloudflare) -> None:
    # Some models ignore "stream" on /ai/run and answer with the JSON envelope.
    envelope = b'{"result":{"response":"Hi [1]."},"success":true,"errors":[],"messages":[]}'
    async with exact_client(
        fake, transport=scripted_body(envelope, content_type="application/json")
    ) as client:
        lines = await collect(client)
    assert lines == ['data: {"response": "Hi [1]."}', "data: [DONE]"]


async def test_early_close_closes_the_response(fake: FakeCloudflare) -> None:
    closed: list[bool] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for n in range(100):
                yield f'data: {{"response":"{n}"}}\n\n'.encode()

        async def aclose(self) -> None:
            closed.append(True)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

    async with exact_client(fake, transport=httpx.MockTransport(handler)) as client:
        lines = client.stream_lines("POST", CHAT, json=CHAT_BODY)
        first = await anext(lines)
        await lines.aclose()
    assert first == 'data: {"response":"0"}'
    assert closed == [True]
