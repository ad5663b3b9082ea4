"""uploads in a blob store: documents.blob_uri, and the deletions a store still owes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 16:00:00.000000

Uploads stored before this revision keep ``blob_uri`` empty until the web app starts:
only it knows which folder is the upload folder (``rag.web.upload_store``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("blob_uri", sa.Text(), nullable=True))
    op.create_table(
        "blob_deletions",
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("location"),
    )


def downgrade() -> None:
    op.drop_table("blob_deletions")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("blob_uri")
