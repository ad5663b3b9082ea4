"""Keyword search with SQLite FTS5's BM25 over ``chunks_fts`` (rowid = ``chunks.seq``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from rag.errors import ConfigError
from rag.text import FUNCTION_WORDS, search_terms

MAX_TERMS = 32


_SEARCH = text(
    "SELECT c.id, -bm25(chunks_fts) AS score FROM chunks_fts "
    "JOIN chunks AS c ON c.seq = chunks_fts.rowid "
    "WHERE chunks_fts MATCH :query ORDER BY chunks_fts.rank, c.seq LIMIT :k"
)


def match_expression(query: str) -> str:
    """Free text as a safe FTS5 query: distinct non-stop-word terms, each quoted, OR-ed.

    Quoting makes every term a string literal, so AND, NEAR, *, ^, column filters and
    parentheses in the question are searched for, never interpreted. Empty when
    nothing searchable is left.
    """
    terms: dict[str, None] = {}
    for term in search_terms(query):
        if term not in FUNCTION_WORDS:
            terms.setdefault(term, None)
        if len(terms) == MAX_TERMS:
            break
    return " OR ".join(f'"{term}"' for term in terms)


class Fts5KeywordSearch:
    """A ``KeywordSearch``; score is -BM25, so higher is better (and always positive)."""

    def __init__(self, database: AsyncEngine | async_sessionmaker[Any]) -> None:
        engine = database if isinstance(database, AsyncEngine) else database.kw.get("bind")
        if isinstance(engine, AsyncEngine) and engine.dialect.name != "sqlite":
            raise ConfigError("keyword search needs SQLite FTS5; this database is not SQLite")
        self._database = database

    async def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, -bm25) pairs, best first; no searchable term means no hits."""
        expression = match_expression(query)
        if not expression or k <= 0:
            return []
        params = {"query": expression, "k": k}
        if isinstance(self._database, AsyncEngine):
            async with self._database.connect() as conn:
                rows = (await conn.execute(_SEARCH, params)).all()
        else:
            async with self._database() as session:
                rows = (await session.execute(_SEARCH, params)).all()
        return [(str(chunk_id), float(score)) for chunk_id, score in rows]
