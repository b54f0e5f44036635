"""a feature's properties are a JSON object, whoever writes them

QGIS 3.22 (Debian 12's), editing the feature table through its PostgreSQL provider, writes the jsonb column
`properties` as a JSON string that holds the object's text (`"{\"name\": …}"`), not as the object. The API
then served `"properties": "{…}"`, which is not GeoJSON, and filters, sorting and tiles found no properties
in it. A trigger now turns such a string back into the object it holds, whoever wrote it, and refuses
properties that are no object at all (SQLSTATE 23514, check_violation, naming the feature); a JSON null
becomes {}. The trigger's condition is checked in C for every row and is false for an object, so writers
that send objects (the service, imports) pay nothing measurable. Rows written as strings before are repaired
here, in `feature` and in the change log.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_OBJECT = """
CREATE OR REPLACE FUNCTION geotwin_json_object(value jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
-- `value` if it is an object; the object a JSON string holds as text; otherwise NULL.
BEGIN
  IF jsonb_typeof(value) = 'string' THEN
    BEGIN
      value := (value #>> '{}')::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
      RETURN NULL;
    END;
  END IF;
  RETURN CASE WHEN jsonb_typeof(value) = 'object' THEN value END;
END
$$"""

PROPERTIES_OBJECT = """
CREATE OR REPLACE FUNCTION geotwin_properties_object() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.properties = 'null'::jsonb THEN
    NEW.properties := '{}'::jsonb;
  ELSE
    NEW.properties := coalesce(geotwin_json_object(NEW.properties), NEW.properties);
  END IF;
  IF jsonb_typeof(NEW.properties) <> 'object' THEN
    RAISE EXCEPTION 'feature %: properties must be a JSON object; this is a JSON %', NEW.fid, jsonb_typeof(NEW.properties)
      USING ERRCODE = 'check_violation', HINT = 'write them as {"name": "…", …}';
  END IF;
  RETURN NEW;
END
$$"""

TRIGGER = """
CREATE TRIGGER feature_properties_object BEFORE INSERT OR UPDATE OF properties ON feature FOR EACH ROW
WHEN (jsonb_typeof(NEW.properties) IS DISTINCT FROM 'object') EXECUTE FUNCTION geotwin_properties_object()
"""

REPAIR = [
    "SELECT set_config('geotwin.actor', 'migration 0014 (properties written as a string)', true)",
    # Through the trigger: versions, statistics and the change log follow, as for any other write.
    "UPDATE feature SET properties = properties WHERE jsonb_typeof(properties) = 'string' "
    "AND geotwin_json_object(properties) IS NOT NULL",
    "UPDATE feature_change SET properties = geotwin_json_object(properties) WHERE jsonb_typeof(properties) = 'string' "
    "AND geotwin_json_object(properties) IS NOT NULL",
]


def upgrade() -> None:
    op.execute(JSON_OBJECT)
    op.execute(PROPERTIES_OBJECT)
    op.execute(TRIGGER)
    for statement in REPAIR:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS feature_properties_object ON feature")
    op.execute("DROP FUNCTION IF EXISTS geotwin_properties_object()")
    op.execute("DROP FUNCTION IF EXISTS geotwin_json_object(jsonb)")
