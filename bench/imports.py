"""File imports against ogr2ogr into the same PostGIS, in one run: GeoPackage and GeoJSON of N commercial sites
taken from the benchmark data, plus a plain COPY of the same rows as the floor.

    .venv/bin/python bench/imports.py            # 100,000 sites (files cached under .data/bench/files)
    .venv/bin/python bench/imports.py --n 20000 --repeats 1 --memory 2000,20000 --xplan 2000

Memory: each of the sizes in --memory (default 20,000 and 200,000 sites, ten times as many) is imported once
more per format in a process of its own, whose resident memory is read before the import and at its peak;
the growth must not follow the file's size. So are XPlanGML plans of the sizes in --xplan (default 2,000,
20,000 and 100,000 zones: the fixture's plan with its first building zone repeated), with their time.

GeoTwin's import includes everything a real import does: the checks of every feature (geometry and layer
type), the staging table, the move into `feature` with its indexes, generated columns and change log.
ogr2ogr loads into a plain table of its own with a GiST index (`-lco SPATIAL_INDEX=GIST`), as it would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyogrio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import prepare_data  # noqa: E402
from service.importer import import_file  # noqa: E402
from service.layertypes import registry  # noqa: E402
from service.localdb import LocalCluster, remembered_port  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.sources import ImportOptions  # noqa: E402
from service.sql.write import upsert_collection  # noqa: E402

DATA = ROOT / ".data" / "bench"
SITES = registry()["commercial-site"]
PLAN = ROOT / "fixtures" / "xplan" / "halle-bplan-214.gml"
KINDS = SITES.property_kinds()
TYPES = {"string": pa.string(), "number": pa.float64(), "integer": pa.int64(), "boolean": pa.bool_(),
         "date": pa.string()}


async def make_files(dsn: str, n: int, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {"gpkg": directory / f"sites-{n}.gpkg", "geojson": directory / f"sites-{n}.geojson"}
    if all(p.exists() for p in files.values()):
        return files
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT f.fid, f.properties::text AS p, ST_AsBinary(f.geom) AS wkb FROM feature f JOIN collection c "
            "ON c.id = f.collection_id JOIN municipality m ON m.id = c.municipality_id "
            "WHERE m.slug = 'bench' AND c.slug = 'sites' ORDER BY f.id LIMIT $1", n)
    finally:
        await conn.close()
    props = [json.loads(r["p"]) for r in rows]
    columns = {"id": pa.array([r["fid"] for r in rows], pa.string())}
    for name, kind in KINDS.items():
        columns[name] = pa.array([p.get(name) for p in props], TYPES[kind])
    columns["geometry"] = pa.array([r["wkb"] for r in rows], pa.binary())
    schema = pa.schema([pa.field(k, v.type) for k, v in columns.items() if k != "geometry"]
                       + [pa.field("geometry", pa.binary(), metadata={b"ARROW:extension:name": b"geoarrow.wkb"})])
    table = pa.table(list(columns.values()), schema=schema)
    for fmt, path in files.items():
        partial = path.with_name(f"partial-{path.name}")  # renamed when complete: an interrupted run leaves no
        partial.unlink(missing_ok=True)                    # half-written file that a later run would trust
        pyogrio.write_arrow(table, partial, layer="sites", driver="GPKG" if fmt == "gpkg" else "GeoJSON",
                            geometry_name="geometry", geometry_type="Polygon", crs="EPSG:25832")
        partial.rename(path)
    return files


def ogr2ogr(path: Path, cluster: LocalCluster, database: str) -> float:
    target = f"PG:host=127.0.0.1 port={cluster.port} user=geotwin dbname={database}"
    started = time.perf_counter()
    subprocess.run(["ogr2ogr", "-f", "PostgreSQL", target, str(path), "-nln", "ogr_import", "-overwrite",
                    "-lco", "SPATIAL_INDEX=GIST", "-lco", "GEOMETRY_NAME=geom", "--config", "PG_USE_COPY", "YES"],
                   check=True, capture_output=True, env={"PATH": "/usr/bin:/bin"})
    return time.perf_counter() - started


async def geotwin(dsn: str, path: Path, layer_type: str = SITES.name) -> tuple[float, int]:
    conn = await asyncpg.connect(dsn)
    try:
        m_pk = await conn.fetchval("SELECT id FROM municipality WHERE slug = 'bench'")
        pk = await upsert_collection(conn, m_pk, "import-bench", "import benchmark", "", layer_type, "", "",
                                     [], "internal")
        try:
            started = time.perf_counter()
            report = await import_file(conn, pk, registry()[layer_type], path, ImportOptions(mode="replace"))
            return time.perf_counter() - started, report.imported
        finally:
            await conn.execute("DELETE FROM collection WHERE id = $1", pk)  # takes its features and log along
    finally:
        await conn.close()


async def plain_copy(dsn: str, path: Path) -> float:
    """The floor: the file's rows COPYed into a bare table (what any loader must at least pay)."""
    table = pyogrio.read_arrow(str(path))[1]
    records = list(zip(table.column("id").to_pylist(), table.column("geom").to_pylist(), strict=True))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS copy_floor")
        await conn.execute("CREATE TABLE copy_floor (fid text, wkb bytea)")
        started = time.perf_counter()
        await conn.copy_records_to_table("copy_floor", records=records)
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE copy_floor")
        return elapsed
    finally:
        await conn.close()


async def quiet(dsn: str) -> None:
    """Start every measurement from the same state: the previous one's leftovers vacuumed (a collection's
    100,000 deleted features left autovacuum busy for seconds, on one of the two cores, during whichever loader
    came next) and no autovacuum worker running."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS ogr_import")
        await conn.execute("VACUUM (ANALYZE) feature, feature_change")
        while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
                                  "AND datname = current_database()"):
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


def make_plan(n: int, directory: Path) -> Path:
    """An XPlanGML plan of n building zones: the fixture's plan and area, its first building zone repeated on a
    grid (new gml:ids, coordinates shifted by 700 m and 300 m), written as it is made."""
    path = directory / f"plan-{n}.gml"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    text = PLAN.read_text()
    members = [m.start() for m in re.finditer(r"  <gml:featureMember>", text)]
    zone = next(i for i, start in enumerate(members) if "BP_BaugebietsTeilFlaeche" in text[start:start + 120])
    head, block, tail = text[:members[zone]], text[members[zone]:members[zone + 1]], text.rsplit("</", 1)[1]
    gml_id = re.search(r'gml:id="([^"]+)"', block)[1]
    partial = path.with_name(f"partial-{path.name}")
    with partial.open("w") as out:
        out.write(head)
        for k in range(n):
            out.write(_shifted(block.replace(gml_id, f"{gml_id}-{k}"), (k % 200) * 700, (k // 200) * 300))
        out.write("</" + tail)
    partial.rename(path)
    return path


def _shifted(block: str, dx: float, dy: float) -> str:
    """The XML with its gml:posLists' coordinates (x y pairs) moved by dx, dy."""
    def move(m: re.Match[str]) -> str:
        values = m[1].split()
        return ">" + " ".join(f"{float(v) + (dy if i % 2 else dx):.15g}" for i, v in enumerate(values)) + "<"
    return re.sub(r">([0-9. ]+)<(?=/gml:posList>)", move, block)


def _make_files(dsn: str, n: int, directory: Path) -> dict[str, Path]:
    return asyncio.run(make_files(dsn, n, directory))


def measure(cluster: LocalCluster, database: str, n: int, repeats: int) -> dict[str, Any]:
    """Each loader `repeats` times per format, alternating, each from a quiet database; medians."""
    dsn = cluster.url(database)
    # Made in a process of its own: its table of N rows must not count in this process's peak memory, which
    # is reported as the importer's (with the files made here it read 482-492 MB, without ~300-330 MB).
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
        files = child.submit(_make_files, dsn, n, DATA / "files").result()
    out: dict[str, Any] = {"features": n, "repeats": repeats}
    for fmt, path in files.items():
        ogr_s, geotwin_s = [], []
        for _ in range(repeats):
            asyncio.run(quiet(dsn))
            ogr_s.append(ogr2ogr(path, cluster, database))
            asyncio.run(quiet(dsn))
            seconds, imported = asyncio.run(geotwin(dsn, path))
            if imported != n:
                raise SystemExit(f"GeoTwin imported {imported:,} of {n:,} features from {path.name}")
            geotwin_s.append(seconds)
        ogr, mine = statistics.median(ogr_s), statistics.median(geotwin_s)
        out[fmt] = {"bytes": path.stat().st_size, "ogr2ogr_per_s": n / ogr, "geotwin_per_s": n / mine,
                    "ratio": ogr / mine, "ogr2ogr_s": ogr_s, "geotwin_s": geotwin_s}
    asyncio.run(quiet(dsn))
    out["copy_floor_per_s"] = n / asyncio.run(plain_copy(dsn, files["gpkg"]))
    return out


def _resident_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak) of this process. Not getrusage's ru_maxrss: Linux carries that over an
    exec, so a spawned child reports the peak of the parent it was forked from (it read 1,039 MB for
    every import here)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _import_alone(dsn: str, path: str, layer_type: str = SITES.name) -> dict[str, float]:
    """One import in this (fresh) process: resident memory before it, once the importer's modules are loaded, and
    the process's peak."""
    before = _resident_mb("VmRSS")
    seconds, imported = asyncio.run(geotwin(dsn, Path(path), layer_type))
    return {"features": imported, "seconds": seconds, "before_mb": before, "peak_mb": _resident_mb("VmHWM")}


def memory(dsn: str, sizes: list[int], plans: list[int]) -> dict[str, dict[str, dict[str, float]]]:
    """Each size and format imported once, each import in a process of its own (the files are made in
    another one, so their rows never count); then the XPlanGML plans."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    spawn = multiprocessing.get_context("spawn")
    for n in sizes:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
            files = child.submit(_make_files, dsn, n, DATA / "files").result()
        for fmt, path in files.items():
            asyncio.run(quiet(dsn))
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
                one = child.submit(_import_alone, dsn, str(path)).result()
            if one["features"] != n:
                raise SystemExit(f"GeoTwin imported {one['features']:,} of {n:,} features from {path.name}")
            out.setdefault(fmt, {})[str(n)] = {**one, "bytes": path.stat().st_size}
    for n in plans:
        path = make_plan(n, DATA / "files")
        asyncio.run(quiet(dsn))
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
            one = child.submit(_import_alone, dsn, str(path), "planning-zone").result()
        if one["features"] != n:
            raise SystemExit(f"GeoTwin imported {one['features']:,} of {n:,} zones from {path.name}")
        out.setdefault("xplan", {})[str(n)] = {**one, "bytes": path.stat().st_size}
    return out


def print_imports(result: dict[str, Any]) -> None:
    print(f"\nimports of {result['features']:,} commercial sites (features/s, median of {result['repeats']} runs; "
          "ratio = GeoTwin/ogr2ogr)")
    for fmt in ("gpkg", "geojson"):
        r = result[fmt]
        print(f"  {fmt:8} GeoTwin {r['geotwin_per_s']:>9,.0f}   ogr2ogr {r['ogr2ogr_per_s']:>9,.0f}   "
              f"ratio {r['ratio']:.2f}")
    print(f"  plain COPY of the same rows: {result['copy_floor_per_s']:,.0f}/s")
    print("\nthe importer's memory, one import per process (MB resident before it; growth to the peak)")
    for fmt, by_size in result["memory"].items():
        for n, m in by_size.items():
            print(f"  {fmt:8} {int(n):>9,} features ({m['bytes'] / 2**20:6.0f} MB file): "
                  f"{m['before_mb']:4.0f} MB, +{m['peak_mb'] - m['before_mb']:4.0f} MB"
                  + (f", {m['seconds']:.1f} s" if fmt == "xplan" else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each loader per format (medians are printed)")
    ap.add_argument("--memory", default="20000,200000",
                    help="sizes (comma-separated) whose imports' memory is measured, each in a process of its own")
    ap.add_argument("--xplan", default="2000,20000,100000",
                    help="XPlanGML plans (numbers of zones, comma-separated) imported each in a process of its own")
    args = ap.parse_args()
    sizes = [int(n) for n in args.memory.split(",") if n.strip()]
    plans = [int(n) for n in args.xplan.split(",") if n.strip()]
    cluster = LocalCluster(DATA / "pg", remembered_port(DATA, 54339))
    cluster.start()
    dsn = cluster.create_database("geotwin_bench")
    upgrade(dsn)
    asyncio.run(prepare_data(dsn, 200_000, 5_000, 1_000))  # the data of bench/run.py, made if missing
    if max([args.n, *sizes]) > 200_000:
        raise SystemExit("the benchmark data holds 200,000 sites: --n and --memory can be at most that")
    result = measure(cluster, "geotwin_bench", args.n, args.repeats)
    result["memory"] = memory(dsn, sizes, plans)
    print_imports(result)
    out = ROOT / "bench" / "results" / time.strftime("imports-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"raw numbers: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    os.environ.setdefault("PGAPPNAME", "geotwin-bench")
    main()
