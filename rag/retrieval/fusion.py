"""Weighted reciprocal-rank fusion of the dense and keyword rankings, and the local reranker.

RRF adds ``weight / (k + rank)`` over the rankings an item appears in (ranks from 1).
The dense ranking weighs 1 and BM25 ``keyword_weight``: on a labelled set, equal weights
let a weak BM25 pull recall@10 from 0.96 to 0.90, so the keyword side is a tie-breaker
and a finder of exact terms, not an equal partner. Evaluation runs set the weight.

The local reranker fuses a third ranking for a question about an identifier itself
("What does core.autocrlf true do?"): the candidates that define it (``defines``), at
``definition_weight``. Neither side ranks a reference entry high: git-config's
``core.autocrlf`` entry was dense 18th (its cosine 0.42 against 0.55 for a sentence that
merely names the setting) and BM25 7th, because every neighbouring entry names it too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from typing import Final, TypeVar

import msgspec

from rag.domain import Hit
from rag.text import TERM_CHARS, TERM_LINES, content_words

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


SUBJECT_OTHER_WORDS: Final = 2
"""A question names an identifier as its subject when at most this many of its other
content words are left: "What does core.autocrlf true do?" (true), "What does setting
keyword_weight to 0 do?" (setting, 0), a bare "pdf_timeout_s"; not "which tokenizer does
the FTS5 keyword index use" (tokenizer, keyword, index), which asks something else of
FTS5 and whose answer is not FTS5's glossary entry (with no such limit the handbook lost
that question, fact recall 0.889 -> 0.870)."""


def subjects(query: str) -> list[str]:
    """The identifiers ``query`` asks about as such (``SUBJECT_OTHER_WORDS``), or none."""
    names = identifiers(query)
    others = [w for w in content_words(query) if w not in names]
    return names if names and len(others) <= SUBJECT_OTHER_WORDS else []


_TERM_MARKUP = re.compile(r"(?:#{1,6}[ \t]+|\|[ \t]*)?[*_`'\"]*")
_LONGER_NAME = re.compile(r"\w|[.\-]\w")


def defines(text: str, names: Sequence[str]) -> bool:
    """Whether a line of ``text`` starts with one of ``names`` (after markup, ignoring
    case) and is a Markdown heading, a table row (the name its first cell) or the term of
    a definition: unindented, over an indented body, as the AsciiDoc, rST and HTML
    loaders write definition lists ("core.autocrlf" over "    Setting this variable
    to ..."; "author.name" and "committer.name" over one body). A mention in prose, or a
    longer name that starts with it (``core.autocrlfx``, ``pull.rebase.x``), is not one.
    """
    wanted = [name.lower() for name in names]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line[:1].strip() or len(line) > TERM_CHARS:
            continue  # blank, indented (a body) or prose
        markup = _TERM_MARKUP.match(line)
        rest = line[markup.end() if markup else 0 :].lower()
        for name in wanted:
            if not rest.startswith(name) or _LONGER_NAME.match(rest, len(name)):
                continue
            if line.startswith(("#", "|")) or _over_body(lines, i):
                return True
    return False


def _over_body(lines: Sequence[str], i: int) -> bool:
    """Whether term line ``i`` (with up to ``TERM_LINES`` term lines in all) is followed
    by an indented body."""
    for line in lines[i + 1 : i + TERM_LINES + 1]:
        if line[:1] in (" ", "\t") and line.strip():
            return True
        if not line.strip() or len(line) > TERM_CHARS:
            return False
    return False


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

    For a question about an identifier itself (``subjects``), the candidates that define
    it (``defines``) form a third ranking, in their fused order, at ``definition_weight``.
    """

    name = "hybrid-fusion (dense cosine + keyword rank, weighted RRF; not a cross-encoder)"

    def __init__(
        self,
        keyword_weight: float,
        k: int = RRF_K,
        identifier_weight: float | None = None,
        definition_weight: float = 0.0,
    ) -> None:
        if keyword_weight < 0 or (identifier_weight is not None and identifier_weight < 0):
            raise ValueError("keyword weights must be >= 0")
        if definition_weight < 0:
            raise ValueError("the definition weight must be >= 0")
        self.keyword_weight = keyword_weight
        self.identifier_weight = keyword_weight if identifier_weight is None else identifier_weight
        """The keyword side's weight for a query that names an identifier (``has_identifier``)."""
        self.definition_weight = definition_weight
        self.k = k

    async def rerank(self, query: str, candidates: Sequence[Hit], k: int) -> list[Hit]:
        """The best ``k`` candidates by fused score; ``relevance`` is the dense cosine."""
        weight = self.identifier_weight if has_identifier(query) else self.keyword_weight
        fused = [rrf_score(h.dense_rank, h.keyword_rank, weight, self.k) for h in candidates]

        def order(i: int) -> tuple[float, tuple[float, float, int]]:
            return (-fused[i], _tie(candidates[i], i))

        names = subjects(query) if self.definition_weight else []
        if names:
            defining = (i for i, hit in enumerate(candidates) if defines(hit.text, names))
            for rank, i in enumerate(sorted(defining, key=order), start=1):
                fused[i] += self.definition_weight / (self.k + rank)
        ranked = []
        for i in sorted(range(len(candidates)), key=order)[: max(k, 0)]:
            hit = candidates[i]
            relevance = hit.dense_score if hit.dense_score is not None else 0.0
            ranked.append(msgspec.structs.replace(hit, score=fused[i], relevance=relevance))
        return ranked


def _tie(hit: Hit, position: int) -> tuple[float, float, int]:
    """Equal fused scores go to the better dense rank, then keyword rank, then input order."""
    return (_or_last(hit.dense_rank), _or_last(hit.keyword_rank), position)


def _ranks(ranking: Sequence[tuple[Id, float]]) -> dict[Id, int]:
    ranks: dict[Id, int] = {}
    for rank, (item, _) in enumerate(ranking, start=1):
        ranks.setdefault(item, rank)
    return ranks


def _or_last(rank: int | None) -> float:
    return math.inf if rank is None else rank
