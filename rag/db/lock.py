"""One process at a time across every process on one database: migrations, and the
first ingest of the bundled corpus.

Replicas that start together on an empty database would otherwise all create the same
tables (all but one fail) and all ingest the same corpus. On PostgreSQL the lock is a
session-level advisory lock on a connection of its own; on SQLite it is an ``flock`` on a
file beside the database (SQLite's own locks cannot be held across Alembic's
transactions, and DDL outside one is not transactional at all). Either is released by
the operating system or the server when its holder dies, so a killed process never
leaves a lock behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

log = logging.getLogger(__name__)

# A folder that refuses a new file: the database there cannot be changed by anyone
# else either, so there is nothing to take turns at.
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` (one per named section)."""
    digest = hashlib.sha256(f"rag:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@asynccontextmanager
async def exclusive(url: str, name: str) -> AsyncIterator[None]:
    """Hold the lock called ``name`` on the database at ``url`` for the block.

    Waits as long as the holder takes: what is waited for (a migration, an ingest of
    the bundled corpus) is what the waiter would otherwise do itself, worse.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        async with _advisory(url, name):
            yield
    elif parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        async with _file_lock(Path(str(parsed.database)), name):
            yield
    else:
        yield  # in-memory SQLite: one connection, one process


@asynccontextmanager
async def _advisory(url: str, name: str) -> AsyncIterator[None]:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock_key(name)})
            # Session-level: the lock outlives this transaction, ended so that the
            # connection holds no snapshot while the block runs.
            await conn.commit()
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # closing the connection frees it too
                    await conn.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(name)}
                    )
                    await conn.commit()
    finally:
        await engine.dispose()


@asynccontextmanager
async def _file_lock(database: Path, name: str) -> AsyncIterator[None]:
    slug = "".join(c if c.isalnum() else "-" for c in name)
    path = database.with_name(f"{database.name}.{slug}.lock")
    fd = None
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        if exc.errno not in _UNWRITABLE:
            raise
        log.debug("no lock file %s (%s): going on without one", path, exc.strerror)
    if fd is None:
        yield
        return
    try:
        # In a thread: flock blocks, and the event loop must go on meanwhile.
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
