"""The extractive answerer and its sentence splitter, on the deterministic fake embedder."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from fakes import FakeEmbedder, hit

from rag.backends.local.extractive import ExtractiveAnswerer, Weights, question_kind
from rag.backends.local.units import Units, embed_units
from rag.domain import Hit
from rag.text import split_sentences

MARKER = re.compile(r" \[(\d+)\]")

SOURCES = [
    """# Configuration

Settings live in config.toml, e.g. the number of sources. Set top_k to 8 to cite more
sources per answer. Version 1.5 changed the default top_k from 4 to 5.

- Environment variables override config.toml keys.
- Secrets are read from the environment only.""",
    """Cats sleep for most of the day. The top_k setting of the cat is unknown, i.e. nobody
asked. Dr. Smith studied cats in 2019.""",
    """Ingestion reads PDF, Markdown, text and HTML. Unchanged chunks are never re-embedded.
The answer cites its sources with numbered markers.""",
    """This fourth source is beyond max_sources and must never be quoted about top_k.""",
]


def hits(texts: list[str]) -> list[Hit]:
    return [hit(i, t, score=1.0, relevance=1.0) for i, t in enumerate(texts)]


async def answer(answerer: ExtractiveAnswerer, question: str, sources: list[Hit]) -> str:
    return "".join([piece async for piece in answerer.stream(question, sources)])


def flat(text: str) -> str:
    """``text`` with its white space collapsed: prose is quoted so, code as written."""
    return " ".join(text.split())


def quoted(text: str) -> list[tuple[str, int]]:
    """(sentence, n) pairs from an answer: the text before each marker."""
    pairs, previous = [], 0
    for match in MARKER.finditer(text):
        pairs.append((text[previous : match.start()].strip(), int(match.group(1))))
        previous = match.end()
    assert not text[previous:].strip(), "text after the last marker"
    return pairs


@pytest.mark.parametrize(
    "question",
    [
        "How do I change top_k in config.toml?",
        "What do cats do all day?",
        "Which formats does ingestion read?",
        "Where do secrets come from?",
        "something nobody wrote about",
    ],
)
async def test_every_sentence_is_verbatim_and_cited(question: str) -> None:
    sources = hits(SOURCES)
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=4, max_sources=3)
    text = await answer(answerer, question, sources)
    pairs = quoted(text)
    assert 1 <= len(pairs) <= 4
    for sentence, n in pairs:
        assert 1 <= n <= 3  # the fourth source is beyond max_sources
        assert sentence and flat(sentence) in flat(sources[n - 1].text)
    # Ordered by (source, position in source), so the answer reads in document order.
    positions = [(n, flat(sources[n - 1].text).index(flat(s))) for s, n in pairs]
    assert positions == sorted(positions)
    assert len({s for s, _ in pairs}) == len(pairs)


async def test_picks_the_relevant_sentence_first() -> None:
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=1, max_sources=3)
    text = await answer(answerer, "Where are secrets read from?", hits(SOURCES))
    assert text == "Secrets are read from the environment only. [1]"


async def test_near_duplicates_from_overlapping_chunks_are_quoted_once() -> None:
    repeated = "Unchanged chunks are never re-embedded."
    sources = hits([f"Intro text here. {repeated}", f"{repeated} Other words follow here."])
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=4, max_sources=3)
    text = await answer(answerer, "Are unchanged chunks re-embedded?", sources)
    assert text.count(repeated) == 1


async def test_empty_inputs_yield_nothing() -> None:
    embedder = FakeEmbedder()
    answerer = ExtractiveAnswerer(embedder, max_sentences=3, max_sources=3)
    assert await answer(answerer, "anything?", []) == ""
    assert await answer(answerer, "anything?", hits(["", "   ", "---"])) == ""
    assert await answer(answerer, "   ", hits(SOURCES)) == ""
    assert embedder.calls == []


async def test_deterministic_and_embeds_in_two_calls() -> None:
    embedder = FakeEmbedder()
    answerer = ExtractiveAnswerer(embedder, max_sentences=3, max_sources=3)
    first = await answer(answerer, "What changed in version 1.5?", hits(SOURCES))
    second = await answer(answerer, "What changed in version 1.5?", hits(SOURCES))
    assert first == second
    assert "Version 1.5 changed the default top_k from 4 to 5. [1]" in first
    assert sorted(kind for _, kind in embedder.calls) == ["passage", "passage", "query", "query"]


def units(text: str) -> list[tuple[str, str]]:
    return [(u.kind, text[u.start : u.end]) for u in split_sentences(text)]


def test_splitter_keeps_abbreviations_numbers_and_file_names() -> None:
    text = (
        "Use e.g. config.toml or i.e. the env. Version 1.5 works with Dr. Smith's tool! "
        "Is it v2.0.1? See Fig. 3 and No. 7. J. R. R. Tolkien wrote it. No. The end... Ok."
    )
    assert [s for _, s in units(text)] == [
        "Use e.g. config.toml or i.e. the env.",
        "Version 1.5 works with Dr. Smith's tool!",
        "Is it v2.0.1?",
        "See Fig. 3 and No. 7.",
        "J. R. R. Tolkien wrote it.",
        "No.",
        "The end...",
        "Ok.",
    ]


def test_splitter_structure_units() -> None:
    text = (
        "# Title\n\nA wrapped\nparagraph line. Second one.\n\n"
        "- item one. Two.\n- item two\n  continued\n1) numbered\n\n"
        "| a | b |\n|---|---|\n\n```\ncode line\n```\nTail"
    )
    assert units(text) == [
        ("heading", "Title"),
        ("sentence", "A wrapped\nparagraph line."),
        ("sentence", "Second one."),
        ("item", "item one."),
        ("item", "Two."),
        ("item", "item two\n  continued"),
        ("item", "numbered"),
        ("item", "| a | b |"),
        ("code", "code line"),
        ("sentence", "Tail"),
    ]
    for unit in split_sentences(text):
        assert text[unit.start : unit.end].strip() == text[unit.start : unit.end]
    assert split_sentences("") == [] and split_sentences(" \n--- \n") == []


async def test_a_heavy_overlap_weight_keeps_answers_verbatim() -> None:
    sources = hits(SOURCES)
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=2, weights=Weights(overlap=1.0))
    for sentence, n in quoted(await answer(answerer, "top_k config.toml default", sources)):
        assert flat(sentence) in flat(sources[n - 1].text)


async def test_titles_questions_and_echoes_of_the_question_are_not_quoted() -> None:
    source = Hit(
        chunk_id="c1",
        document_id="d1",
        source="faq.md",
        title="FAQ",
        text=(
            "Changing the port\n\n"
            "How do I change the port?\n\n"
            'curl -d \'{"question": "how do I change the port"}\' is an example request.\n\n'
            "Set server.port in config.toml, or pass --port to rag serve."
        ),
        score=1.0,
        relevance=1.0,
        heading_path=("Changing the port",),
    )
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=4)
    text = await answer(answerer, "how do I change the port", [source])
    assert text == "Set server.port in config.toml, or pass --port to rag serve. [1]"


SETTINGS_PAGE = """Ingestion settings

The defaults suit most handbooks; what is the default and how to change it is below.

| Key | Default | Meaning |
|---|---|---|
| `chunk_tokens` | `200` | Target chunk length in tokens. |
| `overlap_tokens` | `32` | Tokens repeated between neighbouring chunks. |
| `max_file_mb` | `50.0` | Files larger than this are skipped. |

Chunks overlap by `overlap_tokens` so that a sentence cut at a boundary (between two
chunks) is still found. Changing `overlap_tokens` (or the model) means running `rag ingest`
again."""

ERRORS_PAGE = """Error codes

| Code | HTTP | Meaning |
|---|---|---|
| 3006 | 400 | the request is malformed |
| 3036 | 429 | the daily free neuron allocation is used up |
| 3042 | 400 | the model does not exist |

Errors are retried only when they may succeed later."""

BACKUP_PAGE = """Backups

Taking a backup. Never copy rag.db with cp while the service runs. Use SQLite's online
backup instead, which is safe while questions are answered:
sqlite3 data/rag.db ".backup '/backups/rag.db'"
Restoring. Stop the service, then copy the backup to data/rag.db."""


async def test_a_default_value_question_answers_with_the_row_that_holds_it() -> None:
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=2)
    text = await answer(
        answerer, "What is the default value of overlap_tokens?", hits([SETTINGS_PAGE])
    )
    assert "| Key | Default | Meaning | [1]\n| `overlap_tokens` | `32` |" in text
    for quote, n in quoted(text):
        assert flat(quote) in flat(SETTINGS_PAGE) and n == 1
        assert quote.count("(") == quote.count(")")  # never cut mid-parenthesis


async def test_a_question_naming_an_identifier_answers_with_what_contains_it() -> None:
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=1)
    text = await answer(answerer, "What does error 3036 mean?", hits([ERRORS_PAGE]))
    assert "| 3036 | 429 | the daily free neuron allocation is used up | [1]" in text
    assert "3042" not in text and "3006" not in text


async def test_how_do_i_answers_with_the_instruction_and_its_command() -> None:
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=1)
    text = await answer(answerer, "How do I take a backup of the database?", hits([BACKUP_PAGE]))
    assert text == (
        "Use SQLite's online\nbackup instead, which is safe while questions are answered:\n"
        "sqlite3 data/rag.db \".backup '/backups/rag.db'\" [1]"
    )


GIT_CLEAN_OPTIONS = """OPTIONS

-d
    Normally, when no <pathspec> is specified, git clean will not recurse into
    untracked directories to avoid removing too much.
-n, --dry-run
    Don't actually remove anything, just show what would be done.
-q, --quiet
    Be quiet, only report errors, but not the files that are successfully removed."""


async def test_an_option_is_quoted_with_its_term() -> None:
    # Alone, "Don't actually remove anything" does not say which option does it.
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=1)
    text = await answer(
        answerer,
        "How do I see what would be removed, without removing anything?",
        hits([GIT_CLEAN_OPTIONS]),
    )
    assert text == (
        "-n, --dry-run [1]\nDon't actually remove anything, just show what would be done. [1]"
    )


GIT_CLEAN_NAME = "NAME\n\ngit-clean - Remove untracked files from the working tree"


def manual_page(*, opening_first: bool = False) -> list[Hit]:
    """git-clean's OPTIONS ranked first, another page, and git-clean's NAME line as the
    first source's opening (``Hit.opening``), last as the retriever adds it or first."""
    options = hit(1, GIT_CLEAN_OPTIONS, document_id="clean", heading_path=("git-clean(1)",))
    other = hit(2, SOURCES[2])
    name = hit(
        3, GIT_CLEAN_NAME, document_id="clean", heading_path=("git-clean(1)", "NAME"), opening=True
    )
    return [name, options, other] if opening_first else [options, other, name]


async def test_a_how_to_answer_names_the_first_sources_document_by_its_opening() -> None:
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=1)
    question = (
        "How do I remove untracked files from the working tree, or just show what would be removed?"
    )
    text = await answer(answerer, question, manual_page())
    assert text == (
        "git-clean - Remove untracked files from the working tree [3]\n"
        "-n, --dry-run [1]\nDon't actually remove anything, just show what would be done. [1]"
    )
    # Wherever the opening is listed, each quote keeps its own source's number.
    assert await answer(answerer, question, manual_page(opening_first=True)) == (
        "git-clean - Remove untracked files from the working tree [1]\n"
        "-n, --dry-run [2]\nDon't actually remove anything, just show what would be done. [2]"
    )
    for quote, n in quoted(text):
        assert flat(quote) in flat(manual_page()[n - 1].text)
    # An opening far less like the question than the answer (Weights.opening) is left out.
    unlike = "How do I see what would be removed, without removing anything?"
    assert "git-clean - Remove" not in await answer(answerer, unlike, manual_page())


async def test_the_opening_is_not_quoted_where_it_answers_nothing() -> None:
    # However near the question it is (Weights.opening 0): these are the kind's rules.
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=1, weights=Weights(opening=0.0))
    # A yes/no question: the line does not answer it.
    text = await answer(answerer, "Does clean remove anything with --dry-run?", manual_page())
    assert "git-clean - Remove" not in text
    # Nor does it take the place of a ranked source among the three read.
    ranked = [hit(n, SOURCES[n], document_id="clean") for n in range(3)]
    text = await answer(answerer, "Does ingestion read Markdown?", [manual_page()[2], *ranked])
    assert text == "Ingestion reads PDF, Markdown, text and HTML. [4]"
    # Another document's opening is not the first source's.
    stranger = [hit(1, GIT_CLEAN_OPTIONS), *manual_page()[1:]]
    text = await answer(
        answerer, "How do I remove untracked files from the working tree?", stranger
    )
    assert "git-clean - Remove" not in text


async def test_a_pointer_rides_with_the_sentence_it_follows() -> None:
    page = (
        "SECURITY\n\nGit reads its configuration before running a command. By default, Git "
        "will refuse to run when the repository is owned by someone other than the user "
        "running the command. See the entry for safe.directory in git-config(1). While this "
        "can help protect you in a multi-user environment, note the limits below.\n"
    )
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=1)
    question = "Git will refuse to run when the repository is owned by another user; why?"
    assert await answer(answerer, question, hits([page])) == (
        "By default, Git will refuse to run when the repository is owned by someone other than "
        "the user running the command. [1] See the entry for safe.directory in git-config(1). [1]"
    )
    # Only what directly follows: a pointer two sentences on stays out.
    later = page.replace(" See the entry", " Nobody else is trusted. See the entry")
    assert "See the entry" not in await answer(answerer, question, hits([later]))


async def test_prose_is_quoted_on_one_line_and_code_as_written() -> None:
    page = (
        "Credentials\n\nYou can use the `store` credential manager which stores them in a\n"
        "    file in your home directory, or the cache helper.\n\n"
        "    git config credential.helper store\n"
    )
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=2)
    text = await answer(
        answerer, "Where does the store credential manager keep them?", hits([page])
    )
    assert (
        "You can use the `store` credential manager which stores them in a file in your home "
        "directory, or the cache helper. [1]" in text
    )
    assert "\n    " not in text.replace("\n    git config", "")  # only code keeps its indent


async def test_never_a_heading_nor_a_fragment_of_a_chunk_cut_mid_sentence() -> None:
    cut = "at boundary (the overlap.\n\nOverlap keeps 32 tokens of context between chunks."
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=4)
    text = await answer(answerer, "overlap", hits([f"# Overlap\n\n{cut}"]))
    assert text == "Overlap keeps 32 tokens of context between chunks. [1]"


async def test_a_paragraph_after_the_tail_of_a_code_block_is_no_fragment() -> None:
    # http-api.html: the chunk's overlap reached into a JSON example; the prose after it
    # starts with a lower-case field name, and that sentence is the answer.
    chunk = (
        '58, "total": 73}, "trace_id": "...",\n  "degraded": null}\n```\n\n'
        "grounded is false when the evidence gate found nothing relevant enough."
    )
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=4)
    text = await answer(answerer, "what does grounded false mean", hits([chunk]))
    assert quoted(text) == [
        ("grounded is false when the evidence gate found nothing relevant enough.", 1)
    ]


async def test_a_lead_in_over_a_fenced_block_is_quoted_with_it_once_across_twins() -> None:
    # Python's venv tutorial as its reST source and as HTML: the instruction, its command
    # and the closing fence (so what follows is not read as code), quoted once.
    rst = "To deactivate a virtual environment, type:\n\n```\ndeactivate\n```\n\ninto the terminal."
    html = rst.replace("```\ndeactivate", "```python3\ndeactivate")
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=2)
    text = await answer(answerer, "How do I deactivate a virtual environment?", hits([rst, html]))
    # The marker below the closing fence, which must stand alone on its line.
    lead = "To deactivate a virtual environment, type:"
    assert text.startswith(f"{lead}\n\n```\ndeactivate\n```\n[1]")
    assert "[2]" not in text and "```python3" not in text


async def test_never_a_unit_cut_inside_brackets_or_quotes() -> None:
    # The counts of "(" and ")" agree and the sentence is still open inside the last one.
    opened = "The editor is chosen from GIT_EDITOR, then b) core.editor and EDITOR (in that"
    quote = 'The editor named by "core.editor is used for the commit message, git says.'
    whole = "Git opens the editor named by core.editor for the commit message."
    answerer = ExtractiveAnswerer(FakeEmbedder(), max_sentences=4)
    text = await answer(
        answerer,
        "Which editor does git commit open for the message?",
        hits([f"{opened} order. {whole}", quote]),
    )
    assert opened not in text and quote not in text
    assert quoted(text) == [(whole, 1)]


class StoredUnits:
    """A ``UnitSource`` over units computed up front, as ingestion stores them."""

    def __init__(self, units: dict[str, Units]) -> None:
        self.units = units
        self.asked: list[list[str]] = []

    async def load(self, chunk_ids: Sequence[str]) -> dict[str, Units]:
        self.asked.append(list(chunk_ids))
        return {cid: self.units[cid] for cid in chunk_ids if cid in self.units}


async def test_stored_units_leave_only_the_question_to_embed() -> None:
    sources = hits([SETTINGS_PAGE, ERRORS_PAGE])
    embedder = FakeEmbedder()
    computed = await embed_units(embedder, [h.text for h in sources])
    store = StoredUnits({h.chunk_id: u for h, u in zip(sources, computed, strict=True)})
    embedder.calls.clear()
    with_store = ExtractiveAnswerer(embedder, max_sentences=2, units=store)
    text = await answer(with_store, "What does error 3036 mean?", sources)
    assert embedder.calls == [(1, "query")]
    assert store.asked == [[h.chunk_id for h in sources]]
    # The same answer as with units computed at question time.
    assert text == await answer(
        ExtractiveAnswerer(FakeEmbedder(), max_sentences=2), "What does error 3036 mean?", sources
    )


def test_question_kinds() -> None:
    assert question_kind("What is the default value of overlap_tokens?") == "value"
    assert question_kind("how do I change the port") == "howto"
    assert question_kind("Why isn't BM25 fused at equal weight?") == "why"
    assert question_kind("Can I ingest scanned PDFs?") == "yesno"
    assert question_kind("what is MRR@10") == "definition"
    assert question_kind("3036") == "other"
