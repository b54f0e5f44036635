"""How close a Python server on uvicorn can come to the SQL floor: GeoTwin, a bare ASGI app and the floor, on
the benchmark's z14 and z16 site tiles (see README, "Benchmarks").

    .venv/bin/python bench/bare.py [--rounds 3] [--duration 6]      # after bench/run.py has loaded its data

The bare app is what a tile server cannot do with less: it takes the tile's address from the path, runs
GeoTwin's statement for it (service.sql.tiles.mvt_sql) on one of four connections it holds, and sends the
bytes. No pool, no catalog, no ETag, no cache, no metrics, no request id, no error answers. It runs with 2
uvicorn workers, as GeoTwin does; wrk drives both with the same URLs, and the floor runs the same statements
through asyncpg without HTTP. The three are measured alternately; medians go to bench/results/bare-<time>.json.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.sql.tiles import TileLayer, footprint, mvt_sql  # noqa: E402
from service.tiles import tile_ref  # noqa: E402

TILE = re.compile(r"/(\d+)/(\d+)/(\d+)$")
_idle: list = []
_waiting: list[asyncio.Future] = []


async def app(scope, receive, send) -> None:
    """The bare ASGI app (BARE_DSN, BARE_COLLECTION: the database and the collection's primary key)."""
    import asyncpg

    if scope["type"] == "lifespan":
        await receive()
        for _ in range(4):
            _idle.append(await asyncpg.connect(os.environ["BARE_DSN"], server_settings={
                "jit": "off", "plan_cache_mode": "force_generic_plan"}))
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    z, row, col = map(int, TILE.search(scope["path"]).groups())
    tile = tile_ref("WebMercatorQuad", z, row, col)
    layer = TileLayer("sites", ((int(os.environ["BARE_COLLECTION"]), "bench"),), False)
    sql, args = mvt_sql([layer], tile, footprint(tile))
    while not _idle:
        _waiting.append(asyncio.get_running_loop().create_future())
        await _waiting[-1]
    conn = _idle.pop()
    try:
        body = await conn.fetchval(sql, *args) or b""
    finally:
        _idle.append(conn)
        if _waiting:
            _waiting.pop(0).set_result(None)
    await send({"type": "http.response.start", "status": 200 if body else 204,
                "headers": [(b"content-type", b"application/vnd.mapbox-vector-tile"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import argparse
    import json
    import statistics
    import time

    sys.path.insert(0, str(ROOT / "bench"))
    import run as bench  # the benchmark's data, URL sets, wrk and floor

    from service.localdb import LocalCluster, remembered_port

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6, help="seconds per measurement")
    args = ap.parse_args()
    cluster = LocalCluster(bench.DATA / "bench" / "pg", remembered_port(bench.DATA / "bench", 54339))
    cluster.start()
    dsn = cluster.create_database("geotwin_bench")
    pks = asyncio.run(bench.prepare_data(dsn, 200_000, 5_000, 1_000))
    points = asyncio.run(bench.sample_points(dsn, pks["sites"], 300))
    plan = [s for s in bench.scenarios(points, points, 200_000, False) if s.name in ("tiles z14 sites",
                                                                                      "tiles z16 sites")]
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin", "PGDATABASE": "geotwin_bench",
           "GEOTWIN_DB_POOL_MAX": "8", "GEOTWIN_CACHE__TILE_CACHE_MB": "0", "BARE_DSN": dsn,
           "BARE_COLLECTION": str(pks["sites"]), "PYTHONPATH": str(ROOT / "bench")}
    ports = {"geotwin": bench.free_port(), "bare": bench.free_port()}
    procs = [bench.start([str(ROOT / ".venv" / "bin" / "geotwin"), "serve", "--workers", "2", "--port",
                          str(ports["geotwin"])], env, ports["geotwin"], "/schemas"),
             bench.start([str(ROOT / ".venv" / "bin" / "uvicorn"), "bare:app", "--workers", "2", "--port",
                          str(ports["bare"]), "--log-level", "warning", "--no-access-log"], env, ports["bare"],
                         bench.geotwin_path(plan[0], plan[0].requests[0]))]
    results: dict = {"settings": vars(args), "scenarios": {}}
    try:
        for s in plan:
            paths = [bench.geotwin_path(s, r) for r in s.requests]
            print(f"measuring {s.name} ...", flush=True)
            runs: dict[str, list[float]] = {"geotwin": [], "bare": [], "floor": []}
            for label in ports:
                bench.wrk(ports[label], paths, 8, 2, dsn)  # untimed: connections opened, statements prepared
            for _ in range(args.rounds):
                for label, port in ports.items():
                    runs[label].append(bench.wrk(port, paths, 8, args.duration, dsn)["rps"])
                runs["floor"].append(asyncio.run(bench.floor(dsn, s, pks["sites"], 8, args.duration))["rps"])
            results["scenarios"][s.name] = {"rounds": runs, "median_rps": {k: statistics.median(v)
                                                                          for k, v in runs.items()}}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    out = ROOT / "bench" / "results" / time.strftime("bare-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{'tiles/s at 8 connections':26} {'GeoTwin':>8} {'bare':>8} {'floor':>8} {'GT/floor':>9} "
          f"{'bare/floor':>11}")
    for name, row in results["scenarios"].items():
        m = row["median_rps"]
        print(f"{name:26} {m['geotwin']:8.0f} {m['bare']:8.0f} {m['floor']:8.0f} {m['geotwin'] / m['floor']:9.2f} "
              f"{m['bare'] / m['floor']:11.2f}")
    print(f"\nraw numbers: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
