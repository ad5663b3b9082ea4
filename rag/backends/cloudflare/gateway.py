"""AI Gateway routing: which calls go through the gateway, to what URL, with which headers.

Only Workers AI goes through a gateway (its ``workers-ai`` provider route); Vectorize is
not an AI Gateway provider and always goes to the REST API. The gateway passes Workers
AI's JSON body, envelope and SSE stream through unchanged, so the client needs nothing
but a different URL and, on an authenticated gateway, ``cf-aig-authorization``. Facts
and sources: docs/cloudflare.md#ai-gateway.

No cache header is sent: the gateway caches only when its operator turns caching on,
only identical requests, and an identical request (question, sources, history) may well
get the same answer; forcing ``cf-aig-skip-cache`` would overrule that operator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rag.usage import current_meter

RUN_PREFIX = "/ai/run/"
AUTH_HINT = (
    "AI Gateway refused the request: an authenticated gateway needs CLOUDFLARE_AIG_TOKEN "
    "set to one of its tokens (Run permission)"
)


@dataclass(frozen=True)
class Gateway:
    """``{base_url}/{account_id}/{gateway_id}``, and the gateway's own token if it has one."""

    prefix: str
    token: str = ""

    @classmethod
    def build(cls, base_url: str, account_id: str, gateway_id: str, token: str) -> Gateway:
        return cls(f"{base_url.rstrip('/')}/{account_id}/{gateway_id}", token)

    def url(self, path: str) -> str | None:
        """The absolute gateway URL for a REST path, or None when the path is not Workers AI."""
        if not path.startswith(RUN_PREFIX):
            return None
        return f"{self.prefix}/workers-ai/{path.removeprefix(RUN_PREFIX)}"

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.token:
            headers["cf-aig-authorization"] = f"Bearer {self.token}"
        metadata = _metadata()
        if metadata:
            headers["cf-aig-metadata"] = metadata
        return headers


def _metadata() -> str:
    """The answer's trace id and purpose, so an operator can find a gateway log line from
    ours (the gateway keeps at most five entries; these are two)."""
    meter = current_meter()
    if meter is None:
        return ""
    entries = {"purpose": meter.purpose}
    if meter.trace_id:
        entries["trace_id"] = meter.trace_id
    return json.dumps(entries, ensure_ascii=True, separators=(",", ":"))
