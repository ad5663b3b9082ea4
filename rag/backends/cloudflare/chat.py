"""A streamed, cited answer from a Workers AI Llama model (re-exported by ``workers_ai``).

The request asks for ``stream: true`` and the Server-Sent Events are parsed as they
arrive: native ``{"response": ..., "p": ...}`` chunks (``p`` is padding, not text) and
OpenAI-style ``{"choices": [{"delta": {"content": ...}}]}`` chunks. ``usage`` comes in
the last chunk before ``data: [DONE]``; the native figure is cumulative and wins over
OpenAI-style ones, which are never added to it. A stream that ends without ``[DONE]``
raises ``StreamTruncated`` after yielding what arrived: it is not a complete answer.

``condense`` is the one call that does not stream: a follow-up question rewritten as a
standalone one before retrieval (``rag.answer.condense.condense_with`` decides when),
at temperature 0 with a small token ceiling, costed like an answer (kind ``chat``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

from rag.backends.cloudflare.client import CloudflareClient
from rag.backends.cloudflare.neurons import CostSink, PriceTable
from rag.config import CloudflareSettings
from rag.domain import Hit, Turn
from rag.errors import CloudflareError, StreamTruncated
from rag.ports import Tokenizer
from rag.prompts import (
    CONDENSE_MAX_TOKENS,
    PROMPT_VERSION,
    Messages,
    PromptBuilder,
    build_condense_messages,
    build_messages,
)

# Grounded answers want little invention; Workers AI's default is 0.6.
TEMPERATURE = 0.2
# Llama 3's chat template wraps each message in header and end-of-turn tokens.
TOKENS_PER_MESSAGE = 5
# A busy model answers 3040 at once instead of queueing the request, so the fallback
# chain (or condense's local rule) gets its turn (docs/cloudflare.md#rate-limits).
REJECT_IF_BUSY = {"rejectIfBusy": True}


class SSEState:
    """What one answer stream has delivered so far."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.native_usage = False
        self.done = False

    def feed(self, line: str) -> str:
        """Take one line of the event stream; returns the answer text it carries."""
        if not line.startswith("data:"):
            return ""  # blank separators, ": comments", "event:" and "id:" fields
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return ""
        try:
            chunk = json.loads(payload)
        except ValueError as exc:
            raise CloudflareError(f"unreadable stream event: {payload[:100]!r}") from exc
        if not isinstance(chunk, dict):
            return ""
        usage = chunk.get("usage")
        if "response" in chunk:
            text = chunk["response"]
            if isinstance(usage, dict):
                self.usage, self.native_usage = usage, True
        else:
            text = _delta_content(chunk)
            if isinstance(usage, dict) and not self.native_usage:
                self.usage = usage
        if not isinstance(text, str) or not text:
            return ""
        self.parts.append(text)
        return text

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _delta_content(chunk: dict[str, Any]) -> Any:
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta")
        if isinstance(delta, dict):
            return delta.get("content")
    return None


def _reply(result: Any) -> tuple[str, dict[str, Any] | None]:
    """Text and usage of a non-streamed reply: native ``response`` or OpenAI ``choices``."""
    if not isinstance(result, dict):
        return "", None
    text = result.get("response")
    if "response" not in result:
        choices = result.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            text = message.get("content") if isinstance(message, dict) else None
    usage = result.get("usage")
    return (text if isinstance(text, str) else ""), (usage if isinstance(usage, dict) else None)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class WorkersAIChat:
    """``ChatModel`` over a Workers AI text-generation model, streamed.

    Its cost goes to ``on_cost`` once per answer, when the stream ends, fails or is
    cancelled: from ``usage`` if it arrived, else estimated from the prompt and the
    text produced so far (with ``tokenizer`` if given, else about 4 characters a token).
    """

    def __init__(
        self,
        client: CloudflareClient,
        settings: CloudflareSettings,
        prices: PriceTable,
        on_cost: CostSink | None = None,
        prompt: PromptBuilder = build_messages,
        *,
        max_tokens: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        prices.require(settings.chat_model)
        self.model = settings.chat_model
        self.name = f"workers-ai:{self.model}"
        self.prompt_version = PROMPT_VERSION
        self.max_tokens = max(1, min(max_tokens or settings.max_tokens, settings.max_tokens))
        self._client = client
        self._prices = prices
        self._on_cost = on_cost
        self._prompt = prompt
        self._tokenizer = tokenizer
        self._path = f"/ai/run/{self.model}"
        self._deadline_s = settings.first_token_deadline_s

    async def stream(self, question: str, sources: Sequence[Hit]) -> AsyncGenerator[str, None]:
        """Answer text in pieces as the model writes it; ``[n]`` cites ``sources[n-1]``."""
        messages = self._prompt(question, sources)
        body = {
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": TEMPERATURE,
            "stream": True,
            "options": REJECT_IF_BUSY,
        }
        state = SSEState()
        started = False
        try:
            lines = self._client.stream_lines(
                "POST", self._path, json=body, deadline_s=self._deadline_s
            )
            async with aclosing(lines):
                async for line in lines:
                    started = True
                    text = state.feed(line)
                    if text:
                        yield text
                    if state.done:
                        break
            if not state.done:
                raise StreamTruncated(
                    f"{self.name}: the answer stream ended without [DONE] after "
                    f"{len(state.text)} characters: the answer is incomplete"
                )
        finally:
            # Nothing is billed for a call refused before its body; anything after is.
            if started:
                self._report(messages, state.usage, state.text)

    async def condense(self, question: str, history: Sequence[Turn]) -> str:
        """The model's standalone rewrite of a follow-up, raw; "" when it sent no text.

        Not retried: a failure raises at once, and the caller falls back to the local
        rule rather than keep the first token waiting behind backoff sleeps.
        """
        messages = build_condense_messages(question, history)
        body = {
            "messages": messages,
            "max_tokens": min(CONDENSE_MAX_TOKENS, self.max_tokens),
            "temperature": 0.0,
            "stream": False,
            "options": REJECT_IF_BUSY,
        }
        result = await self._client.call("POST", self._path, json=body, retry=False)
        text, usage = _reply(result)
        self._report(messages, usage, text)
        return text

    def _report(self, messages: Messages, usage: dict[str, Any] | None, text: str) -> None:
        """Cost one call: from its ``usage`` if that came, else estimated from the text."""
        if self._on_cost is None:
            return
        if usage is not None and _number(usage.get("prompt_tokens")) is not None:
            cost = self._prices.cost(
                self.model,
                "chat",
                int(_number(usage.get("prompt_tokens")) or 0),
                int(_number(usage.get("completion_tokens")) or 0),
                _number(usage.get("neurons")),
            )
        else:
            prompt_tokens = sum(self._count(m["content"]) + TOKENS_PER_MESSAGE for m in messages)
            cost = self._prices.cost(
                self.model, "chat", prompt_tokens, self._count(text), estimated=True
            )
        self._on_cost(cost)

    def _count(self, text: str) -> int:
        if self._tokenizer is not None:
            return self._tokenizer.count(text)
        # English averages about four characters per Llama 3 token.
        return (len(text) + 3) // 4
