"""A collection's count, extent and validity (and its municipality's extent) are kept up statement by statement
by the feature trigger: after any write they equal a full recount, and an edit reads only the rows it touches,
not the collection."""

from __future__ import annotations

import asyncio
import random
from datetime import date, timedelta

import asyncpg
import pytest

STATS = """
SELECT (SELECT json_agg(json_build_array(id, feature_count, storage_box, bbox, temporal_start, temporal_end)
                        ORDER BY id) FROM collection)::text,
       (SELECT json_agg(json_build_array(id, ST_AsText(extent)) ORDER BY id) FROM municipality)::text
"""


async def kept_and_recounted(conn: asyncpg.Connection) -> tuple[tuple, tuple]:
    kept = tuple(await conn.fetchrow(STATS))
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute("SELECT geotwin_refresh_stats(ARRAY(SELECT id FROM collection))")
        recounted = tuple(await conn.fetchrow(STATS))
    finally:
        await tr.rollback()
    return kept, recounted


@pytest.fixture
def own_db(demo_db, request):
    """The demo in a database of this test's own (they write freely)."""
    return demo_db(f"geotwin_stats_{request.node.name[5:40]}")


def _day(rng: random.Random) -> date | None:
    return None if rng.random() < 0.4 else date(2020, 1, 1) + timedelta(days=rng.randrange(3000))


async def test_every_kind_of_write_leaves_the_statistics_a_recount_would_give(own_db):
    """Inserts, moves, property and validity edits, deletes at the edge and inside, features changing
    collection, emptying and refilling: as psql or QGIS on the table would write them."""
    rng = random.Random(20261122)
    conn = await asyncpg.connect(own_db)
    try:
        sites, zones, other = [r[0] for r in await conn.fetch(
            "SELECT c.id FROM collection c JOIN municipality m ON m.id = c.municipality_id "
            "WHERE (m.slug, c.slug) IN (('halle', 'commercial-sites'), ('halle', 'planning-zones'), "
            "('leipzig', 'commercial-sites')) ORDER BY m.slug, c.slug")]
        n = 0

        async def insert(collection: int, count: int, spread: float) -> None:
            nonlocal n
            rows = []
            for _ in range(count):
                n += 1
                start = _day(rng)
                end = None if rng.random() < 0.5 or start is None else start + timedelta(days=rng.randrange(900))
                rows.append((collection, f"s{n}", 705000 + rng.uniform(-spread, spread),
                             5707000 + rng.uniform(-spread, spread), start, end))
            await conn.executemany(
                "INSERT INTO feature (collection_id, fid, geom, properties, valid_from, valid_to) "
                "VALUES ($1, $2, ST_Buffer(ST_SetSRID(ST_Point($3, $4), 25832), 40), '{}', $5, $6)", rows)

        steps = [
            lambda: insert(sites, 5, 3000),
            lambda: insert(other, 3, 50000),
            lambda: conn.execute("INSERT INTO feature (collection_id, fid, geom, properties, valid_from) "
                                 "SELECT $1, 'batch-' || i, ST_SetSRID(ST_Point(700000 + i * 10, 5700000 - i), "
                                 "25832), '{}', DATE '2019-06-01' + i FROM generate_series(1, 50) i", zones),
            # the feature furthest east moves further out, then back inside
            lambda: conn.execute("UPDATE feature SET geom = ST_Translate(geom, 20000, 0) WHERE id = (SELECT id "
                                 "FROM feature WHERE collection_id = $1 ORDER BY ST_XMax(geom) DESC LIMIT 1)", sites),
            lambda: conn.execute("UPDATE feature SET geom = ST_Translate(geom, -25000, 0) WHERE id = (SELECT id "
                                 "FROM feature WHERE collection_id = $1 ORDER BY ST_XMax(geom) DESC LIMIT 1)", sites),
            lambda: conn.execute("UPDATE feature SET properties = properties || '{\"name\": \"x\"}' "
                                 "WHERE collection_id = $1", sites),
            # the earliest start and the latest end go
            lambda: conn.execute("DELETE FROM feature WHERE id = (SELECT id FROM feature WHERE collection_id = $1 "
                                 "AND valid_from IS NOT NULL ORDER BY valid_from LIMIT 1)", zones),
            lambda: conn.execute("UPDATE feature SET valid_to = NULL WHERE collection_id = $1", zones),
            lambda: conn.execute("UPDATE feature SET valid_to = valid_from + 10 WHERE collection_id = $1 "
                                 "AND valid_from IS NOT NULL", zones),
            lambda: conn.execute("DELETE FROM feature WHERE collection_id = $1 AND valid_from IS NULL", zones),
            lambda: conn.execute("DELETE FROM feature WHERE id = (SELECT id FROM feature WHERE collection_id = $1 "
                                 "ORDER BY valid_to DESC NULLS LAST LIMIT 1)", zones),
            # an inner feature goes: nothing but the count changes
            lambda: conn.execute("DELETE FROM feature WHERE id = (SELECT id FROM feature WHERE collection_id = $1 "
                                 "ORDER BY ST_Distance(geom, ST_SetSRID(ST_Centroid((SELECT ST_Extent(geom) "
                                 "FROM feature WHERE collection_id = $1)::geometry), 25832)) LIMIT 1)", sites),
            # features change collection (and municipality)
            lambda: conn.execute("UPDATE feature SET collection_id = $2 WHERE collection_id = $1 AND fid LIKE 's%'",
                                 sites, other),
            lambda: conn.execute("UPDATE feature SET collection_id = $2, fid = fid || '-back' "
                                 "WHERE collection_id = $1 AND fid LIKE 's%'", other, sites),
            lambda: conn.execute("DELETE FROM feature WHERE collection_id = $1", other),
            lambda: insert(other, 1, 10),
            lambda: conn.execute("UPDATE feature SET geom = ST_Translate(geom, 1, 1), valid_from = NULL"),
        ]
        steps += [lambda: insert(rng.choice([sites, zones, other]), rng.randrange(1, 4), 80000)] * 6
        steps += [lambda: conn.execute("DELETE FROM feature WHERE id = (SELECT id FROM feature "
                                       "ORDER BY md5(fid || $1) LIMIT 1)", str(rng.random()))] * 6
        for i, step in enumerate(steps):
            await step()
            kept, recounted = await kept_and_recounted(conn)
            assert kept == recounted, f"after step {i}"
        await conn.execute("TRUNCATE feature CASCADE")
        kept, recounted = await kept_and_recounted(conn)
        assert kept == recounted
        assert await conn.fetchval("SELECT sum(feature_count) FROM collection") == 0
    finally:
        await conn.close()



async def test_concurrent_writers_leave_the_statistics_a_recount_would_give(own_db):
    """Two outside writers at once on the same two collections, statement by statement: inserts far out,
    deletes of the feature on the edge (both may aim at the same one), moves. Each statement's trigger waits for
    the other's to commit and adds to what it left."""
    async def writer(name: str, seed: int) -> None:
        rng = random.Random(seed)
        conn = await asyncpg.connect(own_db)
        try:
            pks = [r[0] for r in await conn.fetch(
                "SELECT c.id FROM collection c JOIN municipality m ON m.id = c.municipality_id "
                "WHERE m.slug IN ('halle', 'leipzig') AND c.slug = 'commercial-sites' ORDER BY m.slug")]
            for i in range(30):
                pk = rng.choice(pks)
                kind = rng.randrange(3)
                if kind == 0:
                    await conn.execute(
                        "INSERT INTO feature (collection_id, fid, geom, properties, valid_from) SELECT $1, "
                        "$2 || '-' || g, ST_SetSRID(ST_Point(705000 + $3 * g, 5707000 - $3 * g), 25832), '{}', "
                        "DATE '2020-01-01' + g FROM generate_series(1, 3) g", pk, f"{name}{i}", rng.uniform(-9e3, 9e3))
                elif kind == 1:
                    await conn.execute("DELETE FROM feature WHERE id = (SELECT id FROM feature WHERE collection_id = "
                                       "$1 ORDER BY ST_XMax(geom) DESC LIMIT 1)", pk)
                else:
                    await conn.execute("UPDATE feature SET geom = ST_Translate(geom, $2, 0), valid_to = valid_from "
                                       "WHERE id = (SELECT id FROM feature WHERE collection_id = $1 ORDER BY "
                                       "md5(fid || $3) LIMIT 1)", pk, rng.uniform(-5e3, 5e3), str(rng.random()))
        finally:
            await conn.close()

    await asyncio.gather(writer("a", 1), writer("b", 2))
    conn = await asyncpg.connect(own_db)
    try:
        kept, recounted = await kept_and_recounted(conn)
        assert kept == recounted
    finally:
        await conn.close()



async def test_an_edit_reads_only_the_rows_it_touches(own_db):
    """In a collection of 5,000 sites, inserting, changing and deleting one site inside the extent reads a
    handful of rows: the statistics are not recounted by scanning the collection."""
    conn = await asyncpg.connect(own_db)
    try:
        pk = await conn.fetchval("SELECT c.id FROM collection c JOIN municipality m ON m.id = c.municipality_id "
                                 "WHERE m.slug = 'halle' AND c.slug = 'commercial-sites'")
        await conn.execute("INSERT INTO feature (collection_id, fid, geom, properties) SELECT $1, 'g' || i, "
                           "ST_SetSRID(ST_Point(700000 + (i % 70) * 100, 5700000 + (i / 70) * 100), 25832), '{}' "
                           "FROM generate_series(1, 5000) i", pk)
        await conn.execute("VACUUM ANALYZE feature")
        edits = [
            "INSERT INTO feature (collection_id, fid, geom, properties) "
            "VALUES ($1, 'inner', ST_SetSRID(ST_Point(703000, 5703000), 25832), '{}')",
            "UPDATE feature SET properties = '{\"name\": \"b\"}' WHERE collection_id = $1 AND fid = 'g2000'",
            "UPDATE feature SET geom = ST_Translate(geom, 5, 5) WHERE collection_id = $1 AND fid = 'g2000'",
            "DELETE FROM feature WHERE collection_id = $1 AND fid = 'inner'",
        ]
        for sql in edits:
            async with conn.transaction():
                await conn.execute(sql, pk)
                read = await conn.fetchval("SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) "
                                           "FROM pg_stat_xact_user_tables WHERE relname = 'feature'")
            assert read < 20, (sql, read)
        kept, recounted = await kept_and_recounted(conn)
        assert kept == recounted
    finally:
        await conn.close()

