"""A chat fallback chain: the first provider that answers, in configured order.

A provider is passed over when it is refused before the call (the neuron budget is
spent), when it fails, or when it returns no text, and only while nothing has reached
the client: once a piece is out, switching provider would splice two answers, so a
later failure is the stream's error (``answer_events`` turns it into an ``error``
event). Each ``stream`` call returns a ``ChainStream`` that says who answered and why
the ones before were passed over, so concurrent answers never share that state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

from rag.config import Settings
from rag.domain import Hit
from rag.errors import ModelError, RagError
from rag.ports import ChatModel
from rag.retrieval.refusals import Refusals
from rag.usage import Ledger, projected_chat_neurons

log = logging.getLogger(__name__)

Gate = Callable[[ChatModel, str, Sequence[Hit]], str | None]
"""Why a provider must not be called for this question (e.g. budget), or None."""
Closer = Callable[[], Awaitable[None]]


class NoProviderAnswered(ModelError):
    code = "no_provider"


class FallbackChain:
    """A ``ChatModel`` over several; ``name`` lists them, ``ChainStream.answered_by`` tells."""

    def __init__(self, providers: Sequence[ChatModel], gate: Gate | None = None) -> None:
        if not providers:
            raise ValueError("a fallback chain needs at least one provider")
        self.providers = tuple(providers)
        self.gate = gate
        self.name = " > ".join(p.name for p in self.providers)

    @property
    def prompt_version(self) -> str:
        """Every provider's version, in order: any of them may answer."""
        return " > ".join(p.prompt_version for p in self.providers)

    @property
    def preferred(self) -> str:
        """The provider that answers when nothing goes wrong."""
        return self.providers[0].name

    def stream(self, question: str, sources: Sequence[Hit]) -> ChainStream:
        return ChainStream(self, question, sources)


class ChainStream:
    """The pieces of one answer; after iteration, ``answered_by`` and ``passed_over`` are set."""

    def __init__(self, chain: FallbackChain, question: str, sources: Sequence[Hit]) -> None:
        self.answered_by = ""
        self.passed_over: list[str] = []
        """One note per provider not used, e.g. "workers-ai:…: daily neuron budget spent"."""
        self._pieces = self._run(chain, question, sources)

    def __aiter__(self) -> ChainStream:
        return self

    async def __anext__(self) -> str:
        return await self._pieces.__anext__()

    async def aclose(self) -> None:
        await self._pieces.aclose()

    async def _run(
        self, chain: FallbackChain, question: str, sources: Sequence[Hit]
    ) -> AsyncGenerator[str, None]:
        failures: list[RagError] = []
        silent: str | None = None
        for provider in chain.providers:
            refusal = chain.gate(provider, question, sources) if chain.gate else None
            if refusal:
                self._pass_over(provider, refusal)
                continue
            started = False
            held = ""  # leading whitespace is not an answer yet: hold it back
            pieces = provider.stream(question, sources)
            try:
                try:
                    async for piece in pieces:
                        if not started:
                            if not piece.strip():
                                held += piece
                                continue
                            started = True
                            self.answered_by = provider.name
                            piece, held = held + piece, ""
                        yield piece
                finally:
                    await pieces.aclose()
            except RagError as exc:
                if started:
                    raise
                failures.append(exc)
                self._pass_over(provider, f"failed: {exc.message}")
                continue
            if started:
                return
            silent = provider.name
            self._pass_over(provider, "returned no text")
        if silent is not None:
            # Someone ran and had nothing to say: the caller reports "not covered".
            self.answered_by = silent
            return
        error = NoProviderAnswered("no chat provider could answer: " + "; ".join(self.passed_over))
        # Worth retrying only when a provider failed transiently, not when all were refused.
        error.retryable = any(f.retryable for f in failures)
        raise error from (failures[-1] if failures else None)

    def _pass_over(self, provider: ChatModel, why: str) -> None:
        note = f"{provider.name}: {why}"
        self.passed_over.append(note)
        log.warning("chat provider passed over: %s", note)


def budget_gate(settings: Settings, ledger: Ledger, refusals: Refusals | None = None) -> Gate:
    cf = settings.cloudflare

    def gate(provider: ChatModel, question: str, sources: Sequence[Hit]) -> str | None:
        # Only Workers AI bills neurons. Projecting the answer's worst case (its prompt
        # and max_tokens of output) keeps a single answer from crossing the cap.
        if not provider.name.startswith("workers-ai:"):
            return None
        if refusals is not None and (refused := refusals.reason()):
            return refused  # degraded mode: the call would be refused again
        chars = len(question) + sum(len(s.text) for s in sources)
        projected = projected_chat_neurons(settings.prices, cf.chat_model, chars, cf.max_tokens)
        return ledger.over_budget(projected)

    return gate
