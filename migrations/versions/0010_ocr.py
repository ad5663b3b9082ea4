"""chunks.recognised and chunks.confidence: text read by OCR, and how sure the reader was

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, which SQLite does in place: a batch "move and copy" would rebuild
    # the chunks table and drop the triggers that keep its FTS5 index in step.
    # Every chunk written before OCR existed came from a text layer: false, no confidence.
    op.add_column(
        "chunks",
        sa.Column("recognised", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("chunks", sa.Column("confidence", sa.Float(), nullable=True))


def downgrade() -> None:
    # In place for the same reason (SQLite 3.35+ drops a column without a rebuild).
    with op.batch_alter_table("chunks", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("confidence")
        batch_op.drop_column("recognised")
