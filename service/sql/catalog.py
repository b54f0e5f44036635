"""Catalog reads and the derived collection metadata (extent, count, version)."""

from __future__ import annotations

import asyncpg

from service.models import STORAGE_SRID

CATALOG = """
SELECT c.id AS pk, c.slug, c.title, c.description, c.layer_type, c.licence, c.attribution, c.keywords,
       c.visibility, c.created_at, c.updated_at, c.version, c.feature_count, c.bbox,
       c.temporal_start, c.temporal_end, c.history_from, c.history_pruned_through,
       m.id AS m_pk, m.slug AS m_slug, m.name AS m_name, m.ags AS m_ags, m.state AS m_state, m.crs AS m_crs,
       CASE WHEN m.extent IS NULL THEN NULL
            ELSE ARRAY[ST_XMin(m.extent), ST_YMin(m.extent), ST_XMax(m.extent), ST_YMax(m.extent)] END
         AS m_bbox
FROM municipality m LEFT JOIN collection c ON c.municipality_id = m.id
ORDER BY m.slug, c.slug
"""

# After any data change in a collection: bump the version, recompute count, extent (CRS84, from the
# densified storage-CRS envelope so it covers the data) and temporal extent; then the municipality extent.
REFRESH_COLLECTION = f"""
WITH stats AS (
  SELECT count(*) AS n, ST_Extent(geom) AS box, min(valid_from) AS t0,
         CASE WHEN bool_or(valid_to IS NULL) THEN NULL ELSE max(valid_to) END AS t1
  FROM feature WHERE collection_id = $1
), box84 AS (
  SELECT ST_Extent(ST_Transform(ST_Segmentize(ST_SetSRID(box::geometry, {STORAGE_SRID}), 500), 4326)) AS b
  FROM stats WHERE box IS NOT NULL
)
UPDATE collection c SET
  version = c.version + 1, updated_at = now(), feature_count = stats.n,
  bbox = (SELECT ARRAY[ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b)] FROM box84),
  temporal_start = stats.t0, temporal_end = stats.t1
FROM stats WHERE c.id = $1
RETURNING c.version
"""

REFRESH_MUNICIPALITY = """
UPDATE municipality m SET extent = (
  SELECT ST_SetSRID(ST_MakeEnvelope(min(c.bbox[1]), min(c.bbox[2]), max(c.bbox[3]), max(c.bbox[4])), 4326)
  FROM collection c WHERE c.municipality_id = m.id AND c.bbox IS NOT NULL)
WHERE m.id = $1
"""


async def fetch_catalog(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(CATALOG)


async def refresh_collection(conn: asyncpg.Connection, collection_pk: int) -> int:
    """Recompute a collection's derived metadata and bump its version; returns the new version."""
    version = await conn.fetchval(REFRESH_COLLECTION, collection_pk)
    m_pk = await conn.fetchval("SELECT municipality_id FROM collection WHERE id = $1", collection_pk)
    await conn.execute(REFRESH_MUNICIPALITY, m_pk)
    return version
