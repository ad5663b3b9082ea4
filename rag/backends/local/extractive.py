"""The offline answerer: quote the answer units that answer the question, cited.

Nothing is generated, so nothing is invented: every piece it streams is an exact
substring of the source its ``[n]`` marker names. Units are sentences, list items,
table rows (after their header row), code blocks, and lead-ins with the block they
introduce (``rag.backends.local.answer_units``); their vectors were stored at ingestion
(``rag.backends.local.units``), so an answer embeds only its question.

Each unit is scored on features that can be measured (``Weights``): its cosine to the
question, the share of the question's content words and identifiers it holds, whether
its shape fits the kind of question (a value for "what is the default", a command for
"how do I", a reason for "why"), its kind and its source's rank. The best units are
streamed in reading order (source rank, then position), one ``delta`` each; once the
question is embedded, choosing them takes well under a millisecond, so the first goes
out at once. A question that asks what to use or what something is gets the first
source's document's opening line before them ("git-shortlog - Summarize 'git log'
output", ``rag.retrieval.opening``) when the retriever found one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np

from rag.backends.local.answer_units import FENCE_LINES, SPLITTER, AnswerUnit, UnitKind
from rag.backends.local.units import Units, embed_units
from rag.domain import Hit
from rag.ports import Embedder
from rag.retrieval.fusion import identifiers
from rag.retrieval.gate import STEM
from rag.retrieval.opening import opening_line
from rag.text import STOP_WORDS, word_pieces

QuestionKind = Literal["value", "howto", "why", "yesno", "definition", "other"]


class UnitSource(Protocol):
    """Where stored units come from (``rag.backends.local.units.UnitIndex``)."""

    async def load(self, chunk_ids: Sequence[str]) -> dict[str, Units]: ...


@dataclass(frozen=True)
class Weights:
    """How much each feature adds to a unit's cosine to the question.

    Measured with ``benchmarks/answer_weights.py`` on two labelled sets with facts:
    corpus/qa.jsonl (our handbook, 54 answerable questions) and eval/git-doc.jsonl (git's
    manual, 41): each question retrieved once, the answerer replayed over its units for
    every setting of a grid, fact recall first, F1 second. These weights hold every fact
    in 0.889 / 0.634 of the answers (F1 0.276 / 0.165); cosine alone, every weight 0, in
    0.852 / 0.561. The figures after each weight are the two fact recalls with that weight
    alone set to 0. A question is 0.019 on the first set and 0.024 on the second: a
    difference of one is as likely noise as signal, and a weight stays only where it
    helps one set and costs the other nothing.
    """

    overlap: float = 0.3
    """Times the share of the question's content words in the unit; 0.852 / 0.634 at 0.
    For questions phrased in the documents' own words, where the cosine of a short unit
    runs below that of a long one on the same topic."""
    identifier: float = 0.25
    """Times the share of the question's identifiers (``3036``, ``pdf_timeout_s``) the
    unit holds verbatim; 0.870 / 0.634 at 0, and 0.870 / 0.634 at 0.5 too. Embeddings blur
    them (the 3042 row was as close as the 3036 row); the unit that names the identifier
    is the answer, but at 0.5 it outweighs the question's other words."""
    fits: float = 0.3
    """When the unit's shape fits the question's kind (a number for a value question, a
    command, code or an option's definition for "how do I", "because"/"so" for "why", a
    no/not/only for yes/no); 0.852 / 0.561 at 0, the weight that counts most."""
    kinds: tuple[tuple[UnitKind, float], ...] = (
        ("sentence", 0.0),
        ("item", 0.0),
        ("row", 0.05),
        ("code", -0.1),
        ("lead", 0.05),
    )
    """Added by the unit's kind: a table row is usually the exact fact asked for, and code
    on its own, without what it does, rarely is unless it was asked for (``fits``).
    Small: 0.870 / 0.634 without them; they order near-ties."""
    source_rank: float = 0.03
    """Taken off per rank of the unit's source below the first: retrieval's order is
    evidence too; 0.889 / 0.610 at 0."""
    min_relative: float = 0.6
    """A unit must score at least this fraction of the best one to be quoted beside it.
    At 0.7 answers are shorter (F1 0.284 / 0.172) and hold fewer facts (0.852 / 0.585)."""
    duplicate_cosine: float = 0.92
    """Above this cosine to a chosen unit, a unit repeats it (chunks overlap)."""
    opening: float = 0.7
    """The first source's opening line (``_opening``) is quoted only when its cosine to the
    question is at least this fraction of the best quoted unit's. On git's manual 27 of
    41 answerable questions' first sources have one; quoted always, "git - the stupid
    content tracker" and "gitfaq - Frequently asked questions" led answers they do not
    help. 0.7 keeps 8 (git-shortlog for "summarise commits per author", git-switch for
    "create a branch and switch to it"); fact recall is 0.707 at 0, 0.5, 0.6 and 0.7,
    F1 0.166 / 0.168 / 0.169 / 0.170. The handbook has no opening."""

    def kind(self, kind: UnitKind) -> float:
        return dict(self.kinds).get(kind, 0.0)


class _Candidate(NamedTuple):
    source: int  # 0-based index into ``sources``
    unit: AnswerUnit
    text: str
    row: int  # into the candidate matrix
    context: str  # what the words are matched in: the text, after its header for a row


class ExtractiveAnswerer:
    """A ``ChatModel`` that streams the best answer units verbatim, each cited."""

    name = "extractive"

    def __init__(
        self,
        embedder: Embedder,
        max_sentences: int = 4,
        max_sources: int = 3,
        *,
        units: UnitSource | None = None,
        weights: Weights | None = None,
    ) -> None:
        self.embedder = embedder
        self.max_sentences = max_sentences
        """Most units quoted (the setting keeps its name from when units were sentences)."""
        self.max_sources = max_sources
        self.units = units
        self.weights = weights or Weights()

    @property
    def prompt_version(self) -> str:
        """No prompt: the selection rules are versioned instead (3: answer units and
        measured features; 4: no unit cut inside brackets or quotes; 5: a definition
        quoted after its term, prose with its white space collapsed; 6: the first
        source's opening line first, a pointer with the sentence it follows; 7: a
        lower-case sentence is a fragment only when it opens the chunk; 8: a lead-in over
        a fenced block is quotable; 9: a marker after a closing fence goes below it), with
        a digest of the weights and the unit splitter, so a cached answer chosen under
        other rules is never replayed."""
        rules = repr((self.weights, SPLITTER)).encode()
        return f"extractive-9-{hashlib.sha256(rules).hexdigest()[:8]}"

    async def stream(self, question: str, sources: Sequence[Hit]) -> AsyncGenerator[str, None]:
        """Units in (source rank, position) order, each followed by `` [n]``; for a
        question that asks what to use or what something is, the first source's
        document's opening line before them (``_opening``)."""
        ranked = [hit for hit in sources if not hit.opening]
        hits = ranked[: self.max_sources]
        if not hits or not question.strip() or self.max_sentences < 1:
            return
        opening = _opening(question, sources, hits[0])
        units = await self._units(hits if opening is None else [*hits, opening.hit])
        candidates, vectors = _candidates(hits, units[: len(hits)], question)
        if not candidates:
            return  # nothing quotable: the question need not be embedded either
        query = await self.embedder.embed([question], "query")
        cosines = vectors @ query[0]
        scores = self._scores(question, candidates, cosines)
        chosen = self._choose(scores, vectors, candidates)
        chosen += _pointers(chosen, candidates, hits)
        numbers = [n for n, hit in enumerate(sources, start=1) if not hit.opening]
        headers: set[tuple[int, tuple[int, int]]] = set()
        previous: _Candidate | None = None
        separator = ""
        if opening is not None and chosen:
            # As relevant as a unit quoted beside the best must be, on the cosine alone.
            best = max(float(cosines[c.row]) for c in chosen)
            said = any(_flat(opening.line) in _flat(c.text) for c in chosen)  # a twin's
            vector = opening.vector(units[-1])
            near = vector is not None and float(vector @ query[0]) >= self.weights.opening * best
            if near and not said:
                yield f"{opening.line} [{opening.n}]"
                separator = "\n"
        for candidate in sorted(chosen, key=lambda c: (c.source, c.unit.start)):
            text, marker = hits[candidate.source].text, f" [{numbers[candidate.source]}]"
            if previous is not None:
                separator = _separator(previous, candidate)
            header = candidate.unit.header
            if header is not None and (candidate.source, header) not in headers:
                # A row means little without its header, a definition without its term;
                # both are quoted, each cited.
                headers.add((candidate.source, header))
                yield f"{separator}{_flat(text[header[0] : header[1]])}{marker}"
                separator = "\n"
            quote = candidate.text if candidate.unit.kind in _AS_WRITTEN else _flat(candidate.text)
            if FENCE_LINES.fullmatch(quote.rsplit("\n", 1)[-1]):
                # A closing fence stands alone on its line (CommonMark): "``` [1]" would
                # leave the block open and the rest of the answer in it.
                yield f"{separator}{quote}\n{marker.lstrip()}"
            else:
                yield f"{separator}{quote}{marker}"
            previous = candidate

    async def _units(self, hits: list[Hit]) -> list[Units]:
        stored = await self.units.load([h.chunk_id for h in hits]) if self.units else {}
        missing = [h.text for h in hits if h.chunk_id not in stored]
        computed = iter(await embed_units(self.embedder, missing) if missing else [])
        return [stored[h.chunk_id] if h.chunk_id in stored else next(computed) for h in hits]

    def _scores(
        self, question: str, candidates: list[_Candidate], cosines: np.ndarray
    ) -> list[float]:
        w = self.weights
        asked = _content(question)
        identifiers = _identifiers(question)
        kind = question_kind(question)
        scores = []
        for candidate, cosine in zip(candidates, cosines.tolist(), strict=True):
            # A row is read with its header: "| `keyword_weight` | Effect |" names the
            # setting its rows only give values for.
            text = candidate.context
            score = cosine + w.kind(candidate.unit.kind) - w.source_rank * candidate.source
            if asked:
                score += w.overlap * len(asked & _content(text)) / len(asked)
            if identifiers:
                lowered = text.lower()
                score += w.identifier * sum(i in lowered for i in identifiers) / len(identifiers)
            if fits(kind, candidate.unit.kind, text):
                score += w.fits
            scores.append(score)
        return scores

    def _choose(
        self, scores: list[float], vectors: np.ndarray, candidates: list[_Candidate]
    ) -> list[_Candidate]:
        w = self.weights
        # Stable: equal scores keep (source rank, position) order, so output is deterministic.
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        best = scores[order[0]]
        floor = best * w.min_relative if best > 0 else best
        chosen: list[_Candidate] = []
        seen: set[str] = set()
        leads = [c for c in candidates if c.unit.kind == "lead"]
        for index in order:
            if len(chosen) == self.max_sentences or scores[index] < floor:
                break
            # A command or an item is quoted with the lead-in that introduces it: the
            # instruction and its command, never the command alone.
            inner = candidates[index]
            candidate = next((c for c in leads if _within(inner, c)), inner)
            # Twins (an HTML page and its source) differ in a fence's language name.
            key = _flat(FENCE_LINES.sub("", candidate.text)).lower()
            if key in seen or any(_overlaps(candidate, c) for c in chosen):
                continue
            if any(
                float(vectors[candidate.row] @ vectors[c.row]) >= w.duplicate_cosine for c in chosen
            ):
                continue
            seen.add(key)
            chosen.append(candidate)
        return chosen


_NAMES_WHAT: frozenset[QuestionKind] = frozenset({"howto", "definition", "other"})


_POINTER = re.compile(r"See\b")
POINTER_WORDS = 20


def _pointers(
    chosen: list[_Candidate], candidates: list[_Candidate], hits: list[Hit]
) -> list[_Candidate]:
    """The pointers that directly follow chosen sentences: "By default, Git will refuse to
    run when the repository is owned by someone other than the user running the command."
    is followed by "See the entry for safe.directory in git-config(1).", which says where
    the way out is. A short "See ..." sentence rides with the one before it, as a term
    with its definition (not counted in ``max_sentences``). On git's manual eight are
    quoted, fact recall 0.683 -> 0.707 (g41), F1 0.171 -> 0.170; the handbook's answers
    are unchanged."""
    found: list[_Candidate] = []
    for before in chosen:
        if before.unit.kind != "sentence":
            continue
        after = next(
            (
                c
                for c in candidates
                if c.source == before.source and c.unit.start >= before.unit.end
            ),
            None,
        )
        if (
            after is not None
            and after.unit.kind == "sentence"
            and not hits[before.source].text[before.unit.end : after.unit.start].strip()
            and _POINTER.match(after.text)
            and len(after.text.split()) <= POINTER_WORDS
            and not any(_overlaps(after, c) for c in chosen + found)
        ):
            found.append(after)
    return found


class _Opening(NamedTuple):
    n: int  # its number among the sources
    hit: Hit
    line: str

    def vector(self, units: Units) -> np.ndarray | None:
        """The line's unit vector among the chunk's units (None if it is no unit)."""
        text = self.hit.text
        for unit, vector in zip(units.units, units.vectors, strict=True):
            if _flat(text[unit.start : unit.end]) == _flat(self.line):
                return np.asarray(vector)
        return None


def _opening(question: str, sources: Sequence[Hit], first: Hit) -> _Opening | None:
    """The first source's document's opening line, when the question asks what to use or
    what something is.

    "How do I summarise commits per author?" was answered with "-s, --summary" and its
    definition, quoted from git-shortlog's OPTIONS, never naming ``git shortlog``; "What
    does git rerere do?" with its SYNOPSIS. The NAME line says both ("git-rerere - Reuse
    recorded resolution of conflicted merges"). Not for a value, why or yes/no question,
    which the line does not answer.
    """
    if question_kind(question) not in _NAMES_WHAT:
        return None
    for n, hit in enumerate(sources, start=1):
        if hit.opening and hit.document_id == first.document_id:
            line = opening_line(hit.text, hit.heading_path)
            return None if line is None else _Opening(n, hit, line)
    return None


def _candidates(
    hits: list[Hit], units: list[Units], question: str
) -> tuple[list[_Candidate], np.ndarray]:
    candidates: list[_Candidate] = []
    rows: list[np.ndarray] = []
    asked = _flat(question.lower()).rstrip("?")
    for source, (hit, found) in enumerate(zip(hits, units, strict=True)):
        headings = {_flat(h).lower() for h in hit.heading_path}
        first = len(hit.text) - len(hit.text.lstrip())  # where the chunk's text begins
        for unit, vector in zip(found.units, found.vectors, strict=True):
            text = hit.text[unit.start : unit.end]
            if not _quotable(text, unit, unit.start <= first, headings, asked):
                continue
            header = hit.text[unit.header[0] : unit.header[1]] + "\n" if unit.header else ""
            candidates.append(_Candidate(source, unit, text, len(rows), header + text))
            rows.append(vector)
    matrix = np.vstack(rows) if rows else np.zeros((0, 1), dtype=np.float32)
    return candidates, matrix


def _quotable(text: str, unit: AnswerUnit, opens: bool, headings: set[str], asked: str) -> bool:
    """Whether a unit can carry an answer: not a heading, a fragment, a question or an echo.

    FAQ entries and example requests repeat questions verbatim; quoting them back scores
    high and answers nothing, and so does a unit that quotes a question. A short unit
    without closing punctuation is a title, and so is one of fewer than three content
    words, unless it is code or a table row. A chunk cut mid-sentence starts with a
    fragment: a sentence that ``opens`` the chunk (nothing before it) in lower case; after
    the tail of a code block the chunk's overlap reached into, a paragraph may start with
    a lower-case identifier ("grounded is false when ..."). A unit with an unclosed
    bracket or code span was cut too.
    """
    flat = _flat(text).lower()
    if flat in headings:
        return False
    bare = text.strip().rstrip("*_`")
    if unit.kind not in ("code", "row") and (bare.endswith("?") or _QUOTED_QUESTION.search(text)):
        return False
    # Only a whole question repeated is an echo; a keyword query ("3036") is in its answer.
    if len(asked.split()) >= 3 and asked in flat:
        return False
    if opens and text[:1].islower() and unit.kind == "sentence":
        return False
    if unit.kind != "code" and (not _closed(text) or _open_code_span(text)):
        return False
    count = len(word_pieces(text))
    if unit.kind in ("code", "row", "lead"):
        return count >= 2
    # Fewer than three content words is a run-in heading ("Taking a backup."), not an answer.
    return len(_content(text)) >= 3 and not (count <= 8 and bare[-1:].isalnum())


def _open_code_span(text: str) -> bool:
    """Whether a code span (`` `...` ``) opens in ``text`` and does not close: the unit was
    cut inside one. A fence line is no span: a lead-in's unit ends inside the fenced block
    it introduces, before the closing fence ("To deactivate a virtual environment, type:"
    over "```" and "deactivate"), and counting its three backticks refused every such
    lead-in, so a how-to answer quoted the command without the instruction, or nothing."""
    return FENCE_LINES.sub("", text).count("`") % 2 == 1


def _closed(text: str) -> bool:
    """Whether every bracket and double quote opened in ``text`` is closed in it, in order:
    "a) b (c" has as many of each bracket and is still cut inside the last one."""
    stack: list[str] = []
    for ch in text:
        if ch in _OPENERS:
            stack.append(_OPENERS[ch])
        elif ch in _CLOSING:
            if not stack or stack.pop() != ch:
                return False
        elif ch == '"':
            if stack and stack[-1] == '"':
                stack.pop()
            else:
                stack.append('"')
    return not stack


_OPENERS = {"(": ")", "[": "]", "{": "}", "“": "”"}
_CLOSING = frozenset(_OPENERS.values())

# A question in quotes is an example of asking ("What is the default port and how do I
# change the host?" is two questions): about the question, not an answer to it.
_QUOTED_QUESTION = re.compile(r"\?[\"”'’]")


def _within(inner: _Candidate, outer: _Candidate) -> bool:
    return (
        inner.source == outer.source
        and inner is not outer
        and outer.unit.start <= inner.unit.start
        and inner.unit.end <= outer.unit.end
    )


def _overlaps(a: _Candidate, b: _Candidate) -> bool:
    """Whether two units of one source share text (a lead-in block holds its items)."""
    return a.source == b.source and a.unit.start < b.unit.end and b.unit.start < a.unit.end


def _content(text: str) -> set[str]:
    """Content words, stemmed as the evidence gate does (the first 5 letters) after a
    trailing "s" is taken off: "embed" meets "embedding", "cost" "costs"."""
    return {w.removesuffix("s")[:STEM] for w in word_pieces(text) if w not in STOP_WORDS}


def _identifiers(question: str) -> set[str]:
    """Words of the question that name something exact (``3036``, ``pdf_timeout_s``,
    ``config.toml``, ``X-Accel-Buffering``), lower-cased: retrieval's own definition
    (``rag.retrieval.fusion.identifiers``)."""
    return {w.lower() for w in identifiers(question)}


_VALUE_Q = re.compile(
    r"\b(?:default|defaults|how (?:much|many|long|often|big|large|fast)|max(?:imum)?|"
    r"min(?:imum)?|limit|largest|highest|lowest|smallest|biggest|longest|value of|"
    r"costs?|price|roughly|approximately|when does|which version)\b"
)
_HOWTO_Q = re.compile(
    r"\b(?:how (?:do|can|should|would) (?:i|we|you)|how to|steps? to|what command|"
    r"how is .* (?:set|changed|done))\b"
)
_YESNO_Q = re.compile(r"^(?:can|could|does|do|did|is|are|should|will|would|may|has|have)\b")
_DEFINITION_Q = re.compile(r"^(?:what(?:'s| is| are| does)|define)\b|\bmean(?:s|ing)?\b")


def question_kind(question: str) -> QuestionKind:
    """What kind of answer the question asks for, from its wording."""
    q = _flat(question.lower())
    if re.match(r"^why\b", q) or re.search(r"\bwhy\b", q):
        return "why"
    if _HOWTO_Q.search(q):
        return "howto"
    if _VALUE_Q.search(q):
        return "value"
    if _YESNO_Q.match(q):
        return "yesno"
    if _DEFINITION_Q.search(q):
        return "definition"
    return "other"


_NUMBER = re.compile(r"\d")
# A command in a code span, an option in one, an instruction verb, or an option's own
# definition (its term, ``-n, --dry-run``, starts the unit's context).
_COMMANDISH = re.compile(
    r"`[^`]*[\w-]+ [^`]*`|`--?[\w-]+`|^\s*(?:run|use|set|pass|add)\b|^--?[a-z]", re.I
)
_REASON = re.compile(
    r"\b(?:because|so that|so|since|otherwise|which is why|to avoid|would|reason)\b", re.I
)
_NEGATION = re.compile(r"\b(?:no|not|never|only|cannot|can't|yes)\b", re.I)
_COPULA = re.compile(r"\b(?:is|are|means|mean|stands for)\b", re.I)


def fits(kind: QuestionKind, unit: UnitKind, text: str) -> bool:
    """Whether a unit has the shape of an answer to this kind of question."""
    if kind == "value":
        return bool(_NUMBER.search(text))
    if kind == "howto":
        return unit in ("code", "lead") or bool(_COMMANDISH.search(text))
    if kind == "why":
        return bool(_REASON.search(text))
    if kind == "yesno":
        return bool(_NEGATION.search(text))
    if kind == "definition":
        return bool(_COPULA.search(text))
    return False


_AS_WRITTEN: frozenset[UnitKind] = frozenset({"code", "lead", "row"})
"""Units quoted with their line breaks and indentation: code, and what holds code or a
table. Prose is quoted with its white space collapsed: a sentence wrapped in the source
("stores in a file\n    in your home directory") reads as one line. Its citation still
finds it in the source (``rag.answer.citations`` compares text up to white space)."""


def _flat(text: str) -> str:
    return " ".join(text.split())


def _separator(previous: _Candidate, current: _Candidate) -> str:
    # Items, rows and code read as lines; prose reads as a paragraph, unless it is
    # another definition's (its term starts a line).
    if previous.unit.kind != "sentence" or current.unit.kind != "sentence":
        return "\n"
    if previous.source != current.source or previous.unit.header != current.unit.header:
        return "\n"
    return " "
