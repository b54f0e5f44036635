"""page features by collection and id

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 02:05:23.149702
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_feature_collection_id_id', 'feature', ['collection_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_feature_collection_id_id', table_name='feature')
