"""Weighted reciprocal-rank fusion and the hybrid reranker, against hand-computed values."""

from __future__ import annotations

import fakes
import pytest

from rag.domain import Hit
from rag.retrieval.fusion import (
    HybridReranker,
    defines,
    fuse,
    has_identifier,
    rrf_score,
    subjects,
)


def test_fuse_hand_computed() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    keyword = [("c", 12.0), ("d", 8.0), ("a", 1.0)]
    fused = fuse(dense, keyword, keyword_weight=0.5, k=60)
    expected = {
        "a": 1 / 61 + 0.5 / 63,  # 0.0243240...
        "c": 1 / 63 + 0.5 / 61,  # 0.0240700...
        "b": 1 / 62,  # 0.0161290...
        "d": 0.5 / 62,  # 0.0080645...
    }
    assert [row[0] for row in fused] == ["a", "c", "b", "d"]
    for item, score, _, _ in fused:
        assert score == pytest.approx(expected[item], abs=1e-12)
    assert [(row[0], row[2], row[3]) for row in fused] == [
        ("a", 1, 3),
        ("c", 3, 1),
        ("b", 2, None),
        ("d", None, 2),
    ]


def test_ties_prefer_the_dense_rank() -> None:
    # With weight 1, "x" (dense 1) and "y" (keyword 1) score exactly the same.
    fused = fuse([("x", 0.5)], [("y", 3.0)], keyword_weight=1.0)
    assert fused[0][1] == fused[1][1] == pytest.approx(1 / 61)
    assert [row[0] for row in fused] == ["x", "y"]
    # Equal dense ranks cannot happen; equal sums from different ranks break by dense rank.
    fused = fuse([("p", 1), ("q", 1)], [("q", 1), ("p", 1)], keyword_weight=1.0)
    assert [row[0] for row in fused] == ["p", "q"]


def test_weight_zero_is_the_dense_order() -> None:
    dense = [(f"d{i}", 1 - i / 10) for i in range(8)]
    keyword = [("d7", 9.0), ("k1", 8.0), ("d0", 7.0)]
    fused = fuse(dense, keyword, keyword_weight=0.0)
    assert [row[0] for row in fused] == [item for item, _ in dense]


def test_repeated_ids_keep_their_best_rank() -> None:
    fused = fuse([("a", 1.0), ("b", 0.9), ("a", 0.1)], [], keyword_weight=0.3)
    assert [(row[0], row[2]) for row in fused] == [("a", 1), ("b", 2)]
    assert fuse([], [], keyword_weight=0.3) == []


def hit(chunk_id: str, dense: int | None, cosine: float | None, keyword: int | None) -> Hit:
    return fakes.hit(
        0,
        chunk_id,
        chunk_id=chunk_id,
        score=0.0,
        relevance=0.0,
        dense_rank=dense,
        dense_score=cosine,
        keyword_rank=keyword,
        keyword_score=float(10 - keyword) if keyword else None,
    )


async def test_reranker_orders_by_fused_score_and_reports_cosine() -> None:
    reranker = HybridReranker(keyword_weight=0.3)
    assert "not a cross-encoder" in reranker.name
    candidates = [
        hit("a", 1, 0.62, None),
        hit("b", 2, 0.60, 1),
        hit("c", 3, 0.55, 2),
        hit("k", None, None, 3),  # keyword only, and the caller could not give it a cosine
        hit("kc", None, 0.41, 4),  # keyword only; the caller filled its cosine
    ]
    out = await reranker.rerank("q", candidates, 4)
    # b: 1/62 + 0.3/61 = 0.021047 > a: 1/61 = 0.016393 > c: 1/63 + 0.3/62 = 0.020712 ...
    assert [h.chunk_id for h in out] == ["b", "c", "a", "k"]
    assert out[0].score == pytest.approx(1 / 62 + 0.3 / 61)
    assert out[1].score == pytest.approx(1 / 63 + 0.3 / 62)
    assert out[2].score == pytest.approx(1 / 61)
    assert out[3].score == pytest.approx(0.3 / 63)
    assert [h.relevance for h in out] == [0.60, 0.55, 0.62, 0.0]
    all_five = await reranker.rerank("q", candidates, 10)
    assert all_five[-1].chunk_id == "kc" and all_five[-1].relevance == 0.41
    assert await reranker.rerank("q", [], 3) == []


def test_rrf_score() -> None:
    assert rrf_score(None, None, 0.3) == 0.0
    assert rrf_score(1, 1, 0.3, k=0) == pytest.approx(1.3)
    with pytest.raises(ValueError):
        HybridReranker(keyword_weight=-1)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("3036", True),
        ("what is pdf_timeout_s for", True),
        ("where is config.toml", True),
        ("X-Accel-Buffering header", True),
        ("what is MRR@10", True),
        ("how do I change the port", False),
        ("Can I use Postgres instead of SQLite?", False),
    ],
)
def test_identifier_detection(query: str, expected: bool) -> None:
    assert has_identifier(query) is expected


async def test_identifier_queries_use_the_identifier_weight() -> None:
    def hit(cid: str, dense: int | None, keyword: int | None) -> Hit:
        return Hit(
            chunk_id=cid,
            document_id=cid,
            source=cid,
            title=cid,
            text=cid,
            score=0.0,
            relevance=0.0,
            dense_score=0.5,
            dense_rank=dense,
            keyword_rank=keyword,
        )

    # "b" is dense #3 but keyword #1; only a strong keyword weight lifts it above "a".
    pool = [hit("a", 1, None), hit("c", 2, None), hit("b", 3, 1)]
    reranker = HybridReranker(keyword_weight=0.0, identifier_weight=1.0)
    plain = await reranker.rerank("how do I change it", pool, 3)
    named = await reranker.rerank("what does 3036 mean", pool, 3)
    assert [h.chunk_id for h in plain] == ["a", "c", "b"]
    assert named[0].chunk_id == "b"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # AsciiDoc / HTML definition list: the term over its indented body
        ("core.eol\n    Sets ...\ncore.autocrlf\n    Setting this variable to true ...", True),
        ("author.name\ncommitter.name\n    The name recorded in commits.", True),  # two terms
        ("| `core.autocrlf` | `false` | Converts line endings. |", True),  # a table row
        ("## core.autocrlf\n\nConverts line endings.", True),  # a heading
        ("**core.autocrlf**\n    Converts line endings.", True),  # markup around the term
        ("If this is not the case for core.autocrlf, Git will reject the file.", False),
        ("core.autocrlf is read by git add.\nAnd by git checkout.", False),  # no body
        ("core.autocrlfx\n    Another setting.", False),  # a longer name
        ("core.autocrlf.extra\n    Another setting.", False),
        ("    core.autocrlf\n        Indented: inside another body.", False),
    ],
)
def test_defines_reads_terms_rows_and_headings_not_mentions(text: str, expected: bool) -> None:
    assert defines(text, ["core.autocrlf", "author.name"]) is expected


def test_subjects_are_identifiers_the_question_asks_about_as_such() -> None:
    assert subjects("What does core.autocrlf true do?") == ["core.autocrlf"]
    assert subjects("pdf_timeout_s") == ["pdf_timeout_s"]
    assert subjects("What does setting keyword_weight to 0 do?") == ["keyword_weight"]
    assert subjects("which tokenizer does the FTS5 keyword index use") == []  # asks of it
    assert subjects("how do I change the port") == []  # no identifier at all


async def test_a_definition_of_the_subject_rises_and_nothing_else_moves() -> None:
    def hit(cid: str, dense: int, text: str) -> Hit:
        return fakes.hit(dense, text, chunk_id=cid, dense_score=0.5, dense_rank=dense)

    entry = "core.autocrlf\n    Setting this variable to true converts CRLF on checkout."
    pool = [
        hit("mention", 1, "If this is not the case for core.autocrlf, Git rejects the file."),
        hit("other", 2, "core.eol\n    Sets the line ending type."),
        hit("entry", 18, entry),
    ]
    reranker = HybridReranker(keyword_weight=0.1, definition_weight=1.0)
    about = await reranker.rerank("What does core.autocrlf true do?", pool, 3)
    assert [h.chunk_id for h in about] == ["entry", "mention", "other"]
    assert about[0].score == pytest.approx(1 / 78 + 1 / 61)
    assert about[0].relevance == 0.5  # the gate still reads the cosine
    of_it = await reranker.rerank(
        "which tokenizer does the core.autocrlf keyword check use", pool, 3
    )
    assert [h.chunk_id for h in of_it] == ["mention", "other", "entry"]
    off = HybridReranker(keyword_weight=0.1)  # weight 0: the ranking is not fused at all
    plain = await off.rerank("What does core.autocrlf true do?", pool, 3)
    assert [h.chunk_id for h in plain] == ["mention", "other", "entry"]
    with pytest.raises(ValueError):
        HybridReranker(keyword_weight=0.1, definition_weight=-1)
