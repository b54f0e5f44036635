"""Catalog reads and the derived collection metadata (extent, count, version)."""

from __future__ import annotations

import asyncpg

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

# After GeoTwin's writes to a collection: bump the version, then recompute its count, extent and validity and
# its municipality's extent (`geotwin_refresh_stats`, migration 0012; the feature trigger calls it for writers
# that do not defer it, see `defer_refresh`).
REFRESH_COLLECTION = """
UPDATE collection SET version = version + 1, updated_at = now() WHERE id = $1 RETURNING version
"""


async def fetch_catalog(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(CATALOG)


async def refresh_collection(conn: asyncpg.Connection, collection_pk: int) -> int:
    """Recompute a collection's derived metadata and bump its version; returns the new version."""
    version = await conn.fetchval(REFRESH_COLLECTION, collection_pk)
    await conn.execute("SELECT geotwin_refresh_stats(ARRAY[$1::int])", collection_pk)
    return version


# This transaction's feature writes end with `refresh_collection`: the feature trigger need not recompute the
# statistics after each statement (an import writes many batches). Forgetting it costs time, never correctness.
DEFER = "set_config('geotwin.refresh', 'deferred', true)"


async def defer_refresh(conn: asyncpg.Connection) -> None:
    await conn.execute(f"SELECT {DEFER}")
