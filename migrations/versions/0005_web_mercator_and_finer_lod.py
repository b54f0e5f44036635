"""pre-simplified geometry already in Web Mercator, and a third level for z12-13

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not imported from the models) so this revision never changes after release.
COLUMNS = (("geom_lod3", 1.5, 25832, False), ("geom_wm1", 24.0, 3857, True), ("geom_wm2", 6.0, 3857, True),
           ("geom_wm3", 1.5, 3857, True))


def upgrade() -> None:
    for name, tolerance, srid, reproject in COLUMNS:
        simplified = f"ST_SimplifyPreserveTopology(geom, {tolerance})"
        if reproject:
            simplified = f"ST_Transform({simplified}, {srid})"
        op.execute(f"ALTER TABLE feature ADD COLUMN {name} geometry(Geometry, {srid}) GENERATED ALWAYS AS "
                   f"(CASE WHEN ST_NPoints(geom) > 64 THEN {simplified} END) STORED")


def downgrade() -> None:
    for name, *_ in COLUMNS:
        op.execute(f"ALTER TABLE feature DROP COLUMN IF EXISTS {name}")
