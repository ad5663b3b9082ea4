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
from sqlalchemy.exc import IntegrityError
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


async def execute_racing(session: AsyncSession, statement: Insert) -> None:
    """Run an upsert on a table with a unique index besides its conflict target.

    PostgreSQL's ``ON CONFLICT`` handles its arbiter index alone. ``documents`` has two
    unique indexes (``id``, and ``source`` it is derived from): when another transaction
    inserts the same row at the same moment, the insert can fail on ``source`` instead of
    meeting the conflict on ``id``: two ingests of one folder at once on PostgreSQL
    (tests/test_concurrency.py) failed a document in 2 of 60 runs, and in none of 60
    with this. By the time that error comes the other row is committed (PostgreSQL
    waits for it), so the same statement run again meets it on the arbiter and updates
    it. A savepoint keeps the caller's transaction usable. SQLite has one writer at a
    time: nothing races there.
    """
    if session.get_bind().dialect.name != "postgresql":
        await session.execute(statement)
        return
    try:
        async with session.begin_nested():
            await session.execute(statement)
    except IntegrityError:
        await session.execute(statement)
