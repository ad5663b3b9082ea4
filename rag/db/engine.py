"""The async engine, SQLite pragmas, and migrating on start."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, pool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from rag.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def shares_database(store: str, url: str) -> bool:
    """Whether a ``*_store`` setting ("auto", "memory", "database") keeps its state in the
    database: "auto" does on PostgreSQL, which several replicas share; on SQLite (one
    machine) the process's memory serves without a write per use."""
    if store == "auto":
        return url.startswith("postgresql")
    return store == "database"


LOCK_WAIT_S = 30.0
"""How long a write waits for another writer (an ingest in another process) by default."""


def create_engine(url: str, lock_wait_s: float = LOCK_WAIT_S) -> AsyncEngine:
    """An engine whose writes wait at most ``lock_wait_s`` for a lock another holds.

    The service keeps two: one that waits long (ingestion, deletes, migrations) and one
    that gives up quickly, for the best-effort writes around an answer
    (``[database] best_effort_wait_s``).
    """
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    wait_ms = max(int(lock_wait_s * 1000), 0)
    options: dict[str, Any] = {}
    if make_url(url).drivername == "postgresql+asyncpg":
        options["connect_args"] = {"server_settings": {"lock_timeout": str(wait_ms)}}
    engine = create_async_engine(url, **options)
    if engine.dialect.name == "sqlite":

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_connection, wait_ms)

        event.listen(engine.sync_engine, "connect", on_connect)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, busy_timeout_ms: int) -> None:
    # WAL lets the web app read while an ingest writes; foreign keys make deleting a
    # document take its chunks and vectors with it; busy_timeout waits out a writer
    # in another process instead of failing at once, for as long as the engine allows.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    if not (MIGRATIONS / "env.py").is_file():
        raise ConfigError(
            f"migrations not found at {MIGRATIONS}: install the project from its checkout "
            "(pip install -e .)"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _upgrade_on(connection: Any, url: str, revision: str) -> None:
    from alembic import command

    cfg = alembic_config(url)
    # migrations/env.py runs on this connection rather than opening its own.
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _upgrade_sqlite(url: str, revision: str) -> None:
    # The standard library's sqlite3, synchronously, as Alembic is: aiosqlite's worker
    # thread would outlive a failed open (a read-only folder) and the loop it reports to.
    engine = create_sync_engine(make_url(url).set(drivername="sqlite"), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _upgrade_on(connection, url, revision)
    finally:
        engine.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database to the latest schema (a no-op when it is current).

    Under the database's migration lock (``rag.db.lock``): processes starting together
    on an empty database take turns, and all but the first find nothing left to do.
    PostgreSQL is migrated through asyncpg (``run_sync``), so it needs no second driver.
    """
    from rag.db.lock import exclusive

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    async with exclusive(url, "migrations"):
        if make_url(url).get_backend_name() == "sqlite":
            await asyncio.to_thread(_upgrade_sqlite, url, revision)
            return
        # Not ``create_engine``'s lock_timeout: a migration waits for readers to finish.
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(_upgrade_on, url, revision)
        finally:
            await engine.dispose()


def upgrade_sync(url: str, revision: str = "head") -> None:
    """``upgrade`` for synchronous callers (tests, benchmarks).

    On a thread of its own, whose event loop comes and goes with it: the caller's
    thread may have a loop of its own set (pytest-asyncio's), which must stay as it is.
    """
    with ThreadPoolExecutor(1) as worker:
        worker.submit(asyncio.run, upgrade(url, revision)).result()
