"""Exports of N commercial sites over HTTP in every format, against ogr2ogr writing the same rows from the same
PostGIS into the same format, in one run; the service's memory is sampled while it streams.

    .venv/bin/python bench/exports.py                   # 1,000,000 sites, and 100,000 to show memory stays flat
    .venv/bin/python bench/exports.py --sizes 20000 --formats gpkg,csv

GeoTwin runs as `geotwin serve` (one worker) and each export is downloaded whole with httpx and checked: the
file GDAL reads back holds every feature. ogr2ogr reads the same rows through a SQL statement that spreads the
properties into columns and transforms to WGS 84, as the export does, and writes the format GDAL's way
(a zipped Shapefile as `.shp.zip`). Both write the file to the same disk. Memory is the resident set of the
worker and its children (the process GDAL writes in), read from /proc every 50 ms: its growth over the value
just before the export began. Meanwhile a neighbour asks the same worker for a page of 10 items every 100 ms:
its latencies show whether an export holds the worker up for everybody else.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import asyncpg
import httpx
import pyogrio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import free_port, start  # noqa: E402
from service.cli import _generate  # noqa: E402
from service.generator import Spec  # noqa: E402
from service.layertypes import registry  # noqa: E402
from service.localdb import LocalCluster, remembered_port  # noqa: E402
from service.migrate import upgrade  # noqa: E402

DATA = ROOT / ".data" / "bench"
DATABASE = "geotwin_exports"
FORMATS = ("gpkg", "fgb", "shp", "geojson", "csv", "xlsx")
OGR = {"gpkg": ("GPKG", "gpkg", []), "fgb": ("FlatGeobuf", "fgb", ["-lco", "SPATIAL_INDEX=NO"]),
       "shp": ("ESRI Shapefile", "shp.zip", ["-lco", "ENCODING=UTF-8"]), "geojson": ("GeoJSON", "geojson", []),
       "csv": ("CSV", "csv", ["-lco", "GEOMETRY=AS_WKT"]), "xlsx": ("XLSX", "xlsx", [])}
SQL_TYPES = {"string": "text", "number": "float8", "integer": "int8", "boolean": "boolean", "date": "date"}


async def prepare(dsn: str, n: int) -> int:
    """A collection `export-N` of N generated sites (kept between runs), its primary key."""
    slug = f"export-{n}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("""INSERT INTO municipality (slug, name, ags, state, crs)
            VALUES ('bench', 'Benchstadt', '15099999', 'Sachsen-Anhalt', 25832) ON CONFLICT (slug) DO NOTHING""")
        have = await conn.fetchval("SELECT c.feature_count FROM collection c JOIN municipality m ON m.id = "
                                   "c.municipality_id WHERE m.slug = 'bench' AND c.slug = $1", slug)
    finally:
        await conn.close()
    if have != n:
        print(f"generating {n:,} commercial sites")
        await _generate(dsn, "bench", slug, Spec("commercial-site", n, seed=3))
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT c.id FROM collection c JOIN municipality m ON m.id = c.municipality_id "
                                   "WHERE m.slug = 'bench' AND c.slug = $1", slug)
    finally:
        await conn.close()


def ogr_sql(pk: int) -> str:
    """The rows as ogr2ogr should read them: one column per property, WGS 84, the export's order."""
    kinds = registry()["commercial-site"].property_kinds()
    cols = ", ".join(f"(properties ->> '{name}')::{SQL_TYPES[kind]} AS {name}" for name, kind in kinds.items())
    return (f"SELECT fid AS id, {cols}, ST_Transform(geom, 4326) AS geometry FROM feature "
            f"WHERE collection_id = {int(pk)} ORDER BY id")


def features_in(path: Path, fmt: str) -> int:
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return sum(1 for _ in csv.reader(handle)) - 1
    name = f"/vsizip/{path}" if fmt == "shp" else str(path)
    return pyogrio.read_info(name, force_feature_count=True)["features"]


class Sampler:
    """Work in a thread while the export runs: `run` until `stop` is set."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


class Memory(Sampler):
    """The resident set of one process, sampled in a thread: `peak` over the value at the start."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid
        self.start = self.peak = self.rss()

    def rss(self) -> int:
        """The worker's resident set and its children's (the process GDAL writes a file in)."""
        total = 0
        for pid in [self.pid, *self.children()]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:  # a child that has just ended
                continue
        return total

    def children(self) -> list[int]:
        found = []
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                found += [int(pid) for pid in (task / "children").read_text().split()]
            except OSError:
                continue
        return found

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, self.rss())


class Neighbour(Sampler):
    """Another user of the same worker during the export: a small page every 100 ms, its latencies kept. An
    export that held the worker's event loop would show here as long waits."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url, self.latencies = url, []

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            client.get(self.url).raise_for_status()  # not counted: the first asks the database for the count
            while not self.stop.wait(0.1):
                started = time.perf_counter()
                client.get(self.url).raise_for_status()
                self.latencies.append(time.perf_counter() - started)

    def summary(self) -> dict[str, float]:
        ms = sorted(x * 1000 for x in self.latencies) or [0.0]
        return {"neighbour_requests": len(self.latencies), "neighbour_p50_ms": ms[len(ms) // 2],
                "neighbour_p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))], "neighbour_max_ms": ms[-1]}


def geotwin(base: str, pid: int, n: int, fmt: str, target: Path) -> dict[str, float]:
    url = f"{base}/municipalities/bench/collections/export-{n}/export?f={fmt}"
    neighbour = Neighbour(f"{base}/municipalities/bench/collections/export-{n}/items?limit=10")
    with Memory(pid) as memory, neighbour:
        started = time.perf_counter()
        first = None
        with httpx.stream("GET", url, timeout=1800) as answer, target.open("wb") as out:
            answer.raise_for_status()
            for chunk in answer.iter_bytes(1 << 20):
                if first is None:
                    first = time.perf_counter() - started
                out.write(chunk)
        seconds = time.perf_counter() - started
    return {"s": seconds, "first_byte_s": first or seconds, "rss_before_mb": memory.start / 2**20,
            "rss_growth_mb": (memory.peak - memory.start) / 2**20, **neighbour.summary()}


def ogr2ogr(cluster: LocalCluster, pk: int, fmt: str, target: Path) -> float:
    driver, _, options = OGR[fmt]
    source = f"PG:host=127.0.0.1 port={cluster.port} user=geotwin dbname={DATABASE}"
    started = time.perf_counter()
    subprocess.run(["ogr2ogr", "-f", driver, str(target), source, "-sql", ogr_sql(pk), "-nln", "sites",
                    "-nlt", "PROMOTE_TO_MULTI", *options], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin"})
    return time.perf_counter() - started


def measure(cluster: LocalCluster, base: str, pid: int, sizes: list[int], formats: list[str], repeats: int,
            pks: dict[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Neighbour(f"{base}/municipalities/bench/collections/export-{sizes[0]}/items?limit=10") as alone:
        time.sleep(5)  # the same page with no export running: what the neighbour's numbers compare with
    out["no export"] = {"format": "-", "features": 0, **alone.summary()}
    print(f"  no export: a neighbour's page p99 {out['no export']['neighbour_p99_ms']:.0f} ms", flush=True)
    with tempfile.TemporaryDirectory(prefix="geotwin-bench-export-", dir=DATA) as scratch:
        for n in sizes:
            for fmt in formats:
                mine, theirs, rows = [], [], {}
                for _ in range(repeats):
                    target = Path(scratch) / f"geotwin.{'zip' if fmt == 'shp' else fmt}"
                    mine.append(geotwin(base, pid, n, fmt, target))
                    rows["geotwin"], size = features_in(target, fmt), target.stat().st_size
                    target.unlink()
                    target = Path(scratch) / f"ogr.{OGR[fmt][1]}"
                    theirs.append(ogr2ogr(cluster, pks[n], fmt, target))
                    rows["ogr2ogr"], ogr_size = features_in(target, fmt), target.stat().st_size
                    target.unlink()
                if rows["geotwin"] != n:
                    raise SystemExit(f"the {fmt} export of {n:,} sites holds {rows['geotwin']:,} features")
                seconds = statistics.median(r["s"] for r in mine)
                out[f"{fmt} {n}"] = {
                    "features": n, "format": fmt, "geotwin_s": seconds, "ogr2ogr_s": statistics.median(theirs),
                    "ratio": statistics.median(theirs) / seconds, "bytes": size, "ogr2ogr_bytes": ogr_size,
                    "first_byte_s": statistics.median(r["first_byte_s"] for r in mine),
                    "rss_growth_mb": max(r["rss_growth_mb"] for r in mine),
                    "rss_before_mb": mine[0]["rss_before_mb"], "runs": mine, "ogr2ogr_runs": theirs,
                    "neighbour_p99_ms": max(r["neighbour_p99_ms"] for r in mine),
                    "neighbour_max_ms": max(r["neighbour_max_ms"] for r in mine)}
                print(f"  {fmt:8} {n:>9,}: {seconds:6.1f} s (ogr2ogr {statistics.median(theirs):6.1f} s), "
                      f"+{out[f'{fmt} {n}']['rss_growth_mb']:.0f} MB, a neighbour's page p99 "
                      f"{out[f'{fmt} {n}']['neighbour_p99_ms']:.0f} ms", flush=True)
    return out


def print_exports(result: dict[str, Any]) -> None:
    print("\nexports over HTTP, one worker (median of the runs; ratio = ogr2ogr's time / GeoTwin's, so above 1 "
          "is faster than ogr2ogr)")
    print("  (neighbour: a page of 10 items asked of the same worker every 100 ms during the export, in ms)")
    print(f"  {'format':8} {'features':>9} {'GeoTwin s':>10} {'ogr2ogr s':>10} {'ratio':>6} {'first byte':>10} "
          f"{'MB':>7} {'worker +MB':>10} {'nb p99':>7} {'nb max':>7}")
    for row in result["exports"].values():
        if row["format"] == "-":
            print(f"  {'no export':8} {'':>9} {'':>10} {'':>10} {'':>6} {'':>10} {'':>7} {'':>10} "
                  f"{row['neighbour_p99_ms']:>7.0f} {row['neighbour_max_ms']:>7.0f}")
            continue
        print(f"  {row['format']:8} {row['features']:>9,} {row['geotwin_s']:>10.1f} {row['ogr2ogr_s']:>10.1f} "
              f"{row['ratio']:>6.2f} {row['first_byte_s']:>9.1f}s {row['bytes'] / 2**20:>7.0f} "
              f"{row['rss_growth_mb']:>10.0f} {row['neighbour_p99_ms']:>7.0f} {row['neighbour_max_ms']:>7.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="collection sizes, comma-separated")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--repeats", type=int, default=1, help="runs per format and size (medians are printed)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    formats = [f for f in args.formats.split(",") if f]
    if unknown := set(formats) - set(FORMATS):
        raise SystemExit(f"--formats: unknown {', '.join(sorted(unknown))}; known: {', '.join(FORMATS)}")
    cluster = LocalCluster(DATA / "pg", remembered_port(DATA, 54339))
    cluster.start()
    dsn = cluster.create_database(DATABASE)
    upgrade(dsn)
    pks = {n: asyncio.run(prepare(dsn, n)) for n in sizes}
    port = free_port()
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin", "PGDATABASE": DATABASE}
    server = start([str(ROOT / ".venv" / "bin" / "geotwin"), "serve", "--workers", "1", "--port", str(port)], env,
                   port, "/ready")
    try:
        result = {"sizes": sizes, "repeats": args.repeats, "machine": {"cores": os.cpu_count()},
                  "exports": measure(cluster, f"http://127.0.0.1:{port}", server.pid, sizes, formats, args.repeats,
                                     pks)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    print_exports(result)
    out = ROOT / "bench" / "results" / time.strftime("exports-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(result, indent=2))
    print(f"raw numbers: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    os.environ.setdefault("PGAPPNAME", "geotwin-bench")
    main()
