"""Catalog reads and the derived collection metadata (extent, count, version)."""

from __future__ import annotations

import asyncpg

# What caches and ETags key a collection's data on (service.catalog.Collection.version): its row, its version
# and when that version was made. The version alone repeats: a collection deleted and made again under its id
# counts from 1 again, and a database restored from a backup counts on from the backup's versions while maps
# and proxies still hold ETags of the versions it lost.
VERSION_KEY = "{t}id || '-' || {t}version || '-' || (extract(epoch FROM {t}updated_at) * 1000000)::bigint"

CATALOG = f"""
SELECT c.id AS pk, {VERSION_KEY.format(t="c.")} AS version_key,
       c.slug, c.title, c.description, c.layer_type, c.licence, c.attribution, c.keywords,
       c.visibility, c.created_at, c.updated_at, c.version, c.feature_count, c.bbox,
       c.temporal_start, c.temporal_end, c.history_from, c.history_pruned_through,
       m.id AS m_pk, m.slug AS m_slug, m.name AS m_name, m.ags AS m_ags, m.state AS m_state, m.crs AS m_crs,
       CASE WHEN m.extent IS NULL THEN NULL
            ELSE ARRAY[ST_XMin(m.extent), ST_YMin(m.extent), ST_XMax(m.extent), ST_YMax(m.extent)] END
         AS m_bbox
FROM municipality m LEFT JOIN collection c ON c.municipality_id = m.id
ORDER BY m.slug, c.slug
"""

# The feature trigger keeps a collection's count, extent and validity (and its municipality's extent) up to
# date statement by statement (migration 0013). Bulk writers defer that (`defer_refresh`) and recount once at
# their end (`refresh_collection`, `geotwin_refresh_stats`).
REFRESH_COLLECTION = """
UPDATE collection SET version = version + 1, updated_at = now() WHERE id = $1 RETURNING version
"""


async def fetch_catalog(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(CATALOG)


async def refresh_collection(conn: asyncpg.Connection, collection_pk: int) -> int:
    """Recount a collection's derived metadata and bump its version; returns the new version."""
    version = await conn.fetchval(REFRESH_COLLECTION, collection_pk)
    await conn.execute("SELECT geotwin_refresh_stats(ARRAY[$1::int])", collection_pk)
    return version


# This transaction's feature writes end with `refresh_collection`: the feature trigger need not keep the
# statistics up after each statement (an import writes many batches, a replace first empties the collection).
# A writer that defers must recount at its end.
DEFER = "set_config('geotwin.refresh', 'deferred', true)"


async def defer_refresh(conn: asyncpg.Connection) -> None:
    await conn.execute(f"SELECT {DEFER}")
