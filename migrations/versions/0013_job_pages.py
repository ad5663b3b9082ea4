"""jobs.pages_recognised: a job's live progress counts the pages OCR has read

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 20:45:00.000000

OCR is the slow part of a scanned folder (about 2 s a page on 2 cores): a job's files
and chunks barely move while its pages are read, so the count shows that it is working.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Jobs written before this count nothing recognised: 0, like a new job.
    op.add_column(
        "jobs",
        sa.Column("pages_recognised", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("pages_recognised")
