"""where each mirrored collection stands in its source's change feed

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mirror_cursor",
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False, comment="the source collection's URL"),
        sa.Column("last_change_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["collection_id"], ["collection.id"],
                                name=op.f("fk_mirror_cursor_collection_id_collection"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("collection_id", name=op.f("pk_mirror_cursor")),
    )


def downgrade() -> None:
    op.drop_table("mirror_cursor")
