"""Keyword search, FTS5 on SQLite and a tsvector on PostgreSQL: ranking, query safety, and
deletes reaching the index."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from rag.backends.local.keyword import (
    Fts5KeywordSearch,
    PostgresKeywordSearch,
    keyword_search,
    match_expression,
)
from rag.db.engine import create_engine, session_factory, upgrade_sync
from rag.errors import ConfigError
from rag.ports import KeywordSearch

CHUNKS = {
    "d1": {
        "c-install": "Install the package with pip, then run rag ingest on the corpus folder.",
        "c-config": "Set top_k in config.toml to change how many sources an answer cites.",
        "c-error": "Error E-1042 means the embedding model file failed its sha256 check.",
    },
    "d2": {
        "c-cats": "Cats sleep for most of the day and hunt at night.",
        "c-cafe": "The café in Zürich serves naïve coffee; 東京 has more cafés.",
        "c-index": "The vector index is rebuilt from SQLite; the index never mixes models.",
    },
}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    upgrade_sync(database_url)
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        for doc, chunks in CHUNKS.items():
            await conn.execute(
                text(
                    "INSERT INTO documents (id, source, root, path, title, media_type, sha256,"
                    " size, mtime_ns, status, chunker) VALUES (:id, :src, 'r', :src, '', '', 'x',"
                    " 1, 0, 'ok', '')"
                ),
                {"id": doc, "src": doc},
            )
            for ordinal, (chunk_id, body) in enumerate(chunks.items()):
                await conn.execute(
                    text(
                        "INSERT INTO chunks (id, document_id, ordinal, text, char_start, char_end,"
                        " heading_path, token_count, sha256) VALUES (:id, :doc, :o, :t, 0, 1,"
                        " '[]', 1, 'h')"
                    ),
                    {"id": chunk_id, "doc": doc, "o": ordinal, "t": body},
                )
    yield engine
    await engine.dispose()


async def ids(search: KeywordSearch, query: str, k: int = 10) -> list[str]:
    return [chunk_id for chunk_id, _ in await search.search(query, k)]


async def test_ranking_and_scores(engine: AsyncEngine) -> None:
    search = keyword_search(engine)
    hits = await search.search("what does error E-1042 mean?", 5)
    assert hits[0][0] == "c-error"
    assert all(score > 0 for _, score in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert (await ids(search, "how do I change top_k in config.toml"))[0] == "c-config"
    # Porter stemming: "rebuilding indexes" finds "rebuilt ... index".
    assert (await ids(search, "rebuilding the indexes"))[0] == "c-index"
    assert len(await search.search("index cats coffee install", 2)) == 2


async def test_works_through_a_session_factory(engine: AsyncEngine) -> None:
    search = keyword_search(session_factory(engine))
    assert (await ids(search, "cats at night"))[0] == "c-cats"


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced quote',
        "cats AND",
        "OR OR NOT",
        "NEAR(cats night)",
        "cat* ^sleep",
        "text:cats",
        "(((cats",
        "-cats +dogs",
        "'; DROP TABLE chunks; --",
        "café Zürich 東京",
        "\u0000 \ufffd emoji 🐈",
        "col:umn {a b} [x] $1 %",
    ],
)
async def test_special_characters_never_raise(engine: AsyncEngine, query: str) -> None:
    search = keyword_search(engine)
    await search.search(query, 5)
    assert (await ids(search, "cats"))[0] == "c-cats"  # and the table is still there


async def test_unicode_and_empty_queries(engine: AsyncEngine) -> None:
    search = keyword_search(engine)
    assert await ids(search, "Zürich 東京") == ["c-cafe"]
    assert await search.search("", 5) == []
    assert await search.search("  ?!  ", 5) == []
    assert await search.search("what is the", 5) == []  # stop words only
    assert await search.search("cats", 0) == []


def test_match_expression_quotes_every_term() -> None:
    assert match_expression('What is "top_k" in config.toml AND E-1042?') == (
        '"top_k" OR "config.toml" OR "e-1042"'
    )
    assert match_expression("NEAR(a b) cats cats") == '"near" OR "b" OR "cats"'
    assert match_expression("") == ""


async def test_deleting_chunks_or_documents_empties_the_index(engine: AsyncEngine) -> None:
    search = keyword_search(engine)
    assert await ids(search, "cats") == ["c-cats"]
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM chunks WHERE id = 'c-cats'"))
    assert await ids(search, "cats") == []
    assert await ids(search, "install corpus") == ["c-install"]
    async with engine.begin() as conn:
        # ON DELETE CASCADE (foreign_keys=ON) removes the chunks; their triggers the FTS rows.
        await conn.execute(text("DELETE FROM documents WHERE id = 'd1'"))
    assert await ids(search, "install corpus config error") == []
    assert set(await ids(search, "index coffee")) == {"c-cafe", "c-index"}
    if engine.dialect.name == "postgresql":
        return  # a generated column: there is no separate index to check
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM chunks_fts"))).scalar_one()
        integrity = "INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)"
        await conn.execute(text(integrity))  # raises if the index and chunks disagree
    assert count == 2


async def test_the_index_commits_and_rolls_back_with_the_chunks(engine: AsyncEngine) -> None:
    search = keyword_search(engine)
    insert = text(
        "INSERT INTO chunks (id, document_id, ordinal, text, char_start, char_end,"
        " heading_path, token_count, sha256) VALUES ('c-owl', 'd2', 9, :t, 0, 1, '[]', 1, 'h')"
    )
    async with engine.connect() as conn:
        await conn.execute(insert, {"t": "Owls hunt voles by moonlight."})
        await conn.rollback()
    assert await ids(search, "owls voles") == []
    async with engine.begin() as conn:
        await conn.execute(insert, {"t": "Owls hunt voles by moonlight."})
    assert await ids(search, "owl vole") == ["c-owl"]  # stemmed on both databases
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE chunks SET text = 'Herons wade.' WHERE id = 'c-owl'"))
    assert await ids(search, "owls") == []
    assert await ids(search, "heron") == ["c-owl"]


async def test_each_database_gets_its_own_search(engine: AsyncEngine) -> None:
    chosen = keyword_search(engine)
    if engine.dialect.name == "postgresql":
        assert isinstance(chosen, PostgresKeywordSearch)
        with pytest.raises(ConfigError, match="not SQLite"):
            Fts5KeywordSearch(engine)
    else:
        assert isinstance(chosen, Fts5KeywordSearch)
        with pytest.raises(ConfigError, match="not PostgreSQL"):
            PostgresKeywordSearch(engine)
