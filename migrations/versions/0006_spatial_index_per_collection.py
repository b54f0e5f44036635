"""spatial index led by the collection: a tile reads only its own collection's rows

The plain GiST index on geom matched every collection's rows in a tile's box (131,788 index hits for the
3,250 zones of one z8 tile beside 200k sites) and left the collection to a BitmapAnd. btree_gist lets the
collection id lead a GiST index; queries on geom alone still use it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # btree_gist is a trusted extension (PostgreSQL >= 13): the database owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.execute("CREATE INDEX ix_feature_collection_id_geom ON feature USING gist (collection_id, geom)")
    op.execute("DROP INDEX IF EXISTS ix_feature_geom")


def downgrade() -> None:
    op.execute("CREATE INDEX ix_feature_geom ON feature USING gist (geom)")
    op.execute("DROP INDEX IF EXISTS ix_feature_collection_id_geom")
