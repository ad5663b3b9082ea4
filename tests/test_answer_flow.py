"""One answer as events (``answer_events``) and its citation check (``extract_citations``).

A scripted chat model stands in for any provider: it yields the pieces it is given and
raises where told, so every path of the flow runs without a model or a database.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from fakes import Pause, ScriptedChat, hit

from rag.answer.chain import FallbackChain
from rag.answer.citations import extract_citations
from rag.answer.flow import NOT_COVERED, answer_events, numbered_sources
from rag.domain import (
    AnswerEvent,
    Citation,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    Hit,
    SourcesEvent,
    Usage,
    new_trace_id,
)
from rag.errors import ModelError, RagError
from rag.retrieval.retriever import Retrieval

ALPHA = "Alpha is the first letter. It comes before beta."
GAMMA = "Gamma rays are high energy light. They come from nuclei."


HITS = [hit(1, ALPHA, source="docs/1.md"), hit(2, GAMMA, source="docs/2.md", page_start=4)]


def retrieval(
    hits: Sequence[Hit] = HITS, *, grounded: bool = True, seconds: float = 0.0123
) -> Retrieval:
    best = max((h.relevance for h in hits), default=None)
    return Retrieval(
        hits=list(hits), grounded=grounded, best_relevance=best, coverage=1.0, seconds=seconds
    )


async def run(
    chat: ScriptedChat, found: Retrieval | None = None, began: float | None = None
) -> list[AnswerEvent]:
    start = time.perf_counter() if began is None else began
    found = found or retrieval()
    chain = FallbackChain([chat])
    events = answer_events("What is alpha?", found, chain, start, trace_id=new_trace_id())
    return [e async for e in events]


def done_of(events: list[AnswerEvent]) -> DoneEvent:
    assert isinstance(events[-1], DoneEvent), events
    assert not any(isinstance(e, DoneEvent) for e in events[:-1])
    return events[-1]


# answer_events


async def test_sources_then_deltas_then_done() -> None:
    chat = ScriptedChat("Alpha is the first letter.", " [1]", "")
    events = await run(chat)
    assert [type(e) for e in events] == [SourcesEvent, DeltaEvent, DeltaEvent, DoneEvent]
    sources = events[0]
    assert isinstance(sources, SourcesEvent)
    assert sources.sources == numbered_sources(HITS)
    assert [(s.n, s.chunk_id, s.page) for s in sources.sources] == [(1, "c1", None), (2, "c2", 4)]
    assert [e.text for e in events if isinstance(e, DeltaEvent)] == [
        "Alpha is the first letter.",
        " [1]",
    ]  # empty pieces are not sent
    done = done_of(events)
    assert done.answer == "Alpha is the first letter. [1]"
    assert done.citations == (
        Citation(n=1, chunk_id="c1", document="docs/1.md", page=None, quote=ALPHA.split(" It")[0]),
    )
    assert done.grounded is True
    assert done.provider == "scripted"
    assert done.cached is False
    assert chat.calls == [("What is alpha?", ["c1", "c2"])]
    assert chat.finished


async def test_usage_is_zero_on_a_local_answer() -> None:
    done = done_of(await run(ScriptedChat("Alpha is the first letter. [1]")))
    assert done.usage == Usage(neurons=0.0, usd=0.0, input_tokens=0, output_tokens=0)


async def test_latency_has_retrieve_first_token_and_total() -> None:
    began = time.perf_counter() - 0.05  # the request arrived 50 ms ago
    chat = ScriptedChat("Alpha is the first letter.", Pause(0.05), " [1]")
    done = done_of(await run(chat, retrieval(seconds=0.0123), began))
    latency = done.latency_ms
    assert latency.retrieve == 12.3
    assert latency.first_token is not None
    assert 50 <= latency.first_token < latency.total
    assert latency.total - latency.first_token >= 45  # the pause came after the first token


async def test_each_answer_gets_its_own_trace_id() -> None:
    first = done_of(await run(ScriptedChat("Alpha. [1]")))
    second = done_of(await run(ScriptedChat("Alpha. [1]")))
    assert len(first.trace_id) == 32 and int(first.trace_id, 16) >= 0
    assert first.trace_id != second.trace_id


async def test_markers_out_of_range_are_dropped_never_invented() -> None:
    chat = ScriptedChat("Alpha is the first letter. [1] Delta is fourth. [3] Zero. [0]")
    done = done_of(await run(chat))
    assert [c.n for c in done.citations] == [1]
    assert done.grounded is True
    assert done.answer.endswith("[0]")  # the text is the model's; only citations are checked


async def test_an_answer_whose_only_markers_name_no_source_is_not_grounded() -> None:
    done = done_of(await run(ScriptedChat("Beta is second. [5]")))
    assert done.citations == ()
    assert done.grounded is False


async def test_an_answer_without_markers_is_not_grounded() -> None:
    done = done_of(await run(ScriptedChat("Alpha is the first letter.")))
    assert done.citations == ()
    assert done.grounded is False


async def test_quote_is_kept_only_when_verbatim_in_the_cited_source() -> None:
    chat = ScriptedChat(
        "Gamma rays are high energy light. [2] ",
        "Alpha is the last letter. [1] ",
        "Gamma rays are high energy light. [1]",
    )
    done = done_of(await run(chat))
    assert [(c.n, c.chunk_id, c.page, c.quote) for c in done.citations] == [
        (2, "c2", 4, "Gamma rays are high energy light."),
        (1, "c1", None, ""),  # not what source 1 says: the citation stays, the quote goes
        (1, "c1", None, ""),  # true, but of source 2, not of the source it cites
    ]
    assert done.grounded is True


async def test_empty_model_output_says_the_documents_do_not_cover_it() -> None:
    for chat in (ScriptedChat(), ScriptedChat("", "")):
        events = await run(chat)
        assert [type(e) for e in events] == [SourcesEvent, DeltaEvent, DoneEvent]
        assert events[1] == DeltaEvent(NOT_COVERED)
        done = done_of(events)
        assert done.answer == NOT_COVERED
        assert done.citations == ()
        assert done.grounded is False
        assert done.latency_ms.first_token is not None
        assert done.latency_ms.first_token <= done.latency_ms.total


async def test_whitespace_only_model_output_says_the_documents_do_not_cover_it() -> None:
    done = done_of(await run(ScriptedChat(" ", "\n")))
    assert done.answer == NOT_COVERED


async def test_ungrounded_retrieval_never_calls_the_model() -> None:
    chat = ScriptedChat("Alpha is the first letter. [1]")
    events = await run(chat, retrieval(grounded=False))
    assert events[:2] == [SourcesEvent(()), DeltaEvent(NOT_COVERED)]
    done = done_of(events)
    assert (done.answer, done.citations, done.grounded) == (NOT_COVERED, (), False)
    assert done.provider == "scripted"
    assert done.latency_ms.first_token is not None
    assert chat.calls == []


async def test_nothing_retrieved_is_not_covered() -> None:
    events = await run(ScriptedChat("Alpha. [1]"), retrieval([], grounded=False))
    assert events[0] == SourcesEvent(())
    assert done_of(events).grounded is False


async def test_rag_error_mid_stream_is_an_error_event_and_no_done() -> None:
    chat = ScriptedChat("Alpha is", ModelError("the model went away"), " never sent")
    events = await run(chat)
    assert [type(e) for e in events] == [SourcesEvent, DeltaEvent, ErrorEvent]
    assert events[-1] == ErrorEvent(code="model", message="the model went away", retryable=True)
    assert not chat.finished


async def test_rag_error_before_the_first_piece_is_an_error_event() -> None:
    events = await run(ScriptedChat(RagError("budget spent")))
    assert [type(e) for e in events] == [SourcesEvent, ErrorEvent]
    # Every answer runs through the fallback chain, which names the provider that failed.
    assert events[-1] == ErrorEvent(
        code="no_provider",
        message="no chat provider could answer: scripted: failed: budget spent",
        retryable=False,
    )


async def test_other_exceptions_are_left_to_the_caller() -> None:
    # The web layer turns them into a generic error event and logs them (test_web.py).
    with pytest.raises(KeyError):
        await run(ScriptedChat("Alpha", KeyError("bug")))


def test_sources_snippet_is_one_short_line() -> None:
    long = hit(1, "word\n" * 300)
    (source,) = numbered_sources([long])
    assert "\n" not in source.snippet
    assert len(source.snippet) <= 241 and source.snippet.endswith("word…")
    assert source.score == round(long.relevance, 4)
    assert source.title == "Doc 1" and source.document == "doc1.md"


# extract_citations


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("", []),
        ("No markers at all.", []),
        ("Alpha is the first letter. [1]", [(1, "Alpha is the first letter.")]),
        ("Alpha is the first letter.[1]", [(1, "Alpha is the first letter.")]),
        (
            "It comes before beta. [1] They come from nuclei. [2]",
            [
                (1, "It comes before beta."),
                (2, "They come from nuclei."),
            ],
        ),
        # Adjacent markers: the text belongs to the first; the second gets no quote.
        ("Alpha is the first letter. [1][2]", [(1, "Alpha is the first letter."), (2, "")]),
        # Out of range: dropped, and its text is not passed on to the next marker.
        ("Made up. [9] Alpha is the first letter. [1]", [(1, "Alpha is the first letter.")]),
        ("Zero. [0] Negative. [-1]", []),
        ("Four digits [1000] are not a marker.", []),
        # A changed spacing is still the quote, as the source writes it; a paraphrase,
        # even in the case of one letter, is not.
        ("Alpha is  the first letter. [1]", [(1, "Alpha is the first letter.")]),
        ("alpha is the first letter. [1]", [(1, "")]),
    ],
)
def test_extract_citations(answer: str, expected: list[tuple[int, str]]) -> None:
    citations = extract_citations(answer, HITS)
    assert [(c.n, c.quote) for c in citations] == expected
    for citation in citations:
        source = HITS[citation.n - 1]
        assert (citation.chunk_id, citation.document, citation.page) == (
            source.chunk_id,
            source.source,
            source.page_start,
        )
        assert citation.quote in source.text


def test_a_bracketed_number_inside_a_quote_is_text_not_a_marker() -> None:
    # Man page references ("git-show[1]") and footnote marks are part of the quote: the
    # quote runs to the marker whose source holds it, and cites nothing else.
    manual = "Examine the commit with git-show[1], then mail the author."
    sources = [hit(1, ALPHA), hit(2, manual)]
    answer = f"Alpha is the first letter. [1]\n{manual} [2]"
    citations = extract_citations(answer, sources)
    assert [(c.n, c.quote) for c in citations] == [
        (1, "Alpha is the first letter."),
        (2, manual),
    ]
    # A [1] whose text no later marker's source holds is still a marker, unverified.
    assert [(c.n, c.quote) for c in extract_citations("See git-show[1] here. [2]", sources)] == [
        (1, ""),
        (2, ""),
    ]


def test_a_quote_that_joins_wrapped_lines_cites_the_source_s_own_text() -> None:
    # The answer collapses white space; the citation's quote is the text as the source
    # has it, so the passage view finds and highlights it there.
    wrapped = "Overrides the `user.email` and\n    `committer.email` configuration settings."
    sources = [hit(1, f"GIT_COMMITTER_EMAIL\n    {wrapped}\n")]
    answer = "Overrides the `user.email` and `committer.email` configuration settings. [1]"
    assert [(c.n, c.quote) for c in extract_citations(answer, sources)] == [(1, wrapped)]
    # Words, not white space, decide: another word anywhere and the quote is unverified.
    changed = "Overrides the `user.email` or `committer.email` configuration settings. [1]"
    assert [(c.n, c.quote) for c in extract_citations(changed, sources)] == [(1, "")]


def test_extract_citations_with_no_sources_invents_nothing() -> None:
    assert extract_citations("Alpha is the first letter. [1]", []) == ()
