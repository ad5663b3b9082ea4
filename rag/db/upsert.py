"""``INSERT ... ON CONFLICT`` on whichever database the session is bound to.

SQLite (3.24+) and PostgreSQL both have it, with the same clauses, but SQLAlchemy keeps
it in each dialect's own ``insert``; this is the one place that picks. A row another
process may be writing at the same moment (a document two ingests meet, an answer two
identical questions store, a counter) is written with one statement, never looked up
first: between a SELECT and its INSERT any other writer can get in.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

Insert = postgresql.Insert | sqlite.Insert


def insert(session: AsyncSession, table: Any) -> Insert:
    """The dialect's ``insert(table)``, which has ``on_conflict_do_nothing/_update``."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"INSERT ... ON CONFLICT on {name}: only SQLite and PostgreSQL")
