"""GeoTwin against tipg and the pure-SQL floor, in one run on one PostGIS (see README, "Benchmarks").

    .venv/bin/python bench/run.py                  # 200k sites + 5k zones of 1,000 vertices, 6 s per measurement
    .venv/bin/python bench/run.py --quick          # small data and short runs, to try the harness

What it does: starts a project-managed PostGIS in .data/bench, loads the generator's layers once, installs
tipg (PyPI) into .data/tipg-venv and points it at views over the same rows, starts GeoTwin twice (tile cache
off = cold, on = warm) and tipg, 2 workers each, and drives them with wrk over fixed, density-weighted tile
and items URL sets: throughput at 8 connections, latency at 1. The floor runs GeoTwin's own SQL for the same
requests straight through asyncpg, without HTTP; GeoTwin and the floor are measured in adjacent pairs, who
goes first alternating (--rounds), and the median of the pairs' ratios is reported. Raw numbers go to
bench/results/<time>.json; one table is printed with the ratios GeoTwin/tipg and GeoTwin/floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import morecantile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.cli import _generate  # noqa: E402
from service.generator import Spec  # noqa: E402
from service.localdb import LocalCluster, remembered_port  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.sql.features import ItemsQuery, count_sql, items_sql  # noqa: E402
from service.sql.tiles import TileLayer, footprint, mvt_sql  # noqa: E402
from service.tiles import tile_ref  # noqa: E402

WM = morecantile.tms.get("WebMercatorQuad")
DATA = ROOT / ".data"
TIPG_VENV = DATA / "tipg-venv"


@dataclass
class Scenario:
    name: str
    kind: str  # tile | items
    collection: str  # GeoTwin collection id
    view: str  # tipg view
    requests: list[dict[str, Any]] = field(default_factory=list)  # z/x/y or limit/offset/bbox


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- data

async def prepare_data(dsn: str, sites: int, zones: int, vertices: int) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("""INSERT INTO municipality (slug, name, ags, state, crs)
            VALUES ('bench', 'Benchstadt', '15099999', 'Sachsen-Anhalt', 25832) ON CONFLICT (slug) DO NOTHING""")
        have = dict(await conn.fetch("SELECT c.slug, c.feature_count FROM collection c JOIN municipality m "
                                     "ON m.id = c.municipality_id WHERE m.slug = 'bench'"))
    finally:
        await conn.close()
    if have.get("sites") != sites:
        print(f"generating {sites:,} commercial sites")
        await _generate(dsn, "bench", "sites", Spec("commercial-site", sites, seed=1))
    if have.get("zones") != zones:
        print(f"generating {zones:,} ecological zones with {vertices:,} vertices each")
        await _generate(dsn, "bench", "zones", Spec("ecological-zone", zones, seed=2, vertices=vertices))
    conn = await asyncpg.connect(dsn)
    try:
        pks = dict(await conn.fetch("SELECT c.slug, c.id FROM collection c JOIN municipality m "
                                    "ON m.id = c.municipality_id WHERE m.slug = 'bench' "
                                    "AND c.slug IN ('sites', 'zones')"))
        # tipg serves tables and views: these show it exactly the rows GeoTwin serves.
        await conn.execute("CREATE SCHEMA IF NOT EXISTS tipg_bench")
        for slug, pk in pks.items():
            await conn.execute(f"CREATE OR REPLACE VIEW tipg_bench.{slug} AS SELECT f.id, f.fid, f.properties, "
                               f"f.geom FROM feature f WHERE f.collection_id = {int(pk)}")
        await conn.execute("VACUUM ANALYZE feature")  # visibility map for index-only scans, fresh statistics
    finally:
        await conn.close()
    return pks


async def sample_points(dsn: str, pk: int, n: int) -> list[tuple[float, float]]:
    """Feature centres, spread over the collection: density-weighted request positions."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform(ST_PointOnSurface(geom), 4326) AS p FROM feature "
            "WHERE collection_id = $1 ORDER BY md5(fid) LIMIT $2) s", pk, n)
        return [(r[0], r[1]) for r in rows]
    finally:
        await conn.close()


def scenarios(points_sites, points_zones, n_sites: int, quick: bool) -> list[Scenario]:
    rng = random.Random(7)
    out = []
    for z in (8, 10, 12, 14, 16):
        s = Scenario(f"tiles z{z} sites", "tile", "sites", "sites")
        s.requests = [dict(z=z, x=t.x, y=t.y) for t in (WM.tile(lon, lat, z) for lon, lat in points_sites)]
        out.append(s)
    for z in (8, 10, 12):
        s = Scenario(f"tiles z{z} zones (1k vertices)", "tile", "zones", "zones")
        s.requests = [dict(z=z, x=t.x, y=t.y) for t in (WM.tile(lon, lat, z) for lon, lat in points_zones)]
        out.append(s)
    for limit in (100, 1000):
        s = Scenario(f"items limit={limit}", "items", "sites", "sites")
        s.requests = [dict(limit=limit, offset=rng.randrange(0, max(1, n_sites - limit))) for _ in range(200)]
        out.append(s)
    s = Scenario("items bbox (limit=100)", "items", "sites", "sites")
    s.requests = [dict(limit=100, bbox=(round(lon - 0.01, 5), round(lat - 0.007, 5), round(lon + 0.01, 5),
                                        round(lat + 0.007, 5))) for lon, lat in points_sites[:200]]
    out.append(s)
    return out


def _items_query(r: dict) -> str:
    q = f"limit={r['limit']}" + (f"&offset={r['offset']}" if "offset" in r else "")
    return q + (f"&bbox={','.join(map(str, r['bbox']))}" if "bbox" in r else "")


def geotwin_path(s: Scenario, r: dict) -> str:
    base = f"/municipalities/bench/collections/{s.collection}"
    if s.kind == "tile":
        return f"{base}/tiles/WebMercatorQuad/{r['z']}/{r['y']}/{r['x']}"  # OGC order: row (y), then col (x)
    return f"{base}/items?{_items_query(r)}"


def tipg_path(s: Scenario, r: dict) -> str:
    base = f"/collections/tipg_bench.{s.view}"
    if s.kind == "tile":
        return f"{base}/tiles/WebMercatorQuad/{r['z']}/{r['x']}/{r['y']}"  # tipg's order: x, then y
    return f"{base}/items?{_items_query(r)}"


# ---------------------------------------------------------------- servers

def start(cmd: list[str], env: dict[str, str], port: int, probe: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.5)
    raise RuntimeError(f"{' '.join(cmd)} did not answer on {port}")


def ensure_tipg() -> Path:
    if not (TIPG_VENV / "bin" / "uvicorn").exists():
        print("installing tipg into .data/tipg-venv (PyPI)")
        subprocess.run([sys.executable, "-m", "venv", str(TIPG_VENV)], check=True)
        subprocess.run([str(TIPG_VENV / "bin" / "pip"), "install", "-q", "tipg", "uvicorn"], check=True)
    return TIPG_VENV / "bin" / "uvicorn"


# ---------------------------------------------------------------- measuring

def wrk(port: int, paths: list[str], connections: int, duration: int, dsn: str) -> dict[str, float]:
    """One wrk measurement; returns once the server has finished what wrk left in flight (see `settle`)."""
    listing = DATA / "bench" / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    threads = min(2, connections)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "30s",
                          "-s", str(ROOT / "bench" / "paths.lua"), f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True, env={**os.environ, "PATHS": str(listing)}, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {m.group(1): _ms(m.group(2), m.group(3)) for m in re.finditer(r"\s(50|99)%\s+([\d.]+)(us|ms|s)\b", out)}
    asyncio.run(settle(dsn))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*timeout (\d+)", out)
    return {"rps": rps, "p50_ms": lat.get("50", float("nan")), "p99_ms": lat.get("99", float("nan")),
            "non_2xx": int(bad.group(1)) if bad else 0, "timeouts": int(errors.group(1)) if errors else 0}


async def settle(dsn: str, limit_s: float = 60.0) -> None:
    """Wait until no query runs in the benchmark database. wrk stops at its deadline with requests still in
    flight; at 8 connections on heavy tiles the server is busy with them for up to a second afterwards, and a
    1-connection measurement started then counted that work in its p99 (z8 zones: 157 ms against ~100 ms
    measured after a pause)."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"):
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over repeated measurements (errors summed: one bad round must show)."""
    out = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
    out.update({k: sum(r[k] for r in runs) for k in ("non_2xx", "timeouts")})
    return out


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def floor(dsn: str, s: Scenario, pk: int, connections: int, duration: int) -> dict[str, float]:
    """GeoTwin's own SQL for the same requests, straight through asyncpg: what PostGIS alone costs."""
    statements = []
    for r in s.requests:
        if s.kind == "tile":
            tile = tile_ref("WebMercatorQuad", r["z"], r["y"], r["x"])
            fp = footprint(tile)
            statements.append(mvt_sql([TileLayer(s.collection, ((pk, "bench"),), False)], tile, fp))
        else:
            q = ItemsQuery(members=[(pk, "bench")], regional=False, multi=True, limit=r["limit"],
                           offset=r.get("offset", 0), bbox=r.get("bbox"))
            # A page and, for a bbox, its count: GeoTwin counts a full page's filter once per collection version
            # and keeps the count, and so does the floor (below). One request is one page.
            statements.append(items_sql(q) + (count_sql(q) if "bbox" in r else (None, None)))
    # As GeoTwin runs them: vector tiles on connections that plan each statement once (its tile pool).
    plans = "force_generic_plan" if s.kind == "tile" else "force_custom_plan"
    pool = await asyncpg.create_pool(dsn, min_size=connections, max_size=connections,
                                     server_settings={"jit": "off", "plan_cache_mode": plans})
    latencies: list[float] = []
    deadline = time.monotonic() + duration
    done = 0
    counted: set[int] = set()

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        async with pool.acquire() as conn:
            while time.monotonic() < deadline:
                n = i % len(statements)
                sql, args, *count = statements[n]
                t = time.perf_counter()
                rows = await conn.fetch(sql, *args)
                if count and count[0] and n not in counted and len(rows) == s.requests[n]["limit"]:
                    counted.add(n)
                    await conn.fetchval(count[0], *count[1])
                latencies.append((time.perf_counter() - t) * 1000)
                done += 1
                i += 1

    start_t = time.monotonic()
    await asyncio.gather(*(worker(k * 7919) for k in range(connections)))
    elapsed = time.monotonic() - start_t
    await pool.close()
    latencies.sort()
    return {"rps": done / elapsed, "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], "non_2xx": 0, "timeouts": 0}


def tipg_layer_features(port: int, s: Scenario) -> int:
    """How many features tipg's tile for the first request holds (it caps them per tile)."""
    import mapbox_vector_tile

    r = httpx.get(f"http://127.0.0.1:{port}{tipg_path(s, s.requests[0])}", timeout=120)
    if r.status_code != 200 or not r.content:
        return 0
    return sum(len(layer["features"]) for layer in mapbox_vector_tile.decode(r.content).values())


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=200_000)
    ap.add_argument("--zones", type=int, default=5_000)
    ap.add_argument("--vertices", type=int, default=1_000)
    ap.add_argument("--duration", type=int, default=6, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=4,
                    help="GeoTwin and the floor are measured in pairs this many times, who goes first alternating "
                         "(an even number balances it); the median counts")
    ap.add_argument("--quick", action="store_true", help="20k sites, 500 zones, 2 s per measurement, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.sites, args.zones, args.duration, args.rounds = 20_000, 500, 2, 1
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    cluster = LocalCluster(DATA / "bench" / "pg", remembered_port(DATA / "bench", 54339))
    cluster.start()
    dsn = cluster.create_database("geotwin_bench")
    upgrade(dsn)
    pks = asyncio.run(prepare_data(dsn, args.sites, args.zones, args.vertices))
    points_sites = asyncio.run(sample_points(dsn, pks["sites"], 300))
    points_zones = asyncio.run(sample_points(dsn, pks["zones"], 100))
    plan = scenarios(points_sites, points_zones, args.sites, args.quick)

    env_db = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin", "PGDATABASE": "geotwin_bench",
              "GEOTWIN_DB_POOL_MAX": "8"}
    geotwin = [str(ROOT / ".venv" / "bin" / "geotwin"), "serve", "--workers", "2", "--port"]
    ports = {"cold": free_port(), "warm": free_port(), "tipg": free_port()}
    procs = [
        start(geotwin + [str(ports["cold"])], {**env_db, "GEOTWIN_CACHE__TILE_CACHE_MB": "0"}, ports["cold"],
              "/schemas"),
        start(geotwin + [str(ports["warm"])], env_db, ports["warm"], "/schemas"),
        start([str(ensure_tipg()), "tipg.main:app", "--workers", "2", "--port", str(ports["tipg"]), "--log-level",
               "warning"], {"DATABASE_URL": dsn, "TIPG_DB_SCHEMAS": '["tipg_bench"]'}, ports["tipg"], "/collections"),
    ]
    results: dict[str, Any] = {"settings": vars(args), "machine": {"cores": os.cpu_count()}, "scenarios": {}}
    try:
        for s in plan:
            gt_paths = [geotwin_path(s, r) for r in s.requests]
            tp_paths = [tipg_path(s, r) for r in s.requests]
            row = {"requests": len(s.requests)}
            print(f"measuring {s.name} ...", flush=True)
            row["tipg"] = {"c8": wrk(ports["tipg"], tp_paths, 8, args.duration, dsn),
                           "c1": wrk(ports["tipg"], tp_paths, 1, args.duration, dsn)}
            # GeoTwin and its floor alternate, so that drift of the machine (±15 % between minutes here)
            # falls on both alike: each GeoTwin measurement sits right beside the floor's at the same number of
            # connections, and who goes first alternates from round to round (ABBA), so neither is always
            # measured on the later, warmer or busier side of the pair. Each figure is the median over the
            # rounds; the ratio to the floor is the median of the rounds' paired ratios. The rounds are kept.
            pk = pks[s.collection]
            rounds: dict[str, list[dict[str, dict[str, float]]]] = {"geotwin": [], "floor": []}
            for k in range(args.rounds):
                measured: dict[str, dict[str, dict[str, float]]] = {"geotwin": {}, "floor": {}}
                for conc in ("c8", "c1"):
                    n = 8 if conc == "c8" else 1
                    # AB BA in round 0, BA AB in round 1, ...: the c1 pair starts with whoever ended the c8 one.
                    order = ("floor", "geotwin") if (k + (conc == "c1")) % 2 else ("geotwin", "floor")
                    for label in order:
                        measured[label][conc] = (wrk(ports["cold"], gt_paths, n, args.duration, dsn)
                                                 if label == "geotwin" else
                                                 asyncio.run(floor(dsn, s, pk, n, args.duration)))
                for label in rounds:
                    rounds[label].append(measured[label])
            for label, runs in rounds.items():
                row[label] = {conc: median_run([r[conc] for r in runs]) for conc in ("c8", "c1")}
                row[label]["rounds"] = runs
            row["floor_ratio_rounds"] = [g["c8"]["rps"] / f["c8"]["rps"] if f["c8"]["rps"] else None
                                         for g, f in zip(rounds["geotwin"], rounds["floor"], strict=True)]
            if s.kind == "tile" and s.requests[0]["z"] == 8:
                row["tipg_features_in_first_tile"] = tipg_layer_features(ports["tipg"], s)
            if s.kind == "tile" and s.collection == "sites" and s.requests[0]["z"] < 10:
                row["note"] = "below the sites' declared minimum zoom (10): GeoTwin answers 204 by design"
            results["scenarios"][s.name] = row
        # Warm cache: the same tiles again from the cache-on instance, after one pass to fill it.
        for s in plan:
            if s.kind != "tile" or s.requests[0]["z"] not in (14, 16) or "sites" not in s.name:
                continue
            paths = [geotwin_path(s, r) for r in s.requests]
            for p in paths:
                httpx.get(f"http://127.0.0.1:{ports['warm']}{p}", timeout=60)
            # Each worker has a cache of its own, and one pass reached only one of them per tile: an untimed
            # run fills the other (without it, the first measured requests rendered tiles: p99 0.56-1.06 s).
            wrk(ports["warm"], paths, 8, 2, dsn)
            row = {"requests": len(paths), "geotwin": {"c8": wrk(ports["warm"], paths, 8, args.duration, dsn),
                                                       "c1": wrk(ports["warm"], paths, 1, args.duration, dsn)}}
            results["scenarios"][f"{s.name} (warm cache)"] = row
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / time.strftime("%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nraw numbers: {out.relative_to(ROOT)}")


def print_table(results: dict[str, Any]) -> None:
    head = (f"{'scenario':34} {'GeoTwin r/s':>11} {'p50':>7} {'p99':>7} {'tipg r/s':>9} {'p50':>7} {'p99':>7} "
            f"{'floor r/s':>9} {'p50':>7} {'GT/tipg':>8} {'GT/floor':>8}")
    print("\nthroughput at 8 connections; p50/p99 in ms at 1 connection\n" + head + "\n" + "-" * len(head))
    for name, row in results["scenarios"].items():
        gt, tp, fl = row.get("geotwin"), row.get("tipg"), row.get("floor")

        def cell(x, key, conc="c8", width=9, fmt="{:.0f}"):
            return f"{fmt.format(x[conc][key]):>{width}}" if x else f"{'':>{width}}"
        ratio_t = f"{gt['c8']['rps'] / tp['c8']['rps']:.2f}" if tp and tp["c8"]["rps"] else ""
        paired = [r for r in row.get("floor_ratio_rounds", []) if r is not None]
        ratio_f = (f"{statistics.median(paired):.2f}" if paired else
                   f"{gt['c8']['rps'] / fl['c8']['rps']:.2f}" if fl and fl["c8"]["rps"] else "")
        print(f"{name:34} {cell(gt, 'rps', width=11)} {cell(gt, 'p50_ms', 'c1', 7, '{:.1f}')} "
              f"{cell(gt, 'p99_ms', 'c1', 7, '{:.1f}')} {cell(tp, 'rps')} {cell(tp, 'p50_ms', 'c1', 7, '{:.1f}')} "
              f"{cell(tp, 'p99_ms', 'c1', 7, '{:.1f}')} {cell(fl, 'rps')} {cell(fl, 'p50_ms', 'c1', 7, '{:.1f}')} "
              f"{ratio_t:>8} {ratio_f:>8}")
        notes = []
        for label, x in (("GeoTwin", gt), ("tipg", tp)):
            if x and (x["c8"]["non_2xx"] or x["c8"]["timeouts"]) and "note" not in row:
                notes.append(f"{label}: {x['c8']['non_2xx']} non-2xx, {x['c8']['timeouts']} timeouts")
        if "tipg_features_in_first_tile" in row:
            notes.append(f"tipg's first tile holds {row['tipg_features_in_first_tile']} features")
        if "note" in row:
            notes.append(row["note"])
        elif len(paired) > 1:
            notes.append("GT/floor by round: " + ", ".join(f"{r:.2f}" for r in paired))
        if notes:
            print(f"{'':34} ({'; '.join(notes)})")


if __name__ == "__main__":
    main()
