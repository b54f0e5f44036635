"""API keys per municipality, and a change log of every feature write

Keys are stored as SHA-256 hashes of high-entropy secrets (shown once at creation), with a short public
prefix to find them. Every feature row carries the id of its last change (one sequence for the whole
database, so change ids order all writes); statement triggers copy each written row into `feature_change`
with the actor the service sets per transaction (`geotwin.actor`), or the database user for other clients.
Existing features get an initial 'I' (insert) entry, so history and the change feed start complete.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTOR = "COALESCE(NULLIF(current_setting('geotwin.actor', true), ''), session_user::text)"
COLUMNS = "change_id, collection_id, fid, op, actor, geom, properties, valid_from, valid_to"

STATEMENTS = [
    "CREATE SEQUENCE feature_change_seq",
    "ALTER TABLE feature ADD COLUMN change_id bigint NOT NULL DEFAULT nextval('feature_change_seq')",
    """
CREATE OR REPLACE FUNCTION geotwin_feature_next_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.change_id := nextval('feature_change_seq');
  NEW.updated_at := now();
  RETURN NEW;
END $$""",
    """
CREATE TRIGGER feature_next_change BEFORE UPDATE ON feature
  FOR EACH ROW EXECUTE FUNCTION geotwin_feature_next_change()""",
    f"""
CREATE OR REPLACE FUNCTION geotwin_log_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO feature_change ({COLUMNS})
    SELECT change_id, collection_id, fid, 'I', {ACTOR}, geom, properties, valid_from, valid_to FROM new_rows;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO feature_change ({COLUMNS})
    SELECT change_id, collection_id, fid, 'U', {ACTOR}, geom, properties, valid_from, valid_to FROM new_rows;
  ELSE
    INSERT INTO feature_change ({COLUMNS})
    SELECT nextval('feature_change_seq'), o.collection_id, o.fid, 'D', {ACTOR}, NULL, NULL, NULL, NULL
    FROM old_rows o
    -- A collection being deleted takes its features and its history with it: nothing to log.
    WHERE EXISTS (SELECT 1 FROM collection c WHERE c.id = o.collection_id);
  END IF;
  RETURN NULL;
END $$""",
    """
CREATE TRIGGER features_logged_insert AFTER INSERT ON feature REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION geotwin_log_changes()""",
    """
CREATE TRIGGER features_logged_update AFTER UPDATE ON feature REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION geotwin_log_changes()""",
    """
CREATE TRIGGER features_logged_delete AFTER DELETE ON feature REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION geotwin_log_changes()""",
    f"""
INSERT INTO feature_change ({COLUMNS})
SELECT change_id, collection_id, fid, 'I', 'migration 0007', geom, properties, valid_from, valid_to FROM feature""",
    """
CREATE TRIGGER api_key_changed AFTER INSERT OR UPDATE OR DELETE ON api_key
  FOR EACH STATEMENT EXECUTE FUNCTION geotwin_catalog_changed()""",
]


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("municipality_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("label", sa.Text(), server_default="", nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False, comment="public part, to find the key"),
        sa.Column("secret_hash", postgresql.BYTEA(), nullable=False, comment="SHA-256 of the whole key"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'editor', 'admin', 'platform')", name=op.f("ck_api_key_role_values")),
        sa.CheckConstraint("(role = 'platform') = (municipality_id IS NULL)", name=op.f("ck_api_key_platform_scope")),
        sa.ForeignKeyConstraint(["municipality_id"], ["municipality.id"],
                                name=op.f("fk_api_key_municipality_id_municipality"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_key_prefix")),
    )
    op.create_table(
        "feature_change",
        sa.Column("change_id", sa.BigInteger(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("fid", sa.Text(), nullable=False),
        sa.Column("op", sa.String(length=1), nullable=False, comment="I insert, U update, D delete"),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False, comment="key label or token subject; db user otherwise"),
        sa.Column("geom", Geometry(srid=25832, dimension=2, spatial_index=False, from_text="ST_GeomFromEWKT",
                                   name="geometry"), nullable=True),
        sa.Column("properties", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.CheckConstraint("op IN ('I', 'U', 'D')", name=op.f("ck_feature_change_op_values")),
        sa.ForeignKeyConstraint(["collection_id"], ["collection.id"],
                                name=op.f("fk_feature_change_collection_id_collection"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_feature_change")),
    )
    op.create_index("ix_feature_change_collection_id_change_id", "feature_change", ["collection_id", "change_id"])
    op.create_index("ix_feature_change_collection_id_fid_change_id", "feature_change",
                    ["collection_id", "fid", "change_id"])
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS api_key_changed ON api_key")
    for name in ("features_logged_insert", "features_logged_update", "features_logged_delete",
                 "feature_next_change"):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON feature")
    op.execute("DROP FUNCTION IF EXISTS geotwin_log_changes()")
    op.execute("DROP FUNCTION IF EXISTS geotwin_feature_next_change()")
    op.execute("ALTER TABLE feature DROP COLUMN IF EXISTS change_id")
    op.execute("DROP SEQUENCE IF EXISTS feature_change_seq")
    op.drop_table("feature_change")
    op.drop_table("api_key")
