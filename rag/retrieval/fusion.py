"""Weighted reciprocal-rank fusion of the dense and keyword rankings, and the local reranker.

RRF adds ``weight / (k + rank)`` over the rankings an item appears in (ranks from 1).
The dense ranking weighs 1 and BM25 ``keyword_weight``: on a labelled set, equal weights
let a weak BM25 pull recall@10 from 0.96 to 0.90, so the keyword side is a tie-breaker
and a finder of exact terms, not an equal partner. Evaluation runs set the weight.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from typing import TypeVar

import msgspec

from rag.domain import Hit

RRF_K = 60
"""The constant from Cormack et al. (2009); it flattens the advantage of the very top ranks."""

Id = TypeVar("Id", bound=Hashable)

# Tokens that look like identifiers: error codes (3036), settings (pdf_timeout_s), file
# names (config.toml), headers (X-Accel-Buffering), camelCase. Embedding models blur them;
# BM25 matches them exactly, so a query that carries one trusts the keyword side more.
_IDENTIFIER = re.compile(
    r"\b(?:\w*\d\w*|\w+_\w+|\w+\.\w+|[A-Za-z]+(?:-[A-Za-z0-9]+){2,}|[a-z]+[A-Z]\w*)\b"
)


def has_identifier(query: str) -> bool:
    """Whether ``query`` names something exact that keyword search should find."""
    return _IDENTIFIER.search(query) is not None


def identifiers(query: str) -> list[str]:
    """The identifiers ``query`` names, each of at least 3 characters; a number only with
    4 digits or more (``3036``), since "10" of "10,000" or "top 5" names nothing exact."""
    return [
        m for m in _IDENTIFIER.findall(query) if len(m) >= 3 and not (m.isdigit() and len(m) < 4)
    ]


def rrf_score(
    dense_rank: int | None, keyword_rank: int | None, keyword_weight: float, k: int = RRF_K
) -> float:
    """The fused score of one item from its 1-based ranks (None: absent from that list)."""
    score = 0.0
    if dense_rank is not None:
        score += 1.0 / (k + dense_rank)
    if keyword_rank is not None:
        score += keyword_weight / (k + keyword_rank)
    return score


def fuse(
    dense: Sequence[tuple[Id, float]],
    keyword: Sequence[tuple[Id, float]],
    keyword_weight: float,
    k: int = RRF_K,
) -> list[tuple[Id, float, int | None, int | None]]:
    """(id, fused score, dense rank, keyword rank), best first.

    Both inputs are best first; an id repeated in one list keeps its best rank. Ties
    go to the better dense rank, then the better keyword rank. Items that end with a
    fused score of 0 (keyword-only with ``keyword_weight`` 0) are left out, so weight 0
    gives exactly the dense ranking.
    """
    dense_ranks = _ranks(dense)
    keyword_ranks = _ranks(keyword)
    fused = []
    for item in dict.fromkeys([*dense_ranks, *keyword_ranks]):
        d, kw = dense_ranks.get(item), keyword_ranks.get(item)
        score = rrf_score(d, kw, keyword_weight, k)
        if score > 0:
            fused.append((item, score, d, kw))
    fused.sort(key=lambda row: (-row[1], _or_last(row[2]), _or_last(row[3])))
    return fused


class HybridReranker:
    """A ``Reranker`` without a model: weighted RRF of the dense and BM25 ranks.

    Each candidate carries ``dense_rank``/``keyword_rank`` (1-based positions in the
    dense and keyword candidate lists, None where it is absent) and ``dense_score``.
    The result's ``score`` is the fused score and ``relevance`` the dense cosine, the
    figure the local evidence gate compares with ``retrieval.min_relevance`` (RRF
    scores say nothing about whether the documents cover the question). A candidate
    only BM25 found has no dense rank, but the caller fills its ``dense_score`` with
    the cosine of its stored vector (``Retriever`` does; ``NumpyIndex.similarities``
    computes it too); if the caller could not, its relevance is 0.0, so keyword
    evidence alone never opens the gate.
    """

    name = "hybrid-fusion (dense cosine + keyword rank, weighted RRF; not a cross-encoder)"

    def __init__(
        self, keyword_weight: float, k: int = RRF_K, identifier_weight: float | None = None
    ) -> None:
        if keyword_weight < 0 or (identifier_weight is not None and identifier_weight < 0):
            raise ValueError("keyword weights must be >= 0")
        self.keyword_weight = keyword_weight
        self.identifier_weight = keyword_weight if identifier_weight is None else identifier_weight
        """The keyword side's weight for a query that names an identifier (``has_identifier``)."""
        self.k = k

    async def rerank(self, query: str, candidates: Sequence[Hit], k: int) -> list[Hit]:
        """The best ``k`` candidates by fused score; ``relevance`` is the dense cosine."""
        weight = self.identifier_weight if has_identifier(query) else self.keyword_weight
        scored = []
        for position, hit in enumerate(candidates):
            fused = rrf_score(hit.dense_rank, hit.keyword_rank, weight, self.k)
            tie = (_or_last(hit.dense_rank), _or_last(hit.keyword_rank), position)
            scored.append((-fused, tie, hit, fused))
        scored.sort(key=lambda row: (row[0], row[1]))
        return [
            msgspec.structs.replace(
                hit,
                score=fused,
                relevance=hit.dense_score if hit.dense_score is not None else 0.0,
            )
            for _, _, hit, fused in scored[: max(k, 0)]
        ]


def _ranks(ranking: Sequence[tuple[Id, float]]) -> dict[Id, int]:
    ranks: dict[Id, int] = {}
    for rank, (item, _) in enumerate(ranking, start=1):
        ranks.setdefault(item, rank)
    return ranks


def _or_last(rank: int | None) -> float:
    return math.inf if rank is None else rank
