"""Follow-up questions made standalone before retrieval: the local condensation rule.

"What about the overlap?" after "What is the default chunk size?" retrieves nothing
useful on its own: the topic lives in the earlier turn. ``condense`` carries it over
with a small, deterministic rule instead of a model call, so it costs nothing, runs
offline and behaves the same in tests, evaluation replays and production:

1. A question with no history is returned unchanged.
2. It *needs context* when any of these holds:
   - it has no content word at all ("why?", "and then?");
   - it opens like a follow-up: "what about", "how about", "and", "also", "what if", ...;
   - its only content word is an ordinary word ("overlap?"); a lone identifier or
     number ("3036", "RAG_RETRIEVAL__TOP_K") is a complete query in itself;
   - it refers back ("it", "that", "they", "this", ...) and has at most
     ``SHORT_QUESTION`` content words, so a long, specific question that merely uses
     "that" as a conjunction is left alone.
3. Then the content words of the previous questions (stop words dropped, original
   spelling, first-seen order, those the question already has left out) are put in
   front: ``"default chunk size: What about the overlap?"``. It walks back through the
   turns while they were follow-ups themselves, so a chain of follow-ups keeps its topic.

Answers are deliberately not mined for terms: an extractive answer is whole source
sentences, and their words would pull retrieval towards what was already found
rather than towards what is now asked.

On the Cloudflare backend the chat model rewrites the follow-up instead
(``condense_with`` over a ``Condenser``: Workers AI's ``WorkersAIChat.condense``), and
only when this rule says a rewrite is needed, so a standalone question costs no extra
call. The rule stays the answer whenever the model cannot be used or gives nothing
usable: the neuron budget would be crossed, the call failed, or its reply is empty,
spans several lines or is too long (``accept_rewrite``). Condensation never fails a
question; each fallback is one log line, without the question's text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from rag.domain import Turn
from rag.errors import ModelError
from rag.ports import Condenser
from rag.text import content_words, words

log = logging.getLogger(__name__)

MAX_TURNS: Final = 3
"""Only the last turns count; older ones rarely carry the current topic."""

MAX_TERMS: Final = 8
"""Carried-over words at most, so the question stays the strongest signal."""

SHORT_QUESTION: Final = 4
"""A question with a back reference and at most this many content words is a follow-up."""

MAX_REWRITE_CHARS: Final = 300
"""A model rewrite longer than this is not a question any more (also: 3x the turn's text)."""

_QUOTES: Final = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
_LABEL = re.compile(r"^(?:standalone|rewritten)?\s*question\s*:\s*", re.IGNORECASE)


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


FOLLOW_UP_OPENERS: Final = (
    "what about",
    "how about",
    "what if",
    "and",
    "also",
    "same for",
    "same with",
    "why",
    "why not",
    "then",
    "so",
    "but",
    "or",
    "more on",
    "tell me more",
)

REFERENCES: Final = _wordset(
    "it its it's itself they them their theirs this that these those there here "
    "he she him her one ones such same former latter above previous"
)


def is_identifier(word: str) -> bool:
    """A code, number or config key: specific enough to be a query on its own."""
    return any(c.isdigit() or c in "_./-" for c in word) or word[1:] != word[1:].lower()


def needs_context(question: str) -> bool:
    """Whether ``question`` leans on an earlier turn (the rule in the module docstring)."""
    lowered = " ".join(w.lower() for w in words(question))
    content = content_words(question)
    if not content:
        return True
    if any(lowered == o or lowered.startswith(o + " ") for o in FOLLOW_UP_OPENERS):
        return True
    if len(content) == 1 and not is_identifier(content[0]):
        return True
    refers_back = any(w in REFERENCES for w in lowered.split())
    return refers_back and len(content) <= SHORT_QUESTION


def recent(history: Sequence[Turn] | None) -> list[Turn]:
    """The turns that count: the last ``MAX_TURNS``."""
    return list(history or ())[-MAX_TURNS:]


def is_follow_up(question: str, history: Sequence[Turn] | None) -> bool:
    """Whether ``question`` needs the earlier turns to be understood (rule steps 1-2)."""
    return bool(recent(history)) and needs_context(question.strip())


def condense(question: str, history: Sequence[Turn] | None) -> str:
    """``question`` made standalone for retrieval, or unchanged when it already is."""
    question = question.strip()
    turns = recent(history)
    if not turns or not needs_context(question):
        return question
    have = {w.lower() for w in content_words(question)}
    terms: list[str] = []
    for turn in reversed(turns):
        for word in content_words(turn.question):
            if word.lower() not in have:
                have.add(word.lower())
                terms.append(word)
        if not needs_context(turn.question):
            break  # this turn named its topic; older turns are about something else
    terms = terms[:MAX_TERMS]
    if not terms:
        return question
    return f"{' '.join(terms)}: {question}"


Refusal = Callable[[str, Sequence[Turn]], Awaitable[str | None]]
"""Why the model must not be called for this follow-up (the neuron budget), or None."""


def accept_rewrite(reply: str, question: str, history: Sequence[Turn]) -> str | None:
    """A model's rewrite, cleaned, or None when it is unusable.

    Surrounding whitespace, quotes and a "Standalone question:" label go; what is left
    must be one non-empty line of at most ``MAX_REWRITE_CHARS`` characters and at most
    three times the follow-up and the question before it together (it merges the two).
    """
    text = reply.strip()
    text = _LABEL.sub("", text, count=1).strip().strip(_QUOTES).strip()
    if not text or "\n" in text or "\r" in text:
        return None
    before = history[-1].question.strip() if history else ""
    if len(text) > min(MAX_REWRITE_CHARS, 3 * (len(question.strip()) + len(before))):
        return None
    return text


async def condense_with(
    model: Condenser | None,
    question: str,
    history: Sequence[Turn] | None,
    refusal: Refusal | None = None,
) -> str:
    """``question`` made standalone: by ``model`` when it needs it and can, else by the rule."""
    question = question.strip()
    turns = recent(history)
    local = condense(question, turns)
    if model is None or not is_follow_up(question, turns):
        return local
    why = await refusal(question, turns) if refusal is not None else None
    if why:
        log.info("follow-up condensed by the local rule, not %s: %s", model.name, why)
        return local
    try:
        reply = await model.condense(question, turns)
    except ModelError as exc:
        log.warning("follow-up condensed by the local rule, %s failed: %s", model.name, exc)
        return local
    rewrite = accept_rewrite(reply, question, turns)
    if rewrite is None:
        # Lengths only: question text stays out of the logs.
        log.warning(
            "follow-up condensed by the local rule: %s gave an unusable rewrite "
            "(%d characters, %d lines)",
            model.name,
            len(reply.strip()),
            len(reply.strip().splitlines()),
        )
        return local
    return rewrite
