"""The Alembic migrations and the SQLAlchemy models describe the same schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from rag.db.engine import alembic_config, upgrade_sync
from rag.db.tables import Base


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade_sync(url)
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, reflected, other: (
                    not (type_ == "table" and str(name).startswith("chunks_fts"))
                ),
            },
        )
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent_and_creates_fts(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade_sync(url)
    upgrade_sync(url)
    with sqlite3.connect(tmp_path / "m.db") as connection:
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        version = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    connection.close()
    assert {"documents", "chunks", "vectors", "chunks_fts", "chunks_fts_insert"} <= names
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert version == [(head,)]


def test_fts_follows_chunk_deletes_through_cascade(tmp_path: Path) -> None:
    upgrade_sync(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    connection = sqlite3.connect(tmp_path / "m.db")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute(
        "INSERT INTO documents (id, source, root, path, title, media_type, sha256, size,"
        " mtime_ns, status, chunker) VALUES ('d', '/r/a.md', '/r', 'a.md', 't', 'text/markdown',"
        " 'x', 1, 0, 'ok', 'c')"
    )
    connection.execute(
        "INSERT INTO chunks (id, document_id, ordinal, text, char_start, char_end, heading_path,"
        " token_count, sha256) VALUES ('c1', 'd', 0, 'zebra crossing', 0, 14, '[]', 2, 's')"
    )
    hits = "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'zebra'"
    assert connection.execute(hits).fetchone() == (1,)
    connection.execute("DELETE FROM documents WHERE id = 'd'")
    assert connection.execute(hits).fetchone() == (0,)
    assert connection.execute("SELECT count(*) FROM chunks").fetchone() == (0,)
    connection.close()
