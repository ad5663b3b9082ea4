"""Chat over any OpenAI-compatible endpoint: OpenRouter, Ollama, vLLM, a llama.cpp server.

A fallback provider in the chat chain, so it is small and strict: one streamed
``POST {base_url}/chat/completions`` per answer, parsed line by line (``data:`` lines,
``choices[0].delta.content``, ``[DONE]`` required), through its own ``httpx.AsyncClient``
with an injectable transport. No retries: before the first token the chain's next
provider is a better retry than waiting here, and after it a retry would repeat text.
Failures map to the typed errors the Cloudflare client uses (they name what went wrong,
not who: timeout, unavailable, capacity, truncated, refused key, unknown model).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx

from rag.backends.cloudflare.neurons import CallCost
from rag.config import OpenAISettings
from rag.domain import Hit
from rag.errors import (
    AuthError,
    CapacityError,
    ConfigError,
    ModelError,
    ModelNotFound,
    StreamTruncated,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from rag.prompts import PROMPT_VERSION, PromptBuilder, build_messages

CostSink = Callable[[CallCost], None]


class OpenAIChat:
    """A ``ChatModel`` named ``openai:<model>``; ``aclose`` when done with it."""

    def __init__(
        self,
        settings: OpenAISettings,
        *,
        prompt: PromptBuilder = build_messages,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_cost: CostSink | None = None,
    ) -> None:
        if not settings.base_url or not settings.model:
            raise ConfigError(
                'the "openai" chat provider needs [openai] base_url and model, e.g. '
                'base_url = "http://localhost:11434/v1" and model = "llama3.1:8b" (Ollama)'
            )
        env = os.environ if environ is None else environ
        self.settings = settings
        self.model = settings.model
        self.name = f"openai:{settings.model}"
        # The same prompt as Workers AI, so a fallback answers under the same rules.
        self.build_messages = prompt
        self.prompt_version = PROMPT_VERSION
        self.on_cost = on_cost
        headers = {"Accept": "text/event-stream"}
        # No key is fine for local servers (Ollama, llama.cpp); a hosted one says 401.
        key = env.get(settings.api_key_env, "") if settings.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 10.0)),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def stream(self, question: str, sources: Sequence[Hit]) -> AsyncGenerator[str, None]:
        """Answer pieces as they arrive; raises ``StreamTruncated`` if ``[DONE]`` never comes."""
        messages = self.build_messages(question, sources)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": self.settings.max_tokens,
        }
        if self.settings.include_usage:
            body["stream_options"] = {"include_usage": True}
        usage: dict[str, Any] = {}
        sent: list[str] = []
        try:
            async with self._http.stream("POST", "chat/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise self._http_error(response)
                if not _is_event_stream(response):
                    # Some servers ignore "stream" and answer in one JSON body.
                    text, usage = _whole(await response.aread(), self.name)
                    if text:
                        sent.append(text)
                        yield text
                    return
                async for text in self._pieces(response, usage):
                    sent.append(text)
                    yield text
        except httpx.TimeoutException as exc:
            raise self._timeout(bool(sent)) from exc
        except httpx.TransportError as exc:
            raise self._broken(exc, bool(sent)) from exc
        finally:
            self._report(messages, "".join(sent), usage)

    async def _pieces(self, response: httpx.Response, usage: dict[str, Any]) -> AsyncIterator[str]:
        done = False
        async for line in response.aiter_lines():
            # SSE comments (": OPENROUTER PROCESSING") and event/id lines carry no text.
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ModelError(f"{self.name}: the stream sent a line that is not JSON") from exc
            if not isinstance(chunk, dict):
                continue
            if chunk.get("error"):
                raise ModelError(f"{self.name}: {_message(chunk['error'])}")
            if isinstance(chunk.get("usage"), dict):
                # Cumulative on OpenAI-compatible servers: the last one is the total.
                usage.clear()
                usage.update(chunk["usage"])
            text = _delta_text(chunk)
            if text:
                yield text
        if not done:
            raise StreamTruncated(f"{self.name}: the answer stream ended without [DONE]")

    def _http_error(self, response: httpx.Response) -> ModelError:
        status = response.status_code
        detail = _message(_json_or_none(response.content)) or response.reason_phrase
        where = f"{self.name} ({self.settings.base_url}) answered {status}: {detail}"
        if status in (401, 403):
            env = self.settings.api_key_env or "a key variable ([openai] api_key_env)"
            return AuthError(f"{where}; check {env}", http_status=status)
        if status == 404:
            return ModelNotFound(
                f"{where}; is [openai] model = {self.model!r} served there?", http_status=status
            )
        if status == 429:
            retry = response.headers.get("retry-after")
            return CapacityError(
                where, http_status=status, retry_after=float(retry) if _number(retry) else None
            )
        if status in (408, 504):
            return UpstreamTimeout(where, http_status=status)
        if status >= 500:
            return UpstreamUnavailable(where, http_status=status)
        refused = ModelError(where)
        refused.retryable = False  # the same request will be refused again
        return refused

    def _timeout(self, started: bool) -> ModelError:
        if started:
            return StreamTruncated(f"{self.name}: the answer stream stalled and timed out")
        return UpstreamTimeout(f"{self.name}: no answer within {self.settings.timeout_s:g} s")

    def _broken(self, exc: httpx.TransportError, started: bool) -> ModelError:
        if started:
            return StreamTruncated(f"{self.name}: the connection broke mid-answer ({exc})")
        return UpstreamUnavailable(f"{self.name}: cannot reach {self.settings.base_url} ({exc})")

    def _report(self, messages: list[dict[str, str]], answer: str, usage: dict[str, Any]) -> None:
        if self.on_cost is None or not (answer or usage):
            return
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        estimated = not (isinstance(prompt, int) and isinstance(completion, int))
        if estimated:
            # No usage came back (older servers, a broken stream): about 4 characters a token.
            prompt = sum(len(m["content"]) for m in messages) // 4
            completion = len(answer) // 4
        # The endpoint's price is not ours to know: tokens are recorded, cost is zero.
        self.on_cost(
            CallCost(
                provider="openai",
                model=self.model,
                kind="chat",
                input_tokens=int(prompt or 0),
                output_tokens=int(completion or 0),
                neurons=0.0,
                usd=0.0,
                estimated=estimated,
            )
        )


def _is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/event-stream")


def _whole(content: bytes, name: str) -> tuple[str, dict[str, Any]]:
    body = _json_or_none(content)
    if not isinstance(body, dict):
        raise ModelError(f"{name}: the answer is neither an event stream nor JSON")
    if body.get("error"):
        raise ModelError(f"{name}: {_message(body['error'])}")
    choices = body.get("choices") or [{}]
    message = (choices[0].get("message") or {}) if isinstance(choices[0], dict) else {}
    text = message.get("content") if isinstance(message, dict) else None
    usage = body.get("usage")
    return (text if isinstance(text, str) else ""), (usage if isinstance(usage, dict) else {})


def _delta_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta")
    text = delta.get("content") if isinstance(delta, dict) else None
    return text if isinstance(text, str) else ""


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _message(error: Any) -> str:
    """The human part of an error body: ``{"error": {"message": ...}}`` or a bare string."""
    if isinstance(error, dict):
        inner = error.get("error", error)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("detail") or "")[:300]
        return str(inner)[:300]
    return str(error)[:300] if isinstance(error, str) else ""


def _number(value: str | None) -> bool:
    try:
        return value is not None and float(value) >= 0
    except ValueError:
        return False
