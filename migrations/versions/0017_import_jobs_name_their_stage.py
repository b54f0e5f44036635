"""an import job names its stage: reading and converting an XPlanGML file, or checking its features

A job's `processed`/`total` count different things while an XPlanGML file is read (its features, total not
known), converted (its zones) and checked (the zones again): without the stage a client saw the count reset.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("import_job", sa.Column("stage", sa.Text(), nullable=True,
                                          comment="reading, converting (an XPlanGML file) or checking"))


def downgrade() -> None:
    op.drop_column("import_job", "stage")
