"""Answer units: what the extractive answerer may quote whole, cut from chunk text."""

from __future__ import annotations

from rag.backends.local.answer_units import answer_units


def units(text: str) -> list[tuple[str, str]]:
    found = answer_units(text)
    for unit in found:
        piece = text[unit.start : unit.end]
        assert piece == piece.strip() and piece, "a unit is a trimmed, non-empty span"
    return [(u.kind, text[u.start : u.end]) for u in found]


def test_a_wrapped_list_item_is_one_unit_with_its_continuation() -> None:
    text = (
        "Range rules\n\n"
        "- `ingest.overlap_tokens` must be under half of `chunk_tokens` (with the default\n"
        "200, at most 99).\n"
        "- `server.port` must be between 1 and\n"
        "  65535.\n"
    )
    assert units(text) == [
        ("sentence", "Range rules"),
        (
            "item",
            "`ingest.overlap_tokens` must be under half of `chunk_tokens` (with the default\n"
            "200, at most 99).",
        ),
        ("item", "`server.port` must be between 1 and\n  65535."),
    ]


def test_an_item_ends_at_its_sentence_when_no_blank_line_follows() -> None:
    # PDF text has no blank lines: the paragraph after an item is not part of it.
    text = "- Stop the service.\nThe restore takes minutes. Plan for it."
    assert units(text) == [
        ("item", "Stop the service."),
        ("sentence", "The restore takes minutes."),
        ("sentence", "Plan for it."),
    ]


def test_table_rows_carry_their_header_and_the_header_is_no_unit() -> None:
    text = (
        "| Key | Default | Meaning |\n|---|---|---|\n"
        "| `chunk_tokens` | `200` | Target chunk length. |\n"
        "| `overlap_tokens` | `32` | Tokens repeated between chunks. |\n"
    )
    found = answer_units(text)
    assert [(u.kind, text[u.start : u.end]) for u in found] == [
        ("row", "| `chunk_tokens` | `200` | Target chunk length. |"),
        ("row", "| `overlap_tokens` | `32` | Tokens repeated between chunks. |"),
    ]
    for unit in found:
        assert unit.header is not None
        assert text[unit.header[0] : unit.header[1]] == "| Key | Default | Meaning |"


def test_a_lead_in_is_quoted_with_what_it_introduces_never_alone() -> None:
    text = (
        "Use SQLite's online backup instead, which is safe while the service runs:\n"
        "sqlite3 data/rag.db \".backup '/backups/rag.db'\"\n"
        "Check it afterwards."
    )
    assert units(text) == [
        (
            "lead",
            "Use SQLite's online backup instead, which is safe while the service runs:\n"
            "sqlite3 data/rag.db \".backup '/backups/rag.db'\"",
        ),
        ("code", "sqlite3 data/rag.db \".backup '/backups/rag.db'\""),
        ("sentence", "Check it afterwards."),
    ]
    assert units("Only these permissions:\n\nNothing else.") == [("sentence", "Nothing else.")]


def test_code_blocks_fenced_indented_or_stripped_of_indentation_stay_whole() -> None:
    fenced = "Run this:\n\n```\nrag ingest docs/\n\nrag serve\n```\nDone."
    assert ("code", "rag ingest docs/\n\nrag serve") in units(fenced)
    indented = "An example.\n\n    def f():\n        return 1\n\nAfter."
    assert ("code", "def f():\n        return 1") in units(indented)
    # A loader that dropped the indentation: settings lines are still read as code.
    toml = 'A complete example\n\nbackend = "local"\n\n[ingest]\nchunk_tokens = 180\n\nThe end.'
    assert ("code", 'backend = "local"\n\n[ingest]\nchunk_tokens = 180') in units(toml)


def test_headings_are_not_units() -> None:
    text = "# Configuration\n\nSettings live in config.toml.\n\n## Ports\n\nThe port is 8000."
    assert units(text) == [
        ("sentence", "Settings live in config.toml."),
        ("sentence", "The port is 8000."),
    ]


def test_a_row_cut_by_the_chunk_boundary_is_not_a_unit() -> None:
    text = (
        "| Evidence gate for the local backend. |\n"
        "| `min_term_coverage` | `0.5` | Evidence gate, both backends. |\n"
        "| `top_k` | `5` | Sources handed to the answerer. |"
    )
    assert [kind_text[1][:22] for kind_text in units(text)] == [
        "| `min_term_coverage` ",
        "| `top_k` | `5` | Sour",
    ]


OPTIONS_PAGE = """OPTIONS

-n, --dry-run
    Don't actually remove anything, just show what would be done.
-f
--force
    Refuse to delete files unless given -f.

    A second -f also removes nested repositories.

        git clean -ff
author.name
committer.name
    The name recorded in commits. Example:

    ```
    git config user.name "A U Thor"
    ```
Prose after the list. It is not a definition.
"""


def test_a_definition_body_is_quoted_after_its_term() -> None:
    found = answer_units(OPTIONS_PAGE)
    pairs = [
        (
            u.kind,
            OPTIONS_PAGE[u.start : u.end],
            OPTIONS_PAGE[u.header[0] : u.header[1]] if u.header else None,
        )
        for u in found
    ]
    assert pairs == [
        ("sentence", "OPTIONS", None),  # a heading: the answerer never quotes it
        (
            "sentence",
            "Don't actually remove anything, just show what would be done.",
            "-n, --dry-run",
        ),
        ("sentence", "Refuse to delete files unless given -f.", "-f\n--force"),
        ("sentence", "A second -f also removes nested repositories.", "-f\n--force"),
        ("code", "git clean -ff", "-f\n--force"),  # indented deeper: an example
        ("sentence", "The name recorded in commits.", "author.name\ncommitter.name"),
        (
            "lead",
            'Example:\n\n    ```\n    git config user.name "A U Thor"\n    ```',
            "author.name\ncommitter.name",
        ),
        ("code", 'git config user.name "A U Thor"', "author.name\ncommitter.name"),
        ("sentence", "Prose after the list.", None),
        ("sentence", "It is not a definition.", None),
    ]


def test_prose_that_ends_a_sentence_or_follows_text_is_no_term() -> None:
    # A line ending a sentence, or one over a lower-case continuation (a hanging indent),
    # introduces no definition.
    text = (
        "The options follow.\n    Indented prose.\n\nA sentence ends.\nthen a line\n    indented."
    )
    assert all(u.header is None for u in answer_units(text))


def test_definitions_without_blank_lines_are_not_run_together() -> None:
    # git-config.html as the HTML loader writes it, in a chunk that starts inside the body
    # of one definition (its indentation gone with the chunk's leading white space):
    # each term heads its own body; "See gitattributes(5).\ngitcvs.allBinary\n    This is
    # used ..." was one sentence, and quoted a term inside another definition's text.
    text = (
        "If the type cannot be determined, then gitcvs.allBinary is used. See gitattributes(5).\n"
        "gitcvs.allBinary\n"
        "    This is used if gitcvs.usecrlfattr does not resolve the mode. If true, all files"
        " are sent in mode -kb.\n"
        "gitcvs.dbName\n"
        "    Database used by git-cvsserver to cache revision information.\n"
    )
    found = answer_units(text)
    assert [
        (text[u.start : u.end], text[u.header[0] : u.header[1]] if u.header else None)
        for u in found
    ] == [
        ("If the type cannot be determined, then gitcvs.allBinary is used.", None),
        ("See gitattributes(5).", None),
        ("This is used if gitcvs.usecrlfattr does not resolve the mode.", "gitcvs.allBinary"),
        ("If true, all files are sent in mode -kb.", "gitcvs.allBinary"),
        ("Database used by git-cvsserver to cache revision information.", "gitcvs.dbName"),
    ]


def test_a_chunk_that_starts_inside_a_code_block_quotes_no_part_of_it() -> None:
    # Python's venv tutorial, a chunk whose overlap reached back into the block before:
    # read from the top, the fences paired up wrongly and the lead-in alone was quoted
    # as code ("To deactivate a virtual environment, type:"), without its command.
    text = (
        "'~/envs/tutorial-env/lib/python3.5/site-packages']\n>>>\n```\n\n"
        "To deactivate a virtual environment, type:\n\n```\ndeactivate\n```\n\n"
        "into the terminal."
    )
    assert units(text) == [
        ("lead", "To deactivate a virtual environment, type:\n\n```\ndeactivate\n```"),
        ("code", "deactivate"),
        ("sentence", "into the terminal."),
    ]


def test_a_chunk_that_ends_inside_a_code_block_keeps_its_lead_in() -> None:
    # Odd fences too, but the open one is last: a blank line before the first fence.
    text = "Install it:\n\n```\npip install rag\n```\n\nThen run:\n\n```sh\nrag serve"
    assert units(text) == [
        ("lead", "Install it:\n\n```\npip install rag\n```"),  # with its closing fence
        ("code", "pip install rag"),
        ("lead", "Then run:\n\n```sh\nrag serve"),
        ("code", "rag serve"),
    ]


def test_a_sentence_that_starts_with_a_command_word_is_prose() -> None:
    # Python's venv tutorial through the HTML loader: the code markup around
    # "python -m pip show" is gone, and the line is the lead-in of the command below it.
    text = (
        "python -m pip show will display information about a particular package:\n\n"
        "```bash\n(tutorial-env) $ python -m pip show requests\n```\n"
    )
    assert units(text) == [
        (
            "lead",
            "python -m pip show will display information about a particular package:\n\n"
            "```bash\n(tutorial-env) $ python -m pip show requests\n```",
        ),
        ("code", "(tutorial-env) $ python -m pip show requests"),
    ]
    command = "Build it.\n\ndocker build -t rag -f Dockerfile .\n"  # a lone "." is a path
    assert units(command) == [
        ("sentence", "Build it."),
        ("code", "docker build -t rag -f Dockerfile ."),
    ]
