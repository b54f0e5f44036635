"""history retention: how far back a collection's change log reaches once `geotwin history prune` has run

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("collection", sa.Column(
        "history_from", sa.DateTime(timezone=True), nullable=True,
        comment="`geotwin history prune`: the change log holds the collection as it was from this time on"))
    op.add_column("collection", sa.Column(
        "history_pruned_through", sa.BigInteger(), server_default="0", nullable=False,
        comment="the highest change id pruned; a feed reader behind it must resync"))


def downgrade() -> None:
    op.drop_column("collection", "history_pruned_through")
    op.drop_column("collection", "history_from")
