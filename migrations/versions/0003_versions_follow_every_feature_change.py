"""versions follow every feature change; catalog changes are announced

Any statement that writes features bumps the version of each collection it touched, whatever wrote it (the
service, the CLI, psql), and every change to municipalities or collections is announced on the
`geotwin_catalog` channel at commit. Caches key on versions and drop their catalog on the announcement,
so no old tile or page stays reachable after a change.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = ["""
CREATE OR REPLACE FUNCTION geotwin_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('geotwin_catalog', TG_TABLE_NAME);
  RETURN NULL;
END $$""", """
CREATE OR REPLACE FUNCTION geotwin_features_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    UPDATE collection SET version = version + 1, updated_at = now();
  ELSIF TG_OP = 'INSERT' THEN
    UPDATE collection SET version = version + 1, updated_at = now()
    WHERE id IN (SELECT DISTINCT collection_id FROM new_rows);
  ELSIF TG_OP = 'DELETE' THEN
    UPDATE collection SET version = version + 1, updated_at = now()
    WHERE id IN (SELECT DISTINCT collection_id FROM old_rows);
  ELSE
    UPDATE collection SET version = version + 1, updated_at = now()
    WHERE id IN (SELECT collection_id FROM old_rows UNION SELECT collection_id FROM new_rows);
  END IF;
  RETURN NULL;
END $$"""]

TRIGGERS = """
CREATE TRIGGER municipality_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON municipality
  FOR EACH STATEMENT EXECUTE FUNCTION geotwin_catalog_changed();
CREATE TRIGGER collection_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON collection
  FOR EACH STATEMENT EXECUTE FUNCTION geotwin_catalog_changed();
CREATE TRIGGER features_inserted AFTER INSERT ON feature REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION geotwin_features_changed();
CREATE TRIGGER features_updated AFTER UPDATE ON feature REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION geotwin_features_changed();
CREATE TRIGGER features_deleted AFTER DELETE ON feature REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION geotwin_features_changed();
CREATE TRIGGER features_truncated AFTER TRUNCATE ON feature
  FOR EACH STATEMENT EXECUTE FUNCTION geotwin_features_changed();
"""


def upgrade() -> None:
    # One statement per execute: asyncpg prepares each, and a prepared statement holds one command.
    for statement in FUNCTIONS + [t for t in TRIGGERS.split(";") if t.strip()]:
        op.execute(statement)


def downgrade() -> None:
    for trigger, table in (("municipality_changed", "municipality"), ("collection_changed", "collection"),
                           ("features_inserted", "feature"), ("features_updated", "feature"),
                           ("features_deleted", "feature"), ("features_truncated", "feature")):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS geotwin_features_changed()")
    op.execute("DROP FUNCTION IF EXISTS geotwin_catalog_changed()")
