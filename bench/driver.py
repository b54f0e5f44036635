"""Which PostgreSQL driver for the read path: asyncpg or psycopg 3 (async), on the items query's shape.

Usage: python bench/driver.py postgresql://user@host:port/db
Creates a scratch table of 20k polygons, then times pages of 1000 GeoJSON features (assembled in PostGIS,
as the items endpoint does) and a 1-row lookup, values bound, each driver through its own pool, in the same run.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import asyncpg
import psycopg_pool

PAGE = """SELECT json_build_object('type','Feature','id',id,'geometry',ST_AsGeoJSON(ST_Transform(geom,4326),7)::json,
 'properties',props)::text FROM driver_bench WHERE id > {ph} ORDER BY id LIMIT 1000"""
ONE = "SELECT props::text FROM driver_bench WHERE id = {ph}"

SETUP = """
DROP TABLE IF EXISTS driver_bench;
CREATE TABLE driver_bench AS SELECT i AS id,
  ST_Buffer(ST_SetSRID(ST_MakePoint(700000 + (i % 200) * 100, 5700000 + (i / 200) * 100), 25832), 40, 4) AS geom,
  jsonb_build_object('name', 'Fläche ' || i, 'area_ha', i / 100.0, 'zoning', 'GE') AS props
FROM generate_series(1, 20000) i;
ALTER TABLE driver_bench ADD PRIMARY KEY (id);
"""


async def timed(fn, n: int) -> float:
    samples = []
    for i in range(n):
        t = time.perf_counter()
        await fn(i)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


async def main(url: str) -> None:
    setup = await asyncpg.connect(url)
    await setup.execute(SETUP)
    await setup.close()

    apool = await asyncpg.create_pool(url, min_size=2, max_size=2)
    ppool = psycopg_pool.AsyncConnectionPool(url, min_size=2, max_size=2, open=False)
    await ppool.open()

    async def a_page(i):
        async with apool.acquire() as c:
            await c.fetch(PAGE.format(ph="$1"), (i * 1000) % 19000)

    async def p_page(i):
        async with ppool.connection() as c, c.cursor() as cur:
            await cur.execute(PAGE.format(ph="%s"), ((i * 1000) % 19000,))
            await cur.fetchall()

    async def a_one(i):
        async with apool.acquire() as c:
            await c.fetch(ONE.format(ph="$1"), i + 1)

    async def p_one(i):
        async with ppool.connection() as c, c.cursor() as cur:
            await cur.execute(ONE.format(ph="%s"), (i + 1,))
            await cur.fetchall()

    for label, a, p, n in (("page of 1000 features", a_page, p_page, 60), ("one row", a_one, p_one, 2000)):
        await a(0), await p(0)
        ta, tp = await timed(a, n), await timed(p, n)
        print(f"{label:24s} asyncpg {ta:8.3f} ms   psycopg {tp:8.3f} ms   psycopg/asyncpg {tp / ta:5.2f}")
    await apool.close()
    await ppool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
