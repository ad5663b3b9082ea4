"""Alembic environment: runs on the async driver (``run_sync``); compares against rag.db.tables.

``rag.db.engine.upgrade`` passes the connection in, under the migration lock; the
``alembic`` command itself opens one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from rag.db.tables import Base

config = context.config
target_metadata = Base.metadata


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    # The FTS5 virtual table and its shadow tables (SQLite), and the generated tsvector
    # column and its index (PostgreSQL), are made by hand in migrations; autogenerate
    # has no model for them and must not propose dropping them.
    if type_ == "table" and name is not None and name.startswith("chunks_fts"):
        return False
    return not (type_ in ("column", "index") and name in SEARCH_VECTOR)


SEARCH_VECTOR = ("search_vector", "ix_chunks_search_vector")


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    asyncio.run(_run_async(url))


async def _run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
