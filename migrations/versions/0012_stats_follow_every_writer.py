"""a collection's count, extent and validity follow every writer, psql and QGIS on the database included

Until now only GeoTwin's own writers recomputed them (`refresh_collection`); a feature inserted with psql bumped
the version but left `numberOfFeatures`, the extent (and with it TileJSON's `bounds`, outside which map clients
ask for no tiles) and the municipality's extent as they were. The statistics are one function now, which the
service calls once at the end of its writes and the feature trigger calls for any other writer. The service
says so with the transaction-local setting `geotwin.refresh = deferred`, so an import of many batches still
counts once.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

from service.models import STORAGE_SRID

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The extent in CRS84 comes from the storage-CRS envelope, densified so that it still covers the data.
STATS = f"""
CREATE OR REPLACE FUNCTION geotwin_refresh_stats(ids integer[]) RETURNS void LANGUAGE sql AS $$
UPDATE collection c SET feature_count = s.n, temporal_start = s.t0, temporal_end = s.t1,
  bbox = CASE WHEN s.box IS NULL THEN NULL ELSE (
    SELECT ARRAY[ST_XMin(g), ST_YMin(g), ST_XMax(g), ST_YMax(g)]
    FROM ST_Transform(ST_Segmentize(ST_SetSRID(s.box::geometry, {STORAGE_SRID}), 500), 4326) AS g) END
FROM unnest(ids) AS i(id) CROSS JOIN LATERAL (
  SELECT count(*) AS n, ST_Extent(geom) AS box, min(valid_from) AS t0,
         CASE WHEN bool_or(valid_to IS NULL) THEN NULL ELSE max(valid_to) END AS t1
  FROM feature WHERE collection_id = i.id) AS s
WHERE c.id = i.id;
UPDATE municipality m SET extent = (
  SELECT ST_SetSRID(ST_MakeEnvelope(min(c.bbox[1]), min(c.bbox[2]), max(c.bbox[3]), max(c.bbox[4])), 4326)
  FROM collection c WHERE c.municipality_id = m.id AND c.bbox IS NOT NULL)
WHERE m.id IN (SELECT municipality_id FROM collection WHERE id = ANY(ids));
$$"""

CHANGED = """
CREATE OR REPLACE FUNCTION geotwin_features_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  touched integer[];
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    touched := ARRAY(SELECT id FROM collection);
  ELSIF TG_OP = 'INSERT' THEN
    touched := ARRAY(SELECT DISTINCT collection_id FROM new_rows);
  ELSIF TG_OP = 'DELETE' THEN
    touched := ARRAY(SELECT DISTINCT collection_id FROM old_rows);
  ELSE
    touched := ARRAY(SELECT collection_id FROM old_rows UNION SELECT collection_id FROM new_rows);
  END IF;
  UPDATE collection SET version = version + 1, updated_at = now() WHERE id = ANY(touched);
  IF current_setting('geotwin.refresh', true) IS DISTINCT FROM 'deferred' THEN
    PERFORM geotwin_refresh_stats(touched);
  END IF;
  RETURN NULL;
END $$"""

# As 0003 left it: every write bumps the versions, nothing else.
BEFORE = """
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
END $$"""


def upgrade() -> None:
    op.execute(STATS)
    op.execute(CHANGED)
    # Counts written by psql before this migration are put right once.
    op.execute("SELECT geotwin_refresh_stats(ARRAY(SELECT id FROM collection))")


def downgrade() -> None:
    op.execute(BEFORE)
    op.execute("DROP FUNCTION IF EXISTS geotwin_refresh_stats(integer[])")
