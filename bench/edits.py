"""Time single-feature edits (OGC API – Features Part 4) on a collection of the benchmark's 200,000 sites and on
one of 100, through `geotwin serve`, one request at a time: POST a copy of a site, PATCH its name, DELETE it.
Also times the same three statements run with psql-like SQL from outside the service (QGIS on the table).
An edit should cost the same whatever the collection's size.

    .venv/bin/python bench/edits.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import free_port, prepare_data, start  # noqa: E402

from service.cli import _generate  # noqa: E402
from service.generator import Spec  # noqa: E402
from service.localdb import LocalCluster, remembered_port  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.sql.keys import create_key  # noqa: E402

DATA = ROOT / ".data" / "bench"
SMALL = 100


async def setup(dsn: str, sites: int) -> str:
    await prepare_data(dsn, sites, 5_000, 1_000)
    conn = await asyncpg.connect(dsn)
    try:
        small = await conn.fetchval("SELECT c.feature_count FROM collection c JOIN municipality m ON m.id = "
                                    "c.municipality_id WHERE m.slug = 'bench' AND c.slug = 'sites-small'")
    finally:
        await conn.close()
    if small != SMALL:
        await _generate(dsn, "bench", "sites-small", Spec("commercial-site", SMALL, seed=3))
    conn = await asyncpg.connect(dsn)
    try:
        return (await create_key(conn, "bench", "editor", "bench/edits.py"))["key"]
    finally:
        await conn.close()


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered) * 1000, "p90": ordered[int(len(ordered) * 0.9)] * 1000,
            "min": ordered[0] * 1000}


def api_edits(base: str, key: str, collection: str, repeats: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {"POST": [], "PATCH": [], "DELETE": []}
    items = f"{base}/municipalities/bench/collections/{collection}/items"
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
        site = api.get(items, params={"limit": 1}).json()["features"][0]
        body = json.dumps({"type": "Feature", "geometry": site["geometry"], "properties": site["properties"]})
        for i in range(repeats + 2):  # the first two warm the connection and the plans
            t = time.perf_counter()
            created = api.post(items, content=body, headers={"Content-Type": "application/geo+json"})
            posted = time.perf_counter() - t
            assert created.status_code == 201, created.text
            url = created.headers["location"]
            t = time.perf_counter()
            patched = api.patch(url, content=json.dumps({"properties": {"name": f"edit {i}"}}),
                                headers={"If-Match": created.headers["etag"],
                                         "Content-Type": "application/merge-patch+json"})
            patch = time.perf_counter() - t
            assert patched.status_code in (200, 204), patched.text
            t = time.perf_counter()
            deleted = api.delete(url, headers={"If-Match": patched.headers["etag"]})
            delete = time.perf_counter() - t
            assert deleted.status_code in (200, 204), deleted.text
            if i >= 2:
                times["POST"].append(posted)
                times["PATCH"].append(patch)
                times["DELETE"].append(delete)
    return {op: _ms(v) for op, v in times.items()}


async def sql_edits(dsn: str, collection: str, repeats: int) -> dict[str, dict[str, float]]:
    statements = {
        "INSERT": "INSERT INTO feature (collection_id, fid, geom, properties) SELECT collection_id, 'bench-edit', "
                  "geom, properties FROM feature WHERE collection_id = $1 AND fid = $2",
        "UPDATE": "UPDATE feature SET properties = properties || '{\"name\": \"x\"}' "
                  "WHERE collection_id = $1 AND fid = 'bench-edit' AND $2::text IS NOT NULL",
        "DELETE": "DELETE FROM feature WHERE collection_id = $1 AND fid = 'bench-edit' AND $2::text IS NOT NULL",
    }
    times: dict[str, list[float]] = {op: [] for op in statements}
    conn = await asyncpg.connect(dsn)
    try:
        pk = await conn.fetchval("SELECT c.id FROM collection c JOIN municipality m ON m.id = c.municipality_id "
                                 "WHERE m.slug = 'bench' AND c.slug = $1", collection)
        fid = await conn.fetchval("SELECT min(fid) FROM feature WHERE collection_id = $1", pk)
        for i in range(repeats + 2):
            for op, sql in statements.items():
                t = time.perf_counter()
                await conn.execute(sql, pk, fid)
                if i >= 2:
                    times[op].append(time.perf_counter() - t)
    finally:
        await conn.close()
    return {op: _ms(v) for op, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=200_000, help="the large collection's size (bench/run.py's)")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    cluster = LocalCluster(DATA / "pg", remembered_port(DATA, 54339))
    cluster.start()
    dsn = cluster.create_database("geotwin_bench")
    upgrade(dsn)
    key = asyncio.run(setup(dsn, args.sites))
    port = free_port()
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin", "PGDATABASE": "geotwin_bench"}
    server = start([str(ROOT / ".venv" / "bin" / "geotwin"), "serve", "--port", str(port)], env, port, "/schemas")
    results: dict = {"settings": vars(args), "machine": {"cores": os.cpu_count()}, "api": {}, "sql": {}}
    try:
        for collection in ("sites", "sites-small"):
            results["api"][collection] = api_edits(f"http://127.0.0.1:{port}", key, collection, args.repeats)
            results["sql"][collection] = asyncio.run(sql_edits(dsn, collection, args.repeats))
    finally:
        server.terminate()
        server.wait(timeout=30)
    sizes = {"sites": args.sites, "sites-small": SMALL}
    print(f"single edits, one at a time, {args.repeats} each; ms (p50 / p90)")
    print(f"{'':22}" + "".join(f"{f'{sizes[c]:,} features':>22}" for c in sizes))
    for kind in ("api", "sql"):
        for op in results[kind]["sites"]:
            label = f"{'HTTP' if kind == 'api' else 'SQL'} {op}"
            print(f"{label:22}" + "".join(f"{results[kind][c][op]['p50']:>13.1f} / {results[kind][c][op]['p90']:5.1f}"
                                          for c in sizes))
    out = ROOT / "bench" / "results" / time.strftime("edits-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"raw numbers: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
