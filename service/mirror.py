"""Mirror a collection of another GeoTwin into this database through its change feed, incrementally.

Each run asks the source for the changes after the last one applied (`…/changes?after=n&afterAt=t`, geometry
in the storage CRS so nothing is lost to reprojection; the source answers 410 when change n is gone or was not
made at t, and the copy is read again from the start), checks every feature against the layer type like any other
write, and applies each page in one transaction together with the new cursor: a run that stops half-way
resumes where it stopped, and applying a page twice changes nothing. A feature that arrives as it already
is here is left alone, so this copy's own change log (which a further neighbour may mirror) holds only real
changes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import httpx

from service.crs import epsg_uri, resolve
from service.errors import InvalidData
from service.layertypes import registry
from service.loader import prepare, raise_for
from service.models import STORAGE_SRID
from service.sql.catalog import refresh_collection
from service.sql.write import STAGE, act_as, upsert_collection

UPSERT = f"""
INSERT INTO feature (collection_id, fid, geom, properties, valid_from, valid_to)
SELECT $1, fid, ST_SetSRID(ST_GeomFromWKB(wkb), {STORAGE_SRID}), properties::jsonb, valid_from, valid_to
FROM feature_stage
ON CONFLICT (collection_id, fid) DO UPDATE SET geom = EXCLUDED.geom, properties = EXCLUDED.properties,
  valid_from = EXCLUDED.valid_from, valid_to = EXCLUDED.valid_to
WHERE (feature.geom, feature.properties, feature.valid_from, feature.valid_to)
  IS DISTINCT FROM (EXCLUDED.geom, EXCLUDED.properties, EXCLUDED.valid_from, EXCLUDED.valid_to)
"""

CURSOR = """
INSERT INTO mirror_cursor (collection_id, source, last_change_id, last_change_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (collection_id) DO UPDATE SET source = EXCLUDED.source, last_change_id = EXCLUDED.last_change_id,
  last_change_at = EXCLUDED.last_change_at, updated_at = now()
"""


async def mirror(client: httpx.AsyncClient, source: str, conn: asyncpg.Connection, municipality: str,
                 collection: str, progress: Callable[[int, int], None] | None = None, again: bool = False) -> int:
    """Bring `municipality`/`collection` here up to date with the collection at URL `source`; returns the
    number of changes applied. The collection is created (from the source's metadata) on the first run.
    `again` reads the whole feed again, whatever the cursor says."""
    meta = (await client.get(source)).raise_for_status().json()
    layer = registry().get(meta.get("layerType", {}).get("name", ""))
    if layer is None:
        raise InvalidData(f"{source} is not a GeoTwin collection of a known layer type", parameter="source")
    m_pk = await conn.fetchval("SELECT id FROM municipality WHERE slug = $1", municipality)
    if m_pk is None:
        raise InvalidData(f"no municipality {municipality!r} here: onboard it first", parameter="municipality")
    c_pk = await conn.fetchval("SELECT id FROM collection WHERE municipality_id = $1 AND slug = $2", m_pk, collection)
    if c_pk is None:
        c_pk = await upsert_collection(conn, m_pk, collection, meta.get("title", collection),
                                       f"Mirror of {source}. {meta.get('description', '')}", layer.name,
                                       meta.get("license") or "", meta.get("attribution") or "",
                                       meta.get("keywords") or [], "public")
    cursor = await conn.fetchrow("SELECT last_change_id, last_change_at FROM mirror_cursor WHERE collection_id = $1",
                                 c_pk)
    try:
        if not again:
            return await _follow(client, source, conn, c_pk, layer, *(cursor or (0, None)), progress)
    except _Pruned:
        pass
    # The source pruned changes this copy has not seen (`geotwin history prune`), deletions among them, or was
    # restored from a backup older than this copy's cursor (the cursor's change is no longer there as it was made,
    # even when the source has since handed out its id again): read the whole feed again, which starts with every
    # feature as it was when the history was cut, and drop what it no longer has. One transaction: readers see
    # the old copy until the new one is complete.
    async with conn.transaction():
        alive: dict[str, bool] = {}
        applied = await _follow(client, source, conn, c_pk, layer, 0, None, progress, alive)
        await act_as(conn, f"mirror:{source}", c_pk, bulk=True)
        await conn.execute("DELETE FROM feature WHERE collection_id = $1 AND fid <> ALL($2::text[])", c_pk,
                           [fid for fid, exists in alive.items() if exists])
        await refresh_collection(conn, c_pk)
    return applied


class _Pruned(Exception):
    """The source's change feed answered 410 to this copy's cursor: pruned behind it, or restored to before it."""


async def _follow(client: httpx.AsyncClient, source: str, conn: asyncpg.Connection, c_pk: int, layer: Any,
                  after: int, after_at: datetime | None, progress: Callable[[int, int], None] | None,
                  alive: dict[str, bool] | None = None) -> int:
    """Apply the source's changes after `after` (made at `after_at`, which the source checks), a page per
    transaction; `alive` collects which features exist at the end."""
    url: str | None = f"{source}/changes"
    params: dict[str, Any] | None = {"after": after, "limit": 1000, "crs": epsg_uri(STORAGE_SRID)}
    if after and after_at:  # a cursor from before migration 0018 has no time: the source checks less
        params["afterAt"] = after_at.isoformat()
    applied = 0
    while url:
        answer = await client.get(url, params=params)
        if answer.status_code == 400 and params and "afterAt" in params and _names(answer, "afterAt"):
            del params["afterAt"]  # a source older than this check: follow it as before
            answer = await client.get(url, params=params)
        if answer.status_code == 410 and after:
            raise _Pruned
        page = answer.raise_for_status().json()
        changes = page["changes"]
        if changes:
            await _apply(conn, c_pk, layer, changes, source)
            applied += len(changes)
            if alive is not None:
                alive.update((change["id"], change["feature"] is not None) for change in changes)
            if progress:
                progress(applied, page["latestChangeId"])
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
        params = None
    return applied


def _names(answer: httpx.Response, parameter: str) -> bool:
    try:
        return answer.json().get("parameter") == parameter
    except ValueError:
        return False


async def _apply(conn: asyncpg.Connection, c_pk: int, layer: Any, changes: list[dict[str, Any]], source: str) -> None:
    final: dict[str, dict[str, Any] | None] = {}
    for change in changes:  # each change carries the whole state: the last one per feature is what counts
        final[change["id"]] = change["feature"]
    alive = [f for f in final.values() if f is not None]
    rows, issues = prepare(alive, layer, resolve(f"EPSG:{STORAGE_SRID}"))
    raise_for(issues, f"change feed of {source}")
    gone = [fid for fid, f in final.items() if f is None]
    async with conn.transaction():
        await act_as(conn, f"mirror:{source}", c_pk)  # the collection first, as every writer (see act_as)
        if gone:
            await conn.execute("DELETE FROM feature WHERE collection_id = $1 AND fid = ANY($2::text[])", c_pk, gone)
        if rows:
            await conn.execute(STAGE)
            await conn.execute("TRUNCATE feature_stage")
            await conn.copy_records_to_table("feature_stage", records=rows,
                                             columns=["fid", "wkb", "properties", "valid_from", "valid_to"])
            await conn.execute(UPSERT, c_pk)
        await conn.execute(CURSOR, c_pk, source, changes[-1]["changeId"], datetime.fromisoformat(changes[-1]["at"]))
