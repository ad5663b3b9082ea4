"""What never becomes a retrieval candidate: a chunk too thin to answer, in a longer document."""

from __future__ import annotations

from pathlib import Path

from rag.service import RagService

ANIMALS = [
    "llama", "alpaca", "camel", "yak", "bison", "moose",
    "otter", "badger", "heron", "falcon", "lynx", "marten",
]  # fmt: skip
FOOTER = "## About\n\nPart of the example suite of animal pages.\n"


def write_pages(folder: Path) -> None:
    folder.mkdir()
    for animal in ANIMALS:
        shared = (
            "## Wool\n\nThe llama and alpaca pages share this paragraph about fine wool.\n\n"
            if animal in ("llama", "alpaca")
            else ""
        )
        (folder / f"{animal}.md").write_text(
            f"# The {animal}\n\nThe {animal} lives in many places and eats what it finds "
            f"there; this page describes the {animal} and its habits.\n\n{shared}"
            f"## Synopsis\n\n`{animal} *`\n\n{FOOTER}"
        )


async def test_a_chunk_too_thin_to_answer_is_never_a_candidate(
    service: RagService, tmp_path: Path
) -> None:
    write_pages(tmp_path / "pages")
    await service.ingest([tmp_path / "pages"])
    hits, _ = await service.retriever.candidates_for("llama synopsis")
    assert any(h.source == "llama.md" for h in hits)
    # "Synopsis / `llama *`" has two content words: nothing to quote, nothing to cite.
    assert not [h.text for h in hits if h.text.strip().startswith("Synopsis")]


async def test_a_document_that_is_one_short_chunk_is_still_found(
    service: RagService, tmp_path: Path
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("# Notes\n\nOur own meeting notes.\n")
    await service.ingest([tmp_path / "mine"])
    hits, _ = await service.retriever.candidates_for("meeting notes")
    assert [h.source for h in hits] == ["notes.md"]
