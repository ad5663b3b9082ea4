"""Metric functions, the calibration sweep and the gate against hand-computed cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rag.errors import InputError
from rag.evaluate import calibrate, summary
from rag.evaluate.metrics import (
    distinct,
    holds_facts,
    ndcg_at,
    percentile,
    ranked_by_score,
    recall_at,
    reciprocal_rank,
    rouge_l,
    states_fact,
    token_f1,
    tokens,
)
from rag.evaluate.results import Candidate, QuestionResult, Ranked, score_answer


def test_recall_counts_distinct_relevant_sources_in_the_top_k() -> None:
    ranking = distinct(["a", "x", "a", "b", "y", "c"])  # two chunks of a count once
    assert ranking == ["a", "x", "b", "y", "c"]
    relevant = {"a": 1.0, "b": 1.0, "z": 1.0}
    assert recall_at(ranking, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at(ranking, relevant, 3) == pytest.approx(2 / 3)
    assert recall_at(ranking, relevant, 10) == pytest.approx(2 / 3)


def test_missing_labels_give_none_not_zero() -> None:
    assert recall_at(["a"], {}, 5) is None
    assert reciprocal_rank(["a"], {"a": 0.0}) is None  # a zero grade is not relevant
    assert ndcg_at(["a"], {}) is None
    assert summary.ranking_metrics([], QuestionResult.dense_ranking)["recall@1"] is None


def test_empty_ranking_scores_zero() -> None:
    assert recall_at([], {"a": 1.0}, 5) == 0.0
    assert reciprocal_rank([], {"a": 1.0}) == 0.0
    assert ndcg_at([], {"a": 1.0}) == 0.0


def test_reciprocal_rank_only_looks_k_deep() -> None:
    ranking = [f"d{i}" for i in range(12)]
    assert reciprocal_rank(ranking, {"d2": 1.0}) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranking, {"d10": 1.0}) == 0.0  # rank 11 is outside @10


def test_ndcg_uses_graded_gains() -> None:
    relevant = {"a": 2.0, "b": 1.0}
    assert ndcg_at(["a", "b"], relevant) == pytest.approx(1.0)
    swapped = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at(["b", "a"], relevant) == pytest.approx(swapped)
    assert ndcg_at(["x", "a"], {"a": 1.0}) == pytest.approx(1 / math.log2(3))


def test_ties_are_broken_by_id_whatever_the_input_order() -> None:
    items = [("c", 0.5), ("a", 0.5), ("b", 0.9)]
    assert ranked_by_score(items) == ["b", "a", "c"]
    assert ranked_by_score(reversed(items)) == ["b", "a", "c"]


def test_dense_ranking_ties_on_rank_fall_back_to_chunk_id() -> None:
    result = _result(
        candidates=[
            Candidate("c2", "b.md", 1, 0.9, None, None),
            Candidate("c1", "a.md", 1, 0.9, None, None),
            Candidate("c3", "kw.md", None, 0.2, 1, 3.0),  # keyword only: not in the dense list
        ],
        reranked=[Ranked("c3", 0.2, 0.2), Ranked("c2", 0.1, 0.9)],
    )
    assert result.dense_ranking() == ["a.md", "b.md"]
    assert result.reranked_ranking() == ["kw.md", "b.md"]


def test_token_f1_and_rouge_l_normalise_case_punctuation_and_citations() -> None:
    assert tokens("Hello, World! [1]") == ["hello", "world"]
    assert token_f1("The cat sat.", "the cat sat") == 1.0
    # prediction: a b c d (4); reference: a b e (3); overlap 2 -> P 0.5, R 2/3
    assert token_f1("a b c d", "a b e") == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # LCS of "a c b d" and "a b d" is "a b d" (3): P 3/4, R 1
    assert rouge_l("a c b d", "a b d") == pytest.approx(2 * 0.75 / 1.75)
    assert rouge_l("b a", "a b") == pytest.approx(0.5)  # order matters, unlike F1
    assert token_f1("b a", "a b") == 1.0
    assert token_f1("", "a") == 0.0 and rouge_l("x", "") == 0.0


def test_percentile_interpolates_and_handles_empty() -> None:
    assert percentile([10.0, 20.0, 30.0, 40.0], 50) == 25.0
    assert percentile([1.0] * 19 + [100.0], 95) == pytest.approx(5.95)
    assert percentile([], 50) is None


def test_summary_shape_and_nulls() -> None:
    answered = _result(grounded=True, citations=2, valid_citations=1, total_ms=10.0)
    refused = _result(qid="u", answerable=False, relevant={}, grounded=False, total_ms=30.0)
    metrics = summary.summarise([answered, refused])
    assert set(metrics) == {"retrieval", "reranked", "abstention", "answers", "cost", "latency_ms"}
    assert metrics["abstention"] == {"correct_refusal": 1.0, "false_refusal": 0.0}
    assert metrics["answers"] == {
        "citation_validity": 0.5,
        "f1": None,
        "rouge_l": None,
        "fact_recall": None,
    }
    assert metrics["latency_ms"]["total_p50"] == 20.0
    assert metrics["latency_ms"]["retrieve_p50"] is None
    assert summary.counts([answered, refused])["answerable_without_labels"] == 0


def test_gates() -> None:
    metrics = summary.summarise([_result(grounded=False)])
    gates = [summary.parse_gate("abstention.false_refusal=0.5", at_most=True)]
    assert summary.check(metrics, gates) == [
        "abstention.false_refusal = 1; wanted abstention.false_refusal <= 0.5"
    ]
    null = summary.check(metrics, [summary.parse_gate("abstention.correct_refusal=0.1")])
    assert "null" in null[0]
    with pytest.raises(InputError, match=r"unknown metric 'reranked\.recall@3'"):
        summary.check(metrics, [summary.parse_gate("reranked.recall@3=0.5")])
    with pytest.raises(InputError, match="METRIC=VALUE"):
        summary.parse_gate("reranked.recall@5")


def test_baseline_gates_loosen_by_the_tolerance(tmp_path: Path) -> None:
    metrics = summary.summarise([_result(grounded=True)])
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"tolerance": 0.05, "metrics": metrics}))
    gates = {g.metric: g for g in summary.baseline_gates(baseline)}
    assert gates["reranked.recall@1"].bound == pytest.approx(0.95)
    assert gates["abstention.false_refusal"].at_most
    assert gates["abstention.false_refusal"].bound == pytest.approx(0.05)
    assert not any(name.startswith(("cost.", "latency_ms.")) for name in gates)
    assert "abstention.correct_refusal" not in gates  # null in the baseline: nothing to hold
    # With counts, the slack is at least one question's worth of each figure.
    metrics["abstention"]["correct_refusal"] = 0.7
    counts = {"labelled": 100, "unanswerable": 10, "answerable": 100}
    baseline.write_text(json.dumps({"tolerance": 0.02, "counts": counts, "metrics": metrics}))
    gates = {g.metric: g for g in summary.baseline_gates(baseline)}
    assert gates["abstention.correct_refusal"].bound == pytest.approx(0.6)
    assert gates["reranked.recall@1"].bound == pytest.approx(0.98)


def test_calibration_sweep_picks_the_best_balanced_accuracy() -> None:
    results = [
        _result(qid="a1", best_relevance=0.9),
        _result(qid="a2", best_relevance=0.6),
        _result(qid="a3", best_relevance=0.3),
        _result(qid="u1", answerable=False, best_relevance=0.5),
        _result(qid="u2", answerable=False, best_relevance=0.2),
        _result(qid="u3", answerable=False, best_relevance=None),  # nothing retrieved
    ]
    rows = calibrate.sweep(results)
    assert [r.threshold for r in rows] == [0.2, 0.3, 0.5, 0.6, 0.9]
    at_06 = rows[3]
    assert (at_06.kept, at_06.refused) == (2, 3)
    assert at_06.balanced_accuracy == pytest.approx((2 / 3 + 1) / 2)
    best = calibrate.best(rows)
    assert best is not None and best.threshold == 0.3  # 3/3 kept, 2/3 refused: 0.833 ties 0.6
    covered = [_result(qid="a", best_relevance=0.9, coverage=0.1)]
    assert calibrate.row_at(covered, 0.5, min_coverage=0.5).kept == 0


def test_holds_facts_ignores_case_and_spacing_and_takes_any_alternative() -> None:
    answer = "The defaults are `chunk_tokens = 200` with\n`overlap_tokens  = 32`. [1]"
    assert holds_facts(answer, [["200"], ["OVERLAP_TOKENS = 32"]])
    assert holds_facts(answer, [["thirty-two", "= 32"]])
    assert not holds_facts(answer, [["200"], ["48"]])
    assert holds_facts(answer, [])  # no facts: nothing missing


def test_a_fact_is_found_as_a_whole_word_only() -> None:
    answer = "Unspecified: Git uses the core.autocrlf variable; see support for 320 files. [1]"
    assert not holds_facts(answer, [["crlf"]])  # inside "autocrlf": named, not stated
    assert not holds_facts(answer, [["ort"]])
    assert not holds_facts(answer, [["32"]])
    assert holds_facts(answer, [["core.autocrlf"], ["320"], ["Unspecified"]])
    assert holds_facts("run `git merge --abort`. [1]", [["--abort"], ["merge --abort"]])
    assert holds_facts("git-stash(1) [2]", [["git stash", "git-stash"]])
    assert holds_facts("(default: 900).", [["900"]])
    assert not holds_facts("the timeout_s key", [["timeout"]])  # "_" is part of a word
    assert states_fact("any", "")


def test_fact_recall_counts_answerable_questions_with_facts_and_refusals_hold_none() -> None:
    right = _result(qid="a", grounded=True, answer="Port 8000 [1]", facts=[["8000"]])
    wrong = _result(qid="b", grounded=True, answer="Port 9000 [1]", facts=[["8000"]])
    refused = _result(qid="c", grounded=False, answer="8000 is not covered", facts=[["8000"]])
    unlabelled = _result(qid="d", grounded=True, answer="anything")
    unanswerable = _result(qid="e", answerable=False, relevant={}, facts=[["x"]])
    results = [right, wrong, refused, unlabelled, unanswerable]
    for result in results:
        score_answer(result)
    assert [r.facts_held for r in results] == [True, False, False, None, None]
    assert summary.summarise(results)["answers"]["fact_recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary.counts(results)["with_facts"] == 3


def _result(
    *,
    qid: str = "q",
    answerable: bool = True,
    relevant: dict[str, float] | None = None,
    candidates: list[Candidate] | None = None,
    reranked: list[Ranked] | None = None,
    **fields: object,
) -> QuestionResult:
    default = [Candidate("c1", "a.md", 1, 0.8, 1, 2.0)]
    result = QuestionResult(
        id=qid,
        question=f"question {qid}",
        answerable=answerable,
        relevant={"a.md": 1.0} if relevant is None else relevant,
        candidates=default if candidates is None else candidates,
        reranked=[Ranked("c1", 0.5, 0.8)] if reranked is None else reranked,
    )
    for name, value in fields.items():
        setattr(result, name, value)
    return result
