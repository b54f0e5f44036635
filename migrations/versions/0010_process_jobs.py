"""process jobs: asynchronous runs of the planning tools, their status and results, readable from any worker

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "process_job",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("process_id", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="accepted", nullable=False),
        sa.Column("owner", sa.Text(), server_default="", nullable=False,
                  comment="who started it (key or token subject); empty for anonymous callers"),
        sa.Column("inputs", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("error_status", sa.SmallInteger(), nullable=True, comment="HTTP status of a failed job's error"),
        sa.Column("result", postgresql.BYTEA(), nullable=True),
        sa.Column("media_type", sa.Text(), nullable=True),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('accepted', 'running', 'successful', 'failed', 'dismissed')",
                           name=op.f("ck_process_job_status_values")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_process_job")),
    )
    op.create_index("ix_process_job_owner_created_at", "process_job", ["owner", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_process_job_owner_created_at", table_name="process_job")
    op.drop_table("process_job")
