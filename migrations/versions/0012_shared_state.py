"""api_budget: the Cloudflare API budget shared by replicas; refusal_memory: degraded mode

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 19:30:00.000000

Both serve ``[cloudflare] state_store = "database"``: ``api_budget`` counts the calls
every process reserves from Cloudflare's account-wide limit and the time until which a
refusal holds them all (``rag.backends.cloudflare.shared_budget``); ``refusal_memory``
keeps the last refusal of every Workers AI call (``rag.retrieval.shared_refusals``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_budget",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        *(sa.Column(f"c{k}", sa.Integer(), nullable=False) for k in range(11)),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("held_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "refusal_memory",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("cf_code", sa.Integer(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("refusal_memory")
    op.drop_table("api_budget")
