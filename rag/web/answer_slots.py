"""A cap on answer streams in flight (``[server] max_concurrent_answers``).

An answer holds the CPU (the local answerer) or a model stream (Cloudflare) for as long
as it lasts, so past a few at once every answer only gets slower. A request over the cap
is refused at once with 503 and ``Retry-After`` instead of queueing: a client that waits
gains nothing over one that retries, and a queue would hold its socket meanwhile.

A slot is taken before the answer starts and given back when its stream ends, however
it ends (done, error, client gone, a 400 before the first event).
"""

from __future__ import annotations

from rag.errors import RagError

RETRY_AFTER_S = 2
"""About one local answer's length with the cores busy: when a slot is likely free."""


class ServerBusy(RagError):
    status_code = 503
    retryable = True
    code = "busy"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(RETRY_AFTER_S)}


class Slot:
    """One answer's place; ``release`` is idempotent, so every exit path may call it."""

    def __init__(self, slots: AnswerSlots) -> None:
        self._slots: AnswerSlots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.in_use -= 1
            self._slots = None


class AnswerSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self) -> Slot:
        """A slot, or ``ServerBusy``. Never waits (and so needs no lock on one event loop)."""
        if self.in_use >= self.limit:
            raise ServerBusy(
                f"the server is answering {self.limit} questions already "
                f"([server] max_concurrent_answers); retry in {RETRY_AFTER_S} s"
            )
        self.in_use += 1
        return Slot(self)
