"""The offline answerer: quote the source sentences closest to the question, cited.

Nothing is generated, so nothing is invented: every sentence it streams is an exact
substring of the source its ``[n]`` marker names. It is deterministic and takes tens
of milliseconds on the local embedder.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from rag.domain import Hit
from rag.ports import Embedder, Vectors
from rag.text import STOP_WORDS, UnitKind, split_sentences, word_pieces


class _Candidate(NamedTuple):
    source: int  # 0-based index into ``sources``
    position: int  # order within the source
    text: str
    kind: UnitKind


class ExtractiveAnswerer:
    """A ``ChatModel`` that streams the best source sentences verbatim, each cited."""

    name = "extractive"
    prompt_version = "extractive-2"
    """No prompt: the selection rules are versioned instead. 2: one stop-word list (rag.text)."""

    def __init__(
        self,
        embedder: Embedder,
        max_sentences: int = 4,
        max_sources: int = 3,
        *,
        min_relative: float = 0.75,
        overlap_bonus: float = 0.0,
        duplicate_cosine: float = 0.92,
    ) -> None:
        self.embedder = embedder
        self.max_sentences = max_sentences
        self.max_sources = max_sources
        self.min_relative = min_relative
        """A sentence must score at least this fraction of the best one."""
        self.overlap_bonus = overlap_bonus
        """Added times the share of question words a sentence contains. Off by default:
        on 200 answerable ClapNQ questions (gold passage, token F1 against the answer)
        0.05 to 0.3 moved F1 by under 0.01 either way (0.446 to 0.449 for one sentence,
        0.542 to 0.549 for three), which is noise, not evidence."""
        self.duplicate_cosine = duplicate_cosine
        """Above this cosine to a chosen sentence, a sentence repeats it (chunks overlap)."""

    async def stream(self, question: str, sources: Sequence[Hit]) -> AsyncGenerator[str, None]:
        """Sentences in (source rank, position) order, each followed by `` [n]``."""
        candidates = [c for c in self._candidates(sources) if _answers(c, question)]
        if not candidates or not question.strip() or self.max_sentences < 1:
            return
        query, passages = await asyncio.gather(
            self.embedder.embed([question], "query"),
            self.embedder.embed([c.text for c in candidates], "passage"),
        )
        scores = passages @ query[0] + self.overlap_bonus * _overlap(question, candidates)
        chosen = self._choose(scores, passages, candidates)
        previous: _Candidate | None = None
        for index in sorted(chosen, key=lambda i: (candidates[i].source, candidates[i].position)):
            candidate = candidates[index]
            separator = "" if previous is None else _separator(previous, candidate)
            yield f"{separator}{candidate.text} [{candidate.source + 1}]"
            previous = candidate

    def _candidates(self, sources: Sequence[Hit]) -> list[_Candidate]:
        candidates = []
        for source, hit in enumerate(sources[: self.max_sources]):
            # Loaders put a section's heading at the top of its text without its "#"
            # marks, so the splitter sees a sentence; the heading path names it.
            headings = {" ".join(h.split()).lower() for h in hit.heading_path}
            units = [
                u
                for u in split_sentences(hit.text)
                if u.kind != "heading"
                and " ".join(hit.text[u.start : u.end].split()).lower() not in headings
            ]
            # A chunk cut mid-sentence starts with a fragment; quoting it reads badly.
            if len(units) > 1 and hit.text[units[0].start].islower():
                units = units[1:]
            for position, unit in enumerate(units):
                text = hit.text[unit.start : unit.end]
                candidates.append(_Candidate(source, position, text, unit.kind))
        return candidates

    def _choose(
        self, scores: npt.NDArray[np.float32], passages: Vectors, candidates: list[_Candidate]
    ) -> list[int]:
        # Stable: equal scores keep (source rank, position) order, so output is deterministic.
        order = np.argsort(-scores, kind="stable").tolist()
        best = float(scores[order[0]])
        floor = best * self.min_relative if best > 0 else best
        chosen: list[int] = []
        seen: set[str] = set()
        for index in order:
            if len(chosen) == self.max_sentences or scores[index] < floor:
                break
            key = " ".join(candidates[index].text.split()).lower()
            if key in seen or any(
                float(passages[index] @ passages[j]) >= self.duplicate_cosine for j in chosen
            ):
                continue
            seen.add(key)
            chosen.append(index)
        return chosen


def _answers(candidate: _Candidate, question: str) -> bool:
    """Whether a unit can carry an answer: not a question, a title, or the question itself.

    FAQ entries and example requests repeat questions verbatim; quoting them back scores
    high and answers nothing. A short unit without closing punctuation is a title.
    """
    text = candidate.text.strip().rstrip("*_`")
    if text.endswith("?"):
        return False
    asked = " ".join(question.lower().split()).rstrip("?")
    # Only a whole question repeated is an echo; a keyword query ("3036") is in its answer.
    if len(asked.split()) >= 3 and asked in " ".join(text.lower().split()):
        return False
    words = len(word_pieces(text))
    return words >= 3 and not (words <= 8 and text[-1:].isalnum() and candidate.kind != "code")


def _terms(text: str) -> set[str]:
    return {w for w in word_pieces(text) if w not in STOP_WORDS}


def _overlap(question: str, candidates: list[_Candidate]) -> npt.NDArray[np.float32]:
    """Share of the question's content words each candidate contains."""
    asked = _terms(question)
    if not asked:
        return np.zeros(len(candidates), dtype=np.float32)
    shares = [len(asked & _terms(c.text)) / len(asked) for c in candidates]
    return np.asarray(shares, dtype=np.float32)


def _separator(previous: _Candidate, current: _Candidate) -> str:
    # List items, table rows and code lines read as lines; prose reads as a paragraph.
    listish = ("item", "code")
    if previous.kind in listish or current.kind in listish:
        return "\n"
    return "\n" if previous.source != current.source else " "
