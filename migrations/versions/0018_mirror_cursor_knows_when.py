"""a mirror's cursor keeps when the source made the change it names

After a restore from an older backup the source hands out the ids the backup lacks again, to other changes.
With the time of the last change applied the mirror asks the feed whether that change is still the one it
applied (`afterAt`), and reads the feed again from the start when it is not, even once the source has caught up.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("mirror_cursor", sa.Column("last_change_at", sa.DateTime(timezone=True), nullable=True,
                                             comment="when the source made the last change applied (its `at`)"))


def downgrade() -> None:
    op.drop_column("mirror_cursor", "last_change_at")
