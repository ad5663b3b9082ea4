"""Words, stop words and sentences: the text rules retrieval, the evidence gate, the
condensation of follow-ups and the extractive answerer share.

Three ways to cut words, each for a reason:

* ``words``: words and identifiers kept whole (``RAG_RETRIEVAL__TOP_K``, ``v1.2``,
  ``/v1/ask``, ``don't``), in their original spelling. A follow-up's topic is carried
  over in these (``rag.answer.condense``).
* ``word_pieces``: runs of letters and digits, lower-cased; ``pdf_timeout_s`` is
  ``pdf``, ``timeout``, ``s``. What the evidence gate and the extractive answerer
  compare, since a source may write an identifier's parts apart.
* ``search_terms``: what keyword search looks up, joined by the punctuation of
  identifiers, file names and versions (``config.toml``, ``top_k``, ``E-1234``); FTS5
  reads each quoted term as a phrase of its parts (``rag.backends.local.keyword``).

Two stop-word tiers: ``FUNCTION_WORDS`` would match nearly every chunk, so keyword search
leaves them out; ``STOP_WORDS`` adds the words that say how a question is asked, not what
it is about ("use", "show", "mean", "thanks"), and is what "content words" leave out.

Sentence splitting (``split_sentences``) returns spans, so every unit is an exact
substring. Headings, list items, table rows and code lines are units of their own and
never merge with the prose around them; wrapped prose lines join into one paragraph.
Inside a paragraph a sentence ends at ``.``, ``!``, ``?`` or ``…`` followed by white space
and a word that does not start in lower case, unless the dot belongs to an abbreviation
("e.g.", "Dr.", "Fig. 3") or an initial ("J. Smith"). Dots without white space after them
(1.5, config.toml, v2.0.1) never end a sentence.
"""

from __future__ import annotations

import re
from typing import Final, Literal, NamedTuple

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
"""C0 controls and DEL: never part of a name or a path a person wrote."""

# A letter or digit, then word characters and the joiners of identifiers and contractions,
# ending on a word character.
_WORD = re.compile(r"[^\W_](?:[\w.\-/']*\w)?")
_PIECE = re.compile(r"[^\W_]+")
_TERM = re.compile(r"\w+(?:[.\-_/:@]\w+)*")


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


FUNCTION_WORDS: Final = _wordset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only
    or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under
    until up very was we were what when where which while who whom why will with would you
    your yours yourself yourselves tell explain describe please
    """
)
"""Common English function words: OR-ed into a keyword query, they would match nearly
every chunk and drown the rare terms BM25 is good at."""

STOP_WORDS: Final = FUNCTION_WORDS | _wordset(
    """
    also anything aren't can't cannot couldn't didn't doesn't don't else even ever every
    get gets getting got hadn't hasn't haven't hello hey hi however i'd i'm i've isn't
    it's let let's like may mean means meant might mine much must need needs ok okay one
    ones ought rather really say says shall shouldn't show something still thank thanks
    that's there's they're thing things though thus upon us use using via wasn't way we're
    weren't what's whatever where's whether who's whose within without won't wouldn't yes
    yet you're
    """
)
"""Words that carry no topic: function words, contractions, and the verbs and
pleasantries of asking ("show", "mean", "use", "thanks")."""


def words(text: str) -> list[str]:
    """Words and identifiers (``RAG_RETRIEVAL__TOP_K``, ``v1.2``, ``/v1/ask``) in order."""
    return _WORD.findall(text.replace("\u2019", "'"))


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry its topic: stop words and single letters dropped."""
    return [w for w in words(text) if (len(w) > 1 or w.isdigit()) and w.lower() not in STOP_WORDS]


def word_pieces(text: str) -> list[str]:
    """Lower-cased runs of letters and digits, identifiers cut at their joiners."""
    return _PIECE.findall(text.lower())


def has_content_words(text: str, at_least: int) -> bool:
    """Whether ``text`` holds ``at_least`` distinct word pieces that are not stop words."""
    found: set[str] = set()
    for word in word_pieces(text):
        if word not in STOP_WORDS:
            found.add(word)
            if len(found) >= at_least:
                return True
    return False


def search_terms(text: str) -> list[str]:
    """Lower-cased keyword-search terms, identifiers whole, function words included."""
    return [m.group() for m in _TERM.finditer(text.lower())]


# Definition lists, as the AsciiDoc, rST and HTML loaders write them: term lines, then
# an indented body. The answerer's unit splitter and the local reranker read them alike.

TERM_CHARS: Final = 120
"""A term line is at most this long: longer unindented text is prose, not a term."""
TERM_LINES: Final = 6
"""At most this many term lines share one definition ("author.name" ... "committer.email")."""


# Sentences.

UnitKind = Literal["sentence", "item", "heading", "code"]


class Unit(NamedTuple):
    start: int
    end: int
    kind: UnitKind


_HEADING = re.compile(r"[ \t]{0,3}#{1,6}[ \t]+(?=\S)")
_ITEM = re.compile(r"[ \t]*(?:[-*+•▪‣◦–]|\(?\d{1,3}[.)]|\(?[a-z][)])[ \t]+(?=\S)")
_RULE = re.compile(r"[ \t]*(?:[-=*_~:|+ \t]{3,}|[-=*_]{2,})[ \t]*")
_FENCE = re.compile(r"[ \t]*(?:```|~~~)")
_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_INNER_DOTS = re.compile(r"(?:[a-z]\.)+[a-z]")  # e.g, i.e, u.s, a.m

# Always abbreviations: a capital letter after them starts a name, not a sentence.
_ABBREVIATIONS_TEXT = "mr mrs ms dr prof sr jr st vs cf viz al approx ca incl resp esp dept corp"
_ABBREVIATIONS = frozenset(_ABBREVIATIONS_TEXT.split())
# Abbreviations only before a number: "No. 5", "Fig. 3", "p. 12"; "No. The" ends a sentence.
_BEFORE_NUMBER_TEXT = "no nos fig figs eq eqs p pp vol sec ch art ref nr"
_BEFORE_NUMBER = frozenset(_BEFORE_NUMBER_TEXT.split())


def split_sentences(text: str) -> list[Unit]:
    """Units of ``text`` in order; ``text[u.start:u.end]`` is the unit, trimmed of white space."""
    units: list[Unit] = []
    paragraph: tuple[int, int] | None = None  # span of the prose lines seen so far
    item: tuple[int, int] | None = None  # a list item and its indented continuation
    in_code = False

    def flush() -> None:
        nonlocal paragraph, item
        if paragraph is not None:
            units.extend(_prose(text, *paragraph, "sentence"))
        if item is not None:
            units.extend(_prose(text, *item, "item"))
        paragraph = item = None

    for start, end in _lines(text):
        line = text[start:end]
        if _FENCE.match(line):
            flush()
            in_code = not in_code
            continue
        if in_code:
            units.extend(_trimmed(text, start, end, "code"))
            continue
        if not line.strip() or _RULE.fullmatch(line):
            flush()
            continue
        heading = _HEADING.match(line)
        bullet = _ITEM.match(line)
        if heading:
            flush()
            units.extend(_trimmed(text, start + heading.end(), end, "heading"))
        elif bullet:
            flush()
            item = (start + bullet.end(), end)
        elif line.lstrip().startswith("|"):
            flush()
            units.extend(_trimmed(text, start, end, "item"))
        elif item is not None and line[:1] in " \t":
            item = (item[0], end)
        else:
            if item is not None:
                flush()
            paragraph = (start, end) if paragraph is None else (paragraph[0], end)
    flush()
    return units


def _lines(text: str) -> list[tuple[int, int]]:
    spans = []
    position = 0
    for line in text.splitlines(keepends=True):
        spans.append((position, position + len(line.rstrip("\r\n"))))
        position += len(line)
    return spans


def _prose(text: str, start: int, end: int, kind: UnitKind) -> list[Unit]:
    units = []
    cut = start
    for match in _END.finditer(text, start, end):
        if _is_boundary(text, match, end):
            units.extend(_trimmed(text, cut, match.end(), kind))
            cut = match.end()
    units.extend(_trimmed(text, cut, end, kind))
    return units


def _is_boundary(text: str, match: re.Match[str], end: int) -> bool:
    following = text[match.end() : end].lstrip()
    if not following:
        return False  # the paragraph's end closes the last sentence anyway
    if following[0].islower():
        return False
    if match.group()[0] != ".":
        return True  # ! ? … are not used in abbreviations
    # Only the last few characters matter; searching the whole text would be quadratic.
    before = text[max(0, match.start() - 32) : match.start()]
    word = before.split()[-1] if before and not before[-1].isspace() else ""
    word = word.lower().lstrip("([\"'“‘")
    if len(word) == 1 and word.isalpha():
        return False  # an initial: "J. Smith"
    if word in _ABBREVIATIONS or _INNER_DOTS.fullmatch(word):
        return False
    return not (word in _BEFORE_NUMBER and following[0].isdigit())


def _trimmed(text: str, start: int, end: int, kind: UnitKind) -> list[Unit]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if not any(ch.isalnum() for ch in text[start:end]):
        return []
    return [Unit(start, end, kind)]
