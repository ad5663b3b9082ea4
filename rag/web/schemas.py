"""Request and response bodies of the HTTP API.

msgspec structs, so Litestar decodes, validates and documents them (OpenAPI) from one
definition. ``forbid_unknown_fields`` turns a misspelt field into a 400 instead of a
silently ignored option.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec

from rag.domain import MAX_TOP_K, Hit
from rag.errors import InputError

T = TypeVar("T")

TOP_K_MAX = MAX_TOP_K

SNIPPET_CHARS = 300

TopK = Annotated[
    int,
    msgspec.Meta(ge=1, le=TOP_K_MAX, description=f"How many sources to use, 1 to {TOP_K_MAX}."),
]


HISTORY_TURNS_MAX = 3
"""Earlier turns a follow-up may send; the condensation rule looks no further back."""

HISTORY_PARAM_MAX_CHARS = 6000
"""Limit on ``GET /v1/ask``'s JSON ``history`` parameter, so the URL fits any server."""


class HistoryTurn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One earlier exchange of the conversation."""

    question: Annotated[str, msgspec.Meta(max_length=2000, description="What was asked.")]
    answer: Annotated[
        str, msgspec.Meta(max_length=4000, description="What was answered (may be cut short).")
    ] = ""


History = Annotated[
    list[HistoryTurn],
    msgspec.Meta(
        max_length=HISTORY_TURNS_MAX,
        description=f"Earlier turns, oldest first, at most {HISTORY_TURNS_MAX}: a follow-up "
        "question is understood in their context.",
    ),
]


class AskRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/ask``."""

    question: Annotated[str, msgspec.Meta(description="The question, in plain language.")]
    top_k: TopK | None = None
    history: History | None = None


def parse_history(raw: str | None) -> list[HistoryTurn]:
    """``GET /v1/ask``'s ``history`` parameter (JSON), or an ``InputError`` saying what is wrong."""
    if raw is None or not raw.strip():
        return []
    if len(raw) > HISTORY_PARAM_MAX_CHARS:
        raise InputError(
            f"history is too long: {len(raw)} characters, the limit is "
            f"{HISTORY_PARAM_MAX_CHARS}; send fewer turns or shorter answers"
        )
    try:
        return msgspec.json.decode(raw, type=History)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$")
        raise InputError(f"history{path.rstrip('`')}: {message}") from None
    except msgspec.DecodeError as exc:
        raise InputError(f"history is not valid JSON: {exc}") from None


class SearchRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/search``."""

    query: Annotated[str, msgspec.Meta(description="Search text.")]
    k: TopK | None = None


class SearchHit(msgspec.Struct, frozen=True):
    rank: int
    chunk_id: str
    document: str
    title: str
    page: int | None
    score: float
    relevance: float
    snippet: Annotated[str, msgspec.Meta(max_length=SNIPPET_CHARS)]
    heading_path: list[str]
    recognised: Annotated[
        bool,
        msgspec.Meta(description="The text was recognised from a scan or image (OCR)."),
    ] = False
    confidence: Annotated[
        float | None,
        msgspec.Meta(description="The recogniser's confidence (0-1) when recognised, else null."),
    ] = None

    @classmethod
    def from_hit(cls, rank: int, hit: Hit) -> SearchHit:
        return cls(
            rank=rank,
            chunk_id=hit.chunk_id,
            document=hit.source,
            title=hit.title,
            page=hit.page_start,
            score=hit.score,
            relevance=hit.relevance,
            snippet=snippet(hit.text),
            heading_path=list(hit.heading_path),
            recognised=hit.recognised,
            confidence=hit.confidence,
        )


class SearchResponse(msgspec.Struct, frozen=True):
    hits: list[SearchHit]
    degraded: Annotated[
        str | None,
        msgspec.Meta(
            description="Why the hits are keyword-ranked only (Workers AI refuses every "
            "call), or null."
        ),
    ] = None


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str


class ErrorResponse(msgspec.Struct, frozen=True):
    """The one shape every non-2xx JSON response has."""

    error: ErrorDetail


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """``text`` on one line, cut at a word boundary to at most ``limit`` characters."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    # Prefer ending on a whole word, unless that would throw away most of the snippet.
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def decode_strict(body: bytes, type_: type[T]) -> T:
    """``body`` decoded with msgspec's strict rules, or an ``InputError`` naming the field.

    Litestar converts request bodies in lax mode, which turns ``"top_k": "5"`` into 5;
    the API promises a 400 for a wrong JSON type, so bodies are checked again here.
    """
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$.")
        raise InputError(f"{path.rstrip('`')}: {message}" if path else message) from None
    except msgspec.DecodeError as exc:
        raise InputError(f"request body is not valid JSON: {exc}") from None
