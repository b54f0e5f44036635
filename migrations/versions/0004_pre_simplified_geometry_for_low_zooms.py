"""pre-simplified geometry for low zooms

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 02:46:10.481889
"""

from collections.abc import Sequence

from alembic import op

# Frozen here (not imported from the models) so this revision never changes after release.
LEVELS = ((1, 24.0), (2, 6.0))

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Stored generated columns: PostgreSQL computes them on every write, whoever writes.
    for level, tolerance in LEVELS:
        op.execute(f"ALTER TABLE feature ADD COLUMN geom_lod{level} geometry(Geometry, 25832) GENERATED ALWAYS AS "
                   f"(CASE WHEN ST_NPoints(geom) > 64 THEN ST_SimplifyPreserveTopology(geom, {tolerance}) END) STORED")


def downgrade() -> None:
    for level, _ in LEVELS:
        op.execute(f"ALTER TABLE feature DROP COLUMN IF EXISTS geom_lod{level}")
