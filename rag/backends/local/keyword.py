"""Keyword search in the database itself: SQLite FTS5's BM25 over ``chunks_fts`` (rowid =
``chunks.seq``), or PostgreSQL's full-text search over ``chunks.search_vector``.

Both look up the same terms (``query_terms``: ``rag.text.search_terms`` without the
function words), OR-ed, each term a phrase of its parts, so the two databases retrieve
the same way and differ only in how they rank. ``keyword_search`` picks one from the
database the engine is bound to.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from rag.errors import ConfigError
from rag.ports import KeywordSearch
from rag.text import FUNCTION_WORDS, search_terms

MAX_TERMS = 32

Database = AsyncEngine | async_sessionmaker[Any]

_FTS5_SEARCH = text(
    "SELECT c.id, -bm25(chunks_fts) AS score FROM chunks_fts "
    "JOIN chunks AS c ON c.seq = chunks_fts.rowid "
    "WHERE chunks_fts MATCH :query ORDER BY chunks_fts.rank, c.seq LIMIT :k"
)


def query_terms(query: str) -> list[str]:
    """The distinct non-function-word terms of ``query``, at most ``MAX_TERMS``, in order."""
    terms: dict[str, None] = {}
    for term in search_terms(query):
        if term not in FUNCTION_WORDS:
            terms.setdefault(term, None)
        if len(terms) == MAX_TERMS:
            break
    return list(terms)


def match_expression(query: str) -> str:
    """Free text as a safe FTS5 query: distinct non-stop-word terms, each quoted, OR-ed.

    Quoting makes every term a string literal, so AND, NEAR, *, ^, column filters and
    parentheses in the question are searched for, never interpreted. Empty when
    nothing searchable is left.
    """
    return " OR ".join(f'"{term}"' for term in query_terms(query))


def _engine_of(database: Database) -> AsyncEngine | None:
    bind = database if isinstance(database, AsyncEngine) else database.kw.get("bind")
    return bind if isinstance(bind, AsyncEngine) else None


async def _rows(database: Database, statement: TextClause, params: dict[str, Any]) -> list[Any]:
    if isinstance(database, AsyncEngine):
        async with database.connect() as conn:
            return list((await conn.execute(statement, params)).all())
    async with database() as session:
        return list((await session.execute(statement, params)).all())


class Fts5KeywordSearch:
    """A ``KeywordSearch``; score is -BM25, so higher is better (and always positive)."""

    def __init__(self, database: Database) -> None:
        engine = _engine_of(database)
        if engine is not None and engine.dialect.name != "sqlite":
            raise ConfigError("keyword search needs SQLite FTS5; this database is not SQLite")
        self._database = database

    async def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, -bm25) pairs, best first; no searchable term means no hits."""
        expression = match_expression(query)
        if not expression or k <= 0:
            return []
        rows = await _rows(self._database, _FTS5_SEARCH, {"query": expression, "k": k})
        return [(str(chunk_id), float(score)) for chunk_id, score in rows]


RANK_NORMALIZATION = 1
"""``ts_rank_cd``'s normalisation: 1 divides by 1 + log(document length), so a long
chunk does not win by length alone (BM25 normalises by length too)."""


class PostgresKeywordSearch:
    """A ``KeywordSearch`` over the GIN-indexed ``chunks.search_vector`` (migration 0006).

    Each term becomes ``phraseto_tsquery('english', term)``, the same parser and stemmer
    that built the column, so ``config.toml`` or ``E-1042`` are cut the same way on both
    sides; the terms are bound parameters and ``phraseto_tsquery`` reads no operators,
    so nothing in a question is interpreted. Terms are OR-ed (``||``) as on FTS5, and
    ranked by ``ts_rank_cd`` (cover density: matches close together count more).
    Score is that rank: higher is better, and positive for every match.
    """

    def __init__(self, database: Database) -> None:
        engine = _engine_of(database)
        if engine is not None and engine.dialect.name != "postgresql":
            raise ConfigError("PostgreSQL keyword search on a database that is not PostgreSQL")
        self._database = database

    async def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, rank) pairs, best first; no searchable term means no hits."""
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        params: dict[str, Any] = {f"t{i}": term for i, term in enumerate(terms)}
        params["k"] = k
        tsquery = " || ".join(f"phraseto_tsquery('english', :t{i})" for i in range(len(terms)))
        statement = text(
            f"SELECT c.id, ts_rank_cd(c.search_vector, q.query, {RANK_NORMALIZATION}) AS score "
            f"FROM chunks AS c, (SELECT {tsquery} AS query) AS q "
            "WHERE c.search_vector @@ q.query ORDER BY score DESC, c.seq LIMIT :k"
        )
        rows = await _rows(self._database, statement, params)
        return [(str(chunk_id), float(score)) for chunk_id, score in rows]


def keyword_search(database: Database) -> KeywordSearch:
    """The keyword search the database has: FTS5 on SQLite, tsvector on PostgreSQL."""
    engine = _engine_of(database)
    name = engine.dialect.name if engine is not None else "sqlite"
    if name == "postgresql":
        return PostgresKeywordSearch(database)
    if name == "sqlite":
        return Fts5KeywordSearch(database)
    raise ConfigError(f"keyword search needs SQLite or PostgreSQL, not {name}")
