"""a feature's validity dates follow its properties, whoever writes them

The validity columns (`valid_from`, `valid_to`: what `datetime`, `asOf` reads and the temporal extent use) were
set only by the service, from the properties its layer type names (`designated_on`/`repealed_on` of an
ecological zone, say). A planner who changed `repealed_on` in QGIS on the table, or an UPDATE from psql, left
them as they were: the zone still matched a `datetime` after its repeal.

`layer_type` now holds each layer type's validity keys (kept in step with `schemas/` by `geotwin migrate`), and
a trigger sets the two columns from the properties for writers that are not the service. The service marks its
transactions (`geotwin.validity = given`: it has set the columns from the same properties already), so its
writes, imports among them, do not run the trigger. A value that is not a date (YYYY-MM-DD) is refused with
SQLSTATE 23514 (check_violation), naming the feature and the property. Rows whose columns disagree with their
properties are brought in line here.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.layertypes import sync_layer_types

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROPERTY_DATE = """
CREATE OR REPLACE FUNCTION geotwin_property_date(fid text, properties jsonb, key text) RETURNS date
LANGUAGE plpgsql IMMUTABLE AS $$
-- properties->>key as a date; NULL when there is none; check_violation when it is no YYYY-MM-DD date.
DECLARE
  value text := properties->>key;
BEGIN
  IF value IS NULL THEN
    RETURN NULL;
  END IF;
  IF value ~ '^\\d{4}-\\d{2}-\\d{2}$' THEN
    BEGIN
      RETURN value::date;
    EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
      NULL;
    END;
  END IF;
  RAISE EXCEPTION 'feature %: % must be a date (YYYY-MM-DD), not %', fid, key, left(value, 40)
    USING ERRCODE = 'check_violation';
END
$$"""

VALIDITY = """
CREATE OR REPLACE FUNCTION geotwin_validity_from_properties() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  keys layer_type%ROWTYPE;
BEGIN
  SELECT t.* INTO keys FROM collection c JOIN layer_type t ON t.name = c.layer_type WHERE c.id = NEW.collection_id;
  IF keys.validity_start IS NOT NULL THEN
    NEW.valid_from := geotwin_property_date(NEW.fid, NEW.properties, keys.validity_start);
    NEW.valid_to := geotwin_property_date(NEW.fid, NEW.properties, keys.validity_end);
  END IF;
  RETURN NEW;
END
$$"""

# After feature_properties_object (triggers of one kind fire in name order): the properties are an object.
TRIGGER = """
CREATE TRIGGER feature_validity_from_properties BEFORE INSERT OR UPDATE OF properties, valid_from, valid_to
ON feature FOR EACH ROW WHEN (current_setting('geotwin.validity', true) IS DISTINCT FROM 'given')
EXECUTE FUNCTION geotwin_validity_from_properties()
"""

# Columns that disagree with the properties; a date that is none stays as it was (the UPDATE would fail).
REPAIR = """
UPDATE feature f SET valid_from = (f.properties->>t.validity_start)::date,
                     valid_to = (f.properties->>t.validity_end)::date
FROM collection c JOIN layer_type t ON t.name = c.layer_type
WHERE c.id = f.collection_id AND t.validity_start IS NOT NULL
  AND coalesce(f.properties->>t.validity_start, '2000-01-01') ~ '^\\d{4}-\\d{2}-\\d{2}$'
  AND coalesce(f.properties->>t.validity_end, '2000-01-01') ~ '^\\d{4}-\\d{2}-\\d{2}$'
  AND (f.valid_from IS DISTINCT FROM (f.properties->>t.validity_start)::date
       OR f.valid_to IS DISTINCT FROM (f.properties->>t.validity_end)::date)
"""


def upgrade() -> None:
    op.create_table(
        "layer_type",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("validity_start", sa.Text(), nullable=True,
                  comment="the property holding the start of a feature's validity (schemas/: "
                          "x-geotwin.validity)"),
        sa.Column("validity_end", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_layer_type"),
    )
    sync_layer_types(op.get_bind())
    op.execute(PROPERTY_DATE)
    op.execute(VALIDITY)
    op.execute(TRIGGER)
    op.execute("SELECT set_config('geotwin.actor', 'migration 0015 (validity from the properties)', true)")
    op.execute(REPAIR)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS feature_validity_from_properties ON feature")
    op.execute("DROP FUNCTION IF EXISTS geotwin_validity_from_properties()")
    op.execute("DROP FUNCTION IF EXISTS geotwin_property_date(text, jsonb, text)")
    op.drop_table("layer_type")
