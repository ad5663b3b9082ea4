"""Keyword search with SQLite FTS5's BM25 over ``chunks_fts`` (rowid = ``chunks.seq``)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from rag.errors import ConfigError

# A term is a run of word characters, joined by the punctuation of identifiers, file
# names and versions (config.toml, top_k, E-1234, v1.5). Quoted, FTS5 reads such a term
# as a phrase of its parts in order, which is what an exact identifier should match.
_TERM = re.compile(r"\w+(?:[.\-_/:@]\w+)*")
MAX_TERMS = 32

# Common English function words: OR-ed in, they would match nearly every chunk and
# drown the rare terms BM25 is good at.
_STOP_WORDS = """a about above after again against all am an and any are as at be because been
before being below between both but by can could did do does doing down during each few for
from further had has have having he her here hers herself him himself his how i if in into is
it its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
tell explain describe please"""
STOP_WORDS = frozenset(_STOP_WORDS.split())

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
    for match in _TERM.finditer(query.lower()):
        term = match.group()
        if term not in STOP_WORDS:
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
