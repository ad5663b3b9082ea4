"""PostgreSQL, first class: keyword search over a tsvector, 64-bit sizes and times

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 16:00:00.000000

On PostgreSQL: ``chunks.search_vector``, a generated ``tsvector`` with a GIN index, is
the keyword index (what ``chunks_fts`` is on SQLite); PostgreSQL computes it from the
row itself, so it commits or rolls back with the chunk, as FTS5's triggers do. The
'english' configuration stems as FTS5's porter tokenizer does. ``documents.size`` and
``mtime_ns`` become BIGINT (a file's mtime in nanoseconds is about 1.8e18).

On SQLite nothing changes: FTS5 already serves keyword search, and its INTEGER holds
64 bits.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column("documents", "size", type_=sa.BigInteger(), existing_nullable=False)
    op.alter_column("documents", "mtime_ns", type_=sa.BigInteger(), existing_nullable=False)
    op.execute(
        "ALTER TABLE chunks ADD COLUMN search_vector tsvector "
        "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED"
    )
    op.create_index("ix_chunks_search_vector", "chunks", ["search_vector"], postgresql_using="gin")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_chunks_search_vector", table_name="chunks")
    op.drop_column("chunks", "search_vector")
    op.alter_column("documents", "mtime_ns", type_=sa.Integer(), existing_nullable=False)
    op.alter_column("documents", "size", type_=sa.Integer(), existing_nullable=False)
