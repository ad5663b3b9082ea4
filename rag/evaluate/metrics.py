"""Metric functions: rankings of sources against graded labels, and answers against references.

Pure functions over plain values, so each is checked against hand-computed cases.
Rankings are document-level: the distinct sources in hit order (two chunks of one
document count once, where the first of them ranks).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

_CITATION = re.compile(r"\[\d{1,3}\]")
_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))


def distinct(sources: Iterable[str]) -> list[str]:
    """Sources in first-seen order, each once."""
    return list(dict.fromkeys(sources))


def ranked_by_score(items: Iterable[tuple[str, float]]) -> list[str]:
    """Ids best score first; equal scores in id order, so a ranking never depends on
    the order candidates happened to arrive in."""
    return [item for item, _ in sorted(items, key=lambda pair: (-pair[1], pair[0]))]


def recall_at(ranking: Sequence[str], relevant: Mapping[str, float], k: int) -> float | None:
    """Share of the relevant sources found in the top ``k``; None without labels."""
    wanted = {source for source, gain in relevant.items() if gain > 0}
    if not wanted:
        return None
    return len(wanted.intersection(ranking[:k])) / len(wanted)


def reciprocal_rank(
    ranking: Sequence[str], relevant: Mapping[str, float], k: int = 10
) -> float | None:
    """1 / rank of the first relevant source within the top ``k`` (0 if none)."""
    wanted = {source for source, gain in relevant.items() if gain > 0}
    if not wanted:
        return None
    for rank, source in enumerate(ranking[:k], start=1):
        if source in wanted:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranking: Sequence[str], relevant: Mapping[str, float], k: int = 10) -> float | None:
    """Normalised discounted cumulative gain with the graded gains as given (linear gain,
    as trec_eval's ndcg): sum of gain / log2(rank + 1), over the best possible order."""
    gains = sorted((g for g in relevant.values() if g > 0), reverse=True)
    if not gains:
        return None
    dcg = sum(relevant.get(s, 0.0) / math.log2(r + 1) for r, s in enumerate(ranking[:k], 1))
    ideal = sum(g / math.log2(r + 1) for r, g in enumerate(gains[:k], start=1))
    return max(dcg, 0.0) / ideal


def tokens(text: str) -> list[str]:
    """Lowercased, citation markers and punctuation removed, split on whitespace."""
    return _CITATION.sub(" ", text).lower().translate(_PUNCTUATION).split()


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall (bag of words, SQuAD-style)."""
    predicted, expected = tokens(prediction), tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    return _f_measure(_common(predicted, expected), len(predicted), len(expected))


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure: longest common token subsequence, precision and recall balanced."""
    predicted, expected = tokens(prediction), tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    return _f_measure(_lcs(predicted, expected), len(predicted), len(expected))


def normalised(text: str) -> str:
    """Lower-cased, every run of white space one space: how a fact is looked for."""
    return " ".join(text.lower().split())


def holds_facts(answer: str, facts: Sequence[Sequence[str]]) -> bool:
    """Whether ``answer`` contains every fact, each as any one of its alternatives.

    Case and spacing are ignored, nothing else: a fact is a short verbatim string ("32",
    "--port"), so a number or a flag is either in the answer or not, which token overlap
    (F1, ROUGE-L) cannot tell from a long answer that merely shares words. A fact is
    looked for as a whole word (``states_fact``).
    """
    said = normalised(answer)
    return all(any(states_fact(said, normalised(alt)) for alt in fact) for fact in facts)


def states_fact(said: str, fact: str) -> bool:
    """Whether ``said`` holds ``fact`` not inside a longer word: where the fact starts or
    ends with a letter, digit or underscore, the text beside it must not be one.

    Plain substring search let "crlf" be found in "core.autocrlf", which an answer names
    without saying what the setting does (git-doc's g25), "ort" in "support", and "32" in
    "320"; a flag's own edge ("--abort") is punctuation, so it is found after a space or
    a backquote alike. Both strings are already ``normalised``.
    """
    if not fact:
        return True
    before = r"(?<!\w)" if _WORDLIKE.match(fact[0]) else ""
    after = r"(?!\w)" if _WORDLIKE.match(fact[-1]) else ""
    return re.search(before + re.escape(fact) + after, said) is not None


_WORDLIKE = re.compile(r"\w")


def _f_measure(matched: int, predicted: int, expected: int) -> float:
    """F1 of ``matched`` tokens out of ``predicted`` (precision) and ``expected`` (recall)."""
    if matched == 0:
        return 0.0
    precision, recall = matched / predicted, matched / expected
    return 2 * precision * recall / (precision + recall)


def best_over(
    score: Callable[[str, str], float], prediction: str, references: Sequence[str]
) -> float | None:
    """The best score against any reference; None when there is none."""
    return max((score(prediction, r) for r in references), default=None)


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that apply (None is left out); None when none apply."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _common(a: list[str], b: list[str]) -> int:
    counts: dict[str, int] = {}
    for token in b:
        counts[token] = counts.get(token, 0) + 1
    overlap = 0
    for token in a:
        if counts.get(token, 0) > 0:
            counts[token] -= 1
            overlap += 1
    return overlap


def _lcs(a: list[str], b: list[str]) -> int:
    # One row of the dynamic programme at a time: answers run to hundreds of tokens.
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[-1]))
        previous = current
    return previous[-1]
