"""Writes: municipalities, collections, features. Each caller wraps them in one transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import asyncpg

from service.models import STORAGE_SRID
from service.sql.catalog import DEFER, VERSION_KEY, defer_refresh, refresh_collection

# The service sets a feature's validity columns from its properties itself (LayerType.validity_of): its
# transactions say so, and the database's trigger that does the same for other writers (migration 0015) stays
# out of their way (an import's 100,000 rows would each run it).
VALIDITY_GIVEN = "set_config('geotwin.validity', 'given', true)"

# (fid, WKB, properties as JSON text, valid_from, valid_to)
FeatureRow = tuple[str, bytes, str, date | None, date | None]

UPSERT_MUNICIPALITY = """
INSERT INTO municipality (slug, name, ags, state, crs) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name, ags = EXCLUDED.ags, state = EXCLUDED.state,
                                 crs = EXCLUDED.crs
RETURNING id
"""

UPSERT_COLLECTION = """
INSERT INTO collection (municipality_id, slug, title, description, layer_type, licence, attribution,
                        keywords, visibility)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (municipality_id, slug) DO UPDATE SET title = EXCLUDED.title,
  description = EXCLUDED.description, layer_type = EXCLUDED.layer_type, licence = EXCLUDED.licence,
  attribution = EXCLUDED.attribution, keywords = EXCLUDED.keywords, visibility = EXCLUDED.visibility,
  updated_at = now()
RETURNING id
"""

# Properties travel as text and are cast once in SQL, so COPY stays binary and codec-free.
STAGE = """
CREATE TEMP TABLE IF NOT EXISTS feature_stage (
  fid text, wkb bytea, properties text, valid_from date, valid_to date) ON COMMIT DELETE ROWS
"""

INSERT_STAGED = f"""
INSERT INTO feature (collection_id, fid, geom, properties, valid_from, valid_to)
SELECT $1, fid, ST_ForcePolygonCCW(ST_Transform(ST_SetSRID(ST_GeomFromWKB(wkb), $2), {STORAGE_SRID})),
       properties::jsonb, valid_from, valid_to
FROM feature_stage
"""


async def upsert_municipality(conn: asyncpg.Connection, slug: str, name: str, ags: str, state: str,
                              crs: int) -> int:
    return await conn.fetchval(UPSERT_MUNICIPALITY, slug, name, ags, state, crs)


async def upsert_collection(conn: asyncpg.Connection, municipality_pk: int, slug: str, title: str,
                            description: str, layer_type: str, licence: str, attribution: str,
                            keywords: Sequence[str], visibility: str) -> int:
    return await conn.fetchval(UPSERT_COLLECTION, municipality_pk, slug, title, description, layer_type,
                               licence, attribution, list(keywords), visibility)


# What an admin may change of a collection, and what `null` (remove) leaves: the title cannot be removed.
DESCRIBABLE = {"title": None, "description": "", "licence": "", "attribution": "", "keywords": [],
               "visibility": "public"}


async def lock_collection(conn: asyncpg.Connection, subject: str, collection_pk: int) -> str | None:
    """Hold the collection's row against every other writer (imports and edits take it first) until commit,
    recording `subject` as the actor; its version key (service.sql.catalog.VERSION_KEY), None when it is gone."""
    await act_as(conn, subject)
    return await conn.fetchval(f"SELECT {VERSION_KEY.format(t='')} FROM collection WHERE id = $1 FOR UPDATE",
                               collection_pk)


async def describe_collection(conn: asyncpg.Connection, collection_pk: int,
                              changes: dict[str, Any]) -> asyncpg.Record:
    """Change what DESCRIBABLE names; the version moves on, so ETags, tiles and caches follow. The new
    version and its key (service.sql.catalog.VERSION_KEY)."""
    unknown = set(changes) - set(DESCRIBABLE)
    if unknown:
        raise ValueError(f"not describable: {sorted(unknown)}")
    sets = "".join(f"{name} = ${i}, " for i, name in enumerate(changes, start=2))
    return await conn.fetchrow(f"UPDATE collection SET {sets}version = version + 1, updated_at = now() "
                               f"WHERE id = $1 RETURNING version, {VERSION_KEY.format(t='')} AS key",
                               collection_pk, *changes.values())


async def delete_collection(conn: asyncpg.Connection, collection_pk: int) -> None:
    """The collection with its features, history and jobs (the foreign keys cascade)."""
    await conn.execute("DELETE FROM collection WHERE id = $1", collection_pk)


async def write_features(conn: asyncpg.Connection, collection_pk: int, rows: Iterable[FeatureRow],
                         source_srid: int, replace: bool = True, refresh: bool = True) -> int:
    """Stage rows with binary COPY, then insert them reprojected into the storage CRS.
    Call inside a transaction; refreshes the collection's metadata and bumps its version (a caller writing
    many batches passes refresh=False and calls `refresh_collection` once at the end)."""
    await defer_refresh(conn)
    await conn.execute(f"SELECT {VALIDITY_GIVEN}")
    await conn.execute(STAGE)
    await conn.execute("TRUNCATE feature_stage")
    await conn.copy_records_to_table("feature_stage", records=rows,
                                     columns=["fid", "wkb", "properties", "valid_from", "valid_to"])
    if replace:
        await conn.execute("DELETE FROM feature WHERE collection_id = $1", collection_pk)
    status = await conn.execute(INSERT_STAGED, collection_pk, source_srid)
    if refresh:
        await refresh_collection(conn, collection_pk)
    return int(status.split()[-1])


# ---------------------------------------------------------------- single-feature edits (OGC API – Features Part 4)

INSERT_STAGED_RETURNING = INSERT_STAGED + " RETURNING fid, change_id"


def _made(n: int) -> str:
    """The If-Match's time, when it names one: the version's change was made then (whole microseconds since
    1970, as `responses.feature_etag` writes them; `extract` gives them exactly, as a numeric)."""
    return f"(${n}::bigint IS NULL OR (extract(epoch FROM updated_at) * 1000000)::bigint = ${n})"


REPLACE = f"""
UPDATE feature SET geom = ST_ForcePolygonCCW(ST_Transform(ST_SetSRID(ST_GeomFromWKB($3), $4), {STORAGE_SRID})),
                   properties = $5::text::jsonb, valid_from = $6, valid_to = $7
WHERE collection_id = $1 AND fid = $2 AND ($8::bigint IS NULL OR change_id = $8) AND {_made(9)}
RETURNING change_id
"""

UPDATE_PROPERTIES = f"""
UPDATE feature SET properties = $3::text::jsonb, valid_from = $4, valid_to = $5
WHERE collection_id = $1 AND fid = $2 AND ($6::bigint IS NULL OR change_id = $6) AND {_made(7)}
RETURNING change_id
"""

DELETE = f"""
DELETE FROM feature WHERE collection_id = $1 AND fid = $2 AND ($3::bigint IS NULL OR change_id = $3) AND {_made(4)}
RETURNING fid
"""


async def act_as(conn: asyncpg.Connection, subject: str, collection_pk: int | None = None,
                 bulk: bool = False) -> None:
    """Who the change log records for this transaction's writes; with `collection_pk`, also the collection's
    row lock, taken before any feature is touched. Every feature write bumps its collection's version (a
    trigger), which locks that row until commit; an import takes the lock first. A writer that took it only at
    the end could hold a feature an import is about to write while waiting for the import: a deadlock. Taken
    first, writers of one collection queue (and they did already, from their version bump to commit).
    A `bulk` writer (an import, a mirror's full resync) writes many statements and recounts the collection once
    at its end (`refresh_collection`); the others leave the statistics to the feature trigger, statement by
    statement."""
    defer = f", {DEFER}" if bulk else ""
    if collection_pk is None:
        await conn.execute(f"SELECT set_config('geotwin.actor', $1, true), {VALIDITY_GIVEN}{defer}", subject)
        return
    await conn.execute(f"SELECT set_config('geotwin.actor', $1, true), {VALIDITY_GIVEN}{defer} FROM collection "
                       "WHERE id = $2 FOR NO KEY UPDATE", subject, collection_pk)


async def existing_ids(conn: asyncpg.Connection, collection_pk: int, fids: list[str]) -> list[str]:
    rows = await conn.fetch("SELECT fid FROM feature WHERE collection_id = $1 AND fid = ANY($2::text[])",
                            collection_pk, fids)
    return [r[0] for r in rows]


async def current_change(conn: asyncpg.Connection, collection_pk: int, fid: str) -> asyncpg.Record | None:
    """The feature's version: its change id and when that change was made."""
    return await conn.fetchrow("SELECT change_id, updated_at FROM feature WHERE collection_id = $1 AND fid = $2",
                               collection_pk, fid)


async def insert_features(conn: asyncpg.Connection, collection_pk: int, rows: list[FeatureRow],
                          source_srid: int) -> list[tuple[str, int]]:
    """Insert checked rows; [(fid, change_id)] in input order. Call inside a transaction."""
    await conn.execute(STAGE)
    await conn.execute("TRUNCATE feature_stage")
    await conn.copy_records_to_table("feature_stage", records=rows,
                                     columns=["fid", "wkb", "properties", "valid_from", "valid_to"])
    out = {r["fid"]: r["change_id"] for r in await conn.fetch(INSERT_STAGED_RETURNING, collection_pk, source_srid)}
    return [(row[0], out[row[0]]) for row in rows]


async def replace_feature(conn: asyncpg.Connection, collection_pk: int, row: FeatureRow | None, fid: str,
                          source_srid: int, expected: int | None, made_at: int | None = None,
                          properties_only: tuple | None = None) -> int | None:
    """Replace geometry and properties (or only the properties) if the feature is still at change
    `expected` (None: any), made at `made_at` (microseconds since 1970; None: whenever); the new change id, or
    None when nothing matched."""
    if properties_only is not None:
        props, start, end = properties_only
        return await conn.fetchval(UPDATE_PROPERTIES, collection_pk, fid, props, start, end, expected, made_at)
    assert row is not None
    _, wkb, props, start, end = row
    return await conn.fetchval(REPLACE, collection_pk, fid, wkb, source_srid, props, start, end, expected, made_at)


async def delete_feature(conn: asyncpg.Connection, collection_pk: int, fid: str, expected: int | None,
                         made_at: int | None = None) -> bool:
    return await conn.fetchval(DELETE, collection_pk, fid, expected, made_at) is not None
