"""a collection's count, extent and validity are kept up per statement instead of recounted

0012 recounted a collection after every edit: on a collection of 200,000 sites that is a scan of all of them,
about 90 ms, paid by every API edit and by every statement an outside writer (psql, QGIS on the table) runs.
The feature trigger now adds what a statement inserted and takes away what it removed. It scans only when a
removed geometry touched the edge of the extent, and reads the validity index only when a removed feature held
the earliest start or the latest end (or was open-ended). The extent is kept in the storage CRS
(`storage_box`), so adding to it gives exactly what a recount gives; the CRS84 `bbox` is derived from it as
before. `geotwin_refresh_stats` still recounts, for bulk writers that defer (`geotwin.refresh = deferred`) and
to repair.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-22
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from service.models import STORAGE_SRID

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The extent in CRS84 comes from the storage-CRS envelope, densified so that it still covers the data.
CRS84_BBOX = f"""
CREATE OR REPLACE FUNCTION geotwin_crs84_bbox(box float8[]) RETURNS float8[] LANGUAGE sql STABLE AS $$
SELECT CASE WHEN box IS NULL THEN NULL ELSE (
  SELECT ARRAY[ST_XMin(g), ST_YMin(g), ST_XMax(g), ST_YMax(g)]
  FROM ST_Transform(ST_Segmentize(ST_SetSRID(
    ST_MakeBox2D(ST_Point(box[1], box[2]), ST_Point(box[3], box[4]))::geometry, {STORAGE_SRID}), 500), 4326) AS g)
END
$$"""

BOX_ARRAY = """
CREATE OR REPLACE FUNCTION geotwin_box_array(b box2d) RETURNS float8[] LANGUAGE sql IMMUTABLE AS $$
SELECT CASE WHEN b IS NULL THEN NULL ELSE ARRAY[ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b)] END
$$"""

MUNICIPALITY_EXTENT = """
CREATE OR REPLACE FUNCTION geotwin_municipality_extent(ids integer[]) RETURNS void LANGUAGE sql AS $$
-- Only rows whose extent changes are written (and so locked until commit): writers in two collections of one
-- municipality do not wait for each other while its extent stays as it was.
UPDATE municipality m SET extent = e.extent
FROM (SELECT m2.id, (SELECT ST_SetSRID(ST_MakeEnvelope(min(c.bbox[1]), min(c.bbox[2]), max(c.bbox[3]),
                                                        max(c.bbox[4])), 4326)
                     FROM collection c WHERE c.municipality_id = m2.id AND c.bbox IS NOT NULL) AS extent
      FROM municipality m2 WHERE m2.id IN (SELECT municipality_id FROM collection WHERE id = ANY(ids))) AS e
WHERE m.id = e.id AND m.extent IS DISTINCT FROM e.extent
$$"""

# The full recount (bulk writers at their end, repairs).
STATS = """
CREATE OR REPLACE FUNCTION geotwin_refresh_stats(ids integer[]) RETURNS void LANGUAGE sql AS $$
UPDATE collection c SET feature_count = s.n, temporal_start = s.t0, temporal_end = s.t1,
  storage_box = geotwin_box_array(s.box), bbox = geotwin_crs84_bbox(geotwin_box_array(s.box))
FROM unnest(ids) AS i(id) CROSS JOIN LATERAL (
  SELECT count(*) AS n, ST_Extent(geom) AS box, min(valid_from) AS t0,
         CASE WHEN bool_or(valid_to IS NULL) THEN NULL ELSE max(valid_to) END AS t1
  FROM feature WHERE collection_id = i.id) AS s
WHERE c.id = i.id;
SELECT geotwin_municipality_extent(ids);
$$"""

# What one statement did to one collection: features added and removed, the extents of the geometries that
# came and went, and the validity of the rows that came and went (an update that keeps a row's geometry, or its
# validity, neither adds nor removes it there).
DELTA = """
CREATE TYPE geotwin_stats_delta AS (
  id integer, added bigint, removed bigint, add_box box2d, del_box box2d,
  add_from date, add_open boolean, add_to date, del_from date, del_open boolean, del_to date)"""

APPLY = """
CREATE OR REPLACE FUNCTION geotwin_apply_stats(deltas geotwin_stats_delta[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  d geotwin_stats_delta;
  c record;
  n bigint;
  box float8[];
  added float8[];
  gone float8[];
  t0 date;
  t1 date;
  touched integer[] := '{}';
BEGIN
  FOREACH d IN ARRAY deltas LOOP
    -- The row lock orders concurrent writers: each adds to what the one before it committed.
    SELECT feature_count, storage_box, temporal_start, temporal_end INTO c
    FROM collection WHERE id = d.id FOR NO KEY UPDATE;
    CONTINUE WHEN NOT FOUND;
    n := c.feature_count + d.added - d.removed;
    added := geotwin_box_array(d.add_box);
    gone := geotwin_box_array(d.del_box);
    IF n <= 0 THEN
      n := (SELECT count(*) FROM feature WHERE collection_id = d.id);  -- 0, unless the count had drifted
    END IF;
    IF gone IS NULL OR (c.storage_box IS NOT NULL AND gone[1] > c.storage_box[1] AND gone[2] > c.storage_box[2]
                        AND gone[3] < c.storage_box[3] AND gone[4] < c.storage_box[4]) THEN
      box := CASE WHEN c.storage_box IS NULL THEN added WHEN added IS NULL THEN c.storage_box
                  ELSE ARRAY[least(c.storage_box[1], added[1]), least(c.storage_box[2], added[2]),
                             greatest(c.storage_box[3], added[3]), greatest(c.storage_box[4], added[4])] END;
    ELSE  -- a geometry on the edge went: only a scan knows the new edge
      box := geotwin_box_array((SELECT ST_Extent(geom) FROM feature WHERE collection_id = d.id));
    END IF;
    IF n = 0 THEN
      t0 := NULL;
      t1 := NULL;
    ELSE
      IF d.del_from IS NOT NULL AND d.del_from <= c.temporal_start THEN  -- the earliest start may have gone
        t0 := (SELECT valid_from FROM feature WHERE collection_id = d.id AND valid_from IS NOT NULL
               ORDER BY valid_from LIMIT 1);
      ELSE
        t0 := least(c.temporal_start, d.add_from);
      END IF;
      -- temporal_end is NULL while any feature is open-ended (and for an empty collection)
      IF coalesce(d.add_open, false) THEN
        t1 := NULL;
      ELSIF c.feature_count = 0 THEN
        t1 := d.add_to;
      ELSIF (c.temporal_end IS NULL AND coalesce(d.del_open, false))
            OR (c.temporal_end IS NOT NULL AND d.del_to >= c.temporal_end) THEN
        -- ORDER BY steers both to the validity index (collection_id, valid_from, valid_to)
        t1 := CASE WHEN (SELECT true FROM feature WHERE collection_id = d.id AND valid_to IS NULL
                         ORDER BY valid_from, valid_to LIMIT 1) THEN NULL
                   ELSE (SELECT max(valid_to) FROM feature WHERE collection_id = d.id) END;
      ELSIF c.temporal_end IS NULL THEN
        t1 := NULL;
      ELSE
        t1 := greatest(c.temporal_end, d.add_to);
      END IF;
    END IF;
    UPDATE collection SET version = version + 1, updated_at = now(), feature_count = n,
      temporal_start = t0, temporal_end = t1, storage_box = box,
      bbox = CASE WHEN box IS NOT DISTINCT FROM c.storage_box THEN bbox ELSE geotwin_crs84_bbox(box) END
    WHERE id = d.id;
    IF box IS DISTINCT FROM c.storage_box THEN
      touched := touched || d.id;
    END IF;
  END LOOP;
  IF touched <> '{}' THEN
    PERFORM geotwin_municipality_extent(touched);
  END IF;
END $$"""

CHANGED = """
CREATE OR REPLACE FUNCTION geotwin_features_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  deltas geotwin_stats_delta[];
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    UPDATE collection SET version = version + 1, updated_at = now();
    PERFORM geotwin_refresh_stats(ARRAY(SELECT id FROM collection));
    RETURN NULL;
  END IF;
  IF current_setting('geotwin.refresh', true) IS NOT DISTINCT FROM 'deferred' THEN
    -- a bulk writer: it recounts once at its end (geotwin_refresh_stats)
    IF TG_OP = 'INSERT' THEN
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
  END IF;
  IF TG_OP = 'INSERT' THEN
    deltas := ARRAY(
      SELECT ROW(collection_id, count(*), 0, ST_Extent(geom), NULL, min(valid_from), bool_or(valid_to IS NULL),
                 max(valid_to), NULL, NULL, NULL)::geotwin_stats_delta
      FROM new_rows GROUP BY collection_id ORDER BY collection_id);
  ELSIF TG_OP = 'DELETE' THEN
    deltas := ARRAY(
      SELECT ROW(collection_id, 0, count(*), NULL, ST_Extent(geom), NULL, NULL, NULL, min(valid_from),
                 bool_or(valid_to IS NULL), max(valid_to))::geotwin_stats_delta
      FROM old_rows GROUP BY collection_id ORDER BY collection_id);
  ELSE
    deltas := ARRAY(
      WITH pair AS (
        SELECT o.id AS o_id, n.id AS n_id, o.collection_id AS o_c, n.collection_id AS n_c, o.geom AS o_geom,
               n.geom AS n_geom, o.valid_from AS o_from, o.valid_to AS o_to, n.valid_from AS n_from,
               n.valid_to AS n_to,
               o.id IS NULL OR n.id IS NULL OR o.collection_id <> n.collection_id AS moved
        FROM old_rows o FULL JOIN new_rows n ON n.id = o.id),
      side AS (
        SELECT o_c AS c, 0 AS added, moved::int AS removed, NULL::geometry AS add_geom,
               CASE WHEN moved OR o_geom IS DISTINCT FROM n_geom THEN o_geom END AS del_geom,
               moved OR (o_from, o_to) IS DISTINCT FROM (n_from, n_to) AS dated,
               NULL::date AS add_from, NULL::date AS add_to, o_from AS del_from, o_to AS del_to, false AS adds
        FROM pair WHERE o_id IS NOT NULL
        UNION ALL
        SELECT n_c, moved::int, 0, CASE WHEN moved OR o_geom IS DISTINCT FROM n_geom THEN n_geom END, NULL,
               moved OR (o_from, o_to) IS DISTINCT FROM (n_from, n_to), n_from, n_to, NULL, NULL, true
        FROM pair WHERE n_id IS NOT NULL)
      SELECT ROW(c, sum(added), sum(removed), ST_Extent(add_geom), ST_Extent(del_geom),
                 min(add_from) FILTER (WHERE dated AND adds), bool_or(add_to IS NULL) FILTER (WHERE dated AND adds),
                 max(add_to) FILTER (WHERE dated AND adds), min(del_from) FILTER (WHERE dated AND NOT adds),
                 bool_or(del_to IS NULL) FILTER (WHERE dated AND NOT adds),
                 max(del_to) FILTER (WHERE dated AND NOT adds))::geotwin_stats_delta
      FROM side GROUP BY c ORDER BY c);
  END IF;
  PERFORM geotwin_apply_stats(deltas);
  RETURN NULL;
END $$"""


def _revision_0012():
    path = Path(__file__).with_name("0012_stats_follow_every_writer.py")
    spec = importlib.util.spec_from_file_location("geotwin_migration_0012", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.add_column("collection", sa.Column(
        "storage_box", sa.ARRAY(sa.Float()), nullable=True,
        comment="minx, miny, maxx, maxy in the storage CRS: the exact extent `bbox` is derived from"))
    for statement in (CRS84_BBOX, BOX_ARRAY, MUNICIPALITY_EXTENT, STATS, DELTA, APPLY, CHANGED):
        op.execute(statement)
    op.execute("SELECT geotwin_refresh_stats(ARRAY(SELECT id FROM collection))")


def downgrade() -> None:
    before = _revision_0012()
    op.execute(before.STATS)
    op.execute(before.CHANGED)
    op.execute("DROP FUNCTION geotwin_apply_stats(geotwin_stats_delta[])")
    op.execute("DROP TYPE geotwin_stats_delta")
    op.execute("DROP FUNCTION geotwin_municipality_extent(integer[])")
    op.execute("DROP FUNCTION geotwin_box_array(box2d)")
    op.execute("DROP FUNCTION geotwin_crs84_bbox(float8[])")
    op.drop_column("collection", "storage_box")
