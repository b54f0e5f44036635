"""Soak run: a steady mixed load on `geotwin serve` for a fixed time, with the production defaults (rate limits
on, 2 workers), reported per minute: requests, errors, p50/p99, and the service's memory.

    .venv/bin/python bench/soak.py                  # 10 minutes at 60 requests/s
    .venv/bin/python bench/soak.py --minutes 1 --rate 30

The mix, by share of requests, drawn from fixed sets of 2,000 tile and 1,000 read URLs: vector tiles of a
collection and of a municipality's dataset at z10-z16 (40 %), items pages with and without bbox (25 %), CQL2
filters and sorting (15 %), the region's items (10 %) and writes by an editor key (10 %: create a site,
patch it with If-Match, delete it). The load is open-loop:
requests start on a fixed schedule whatever the answers take, so a slower service shows as higher latency,
not as fewer requests. An error is any answer other than the expected one (a 5xx, a 429, a timeout or a
broken connection). Raw numbers go to bench/results/soak-*.json.

Data: the demo plus 20,000 generated sites (Leipzig's `generated-sites`), in a database of its own in the
benchmark's PostGIS (.data/bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import morecantile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import DATA, free_port, start  # noqa: E402
from service.cli import _generate, _load_demo  # noqa: E402
from service.generator import Spec  # noqa: E402
from service.localdb import LocalCluster, remembered_port  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.sql.keys import create_key  # noqa: E402

WM = morecantile.tms.get("WebMercatorQuad")
SITES = "/municipalities/halle/collections/commercial-sites"
# Where the demo's and the generator's data lie: Halle and Leipzig.
CENTRES = ((11.97, 51.48), (12.37, 51.34))


@dataclass
class Minute:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss_mb: float = 0.0
    cache_mb: float = 0.0

    def summary(self, index: int) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def p(q: float) -> float:
            return lat[min(len(lat) - 1, int(len(lat) * q))] if lat else float("nan")
        return {"minute": index + 1, "requests": len(lat), "errors": len(self.errors),
                "p50_ms": round(p(0.5), 2), "p99_ms": round(p(0.99), 2), "rss_mb": round(self.rss_mb, 1),
                "tile_cache_mb": round(self.cache_mb, 1), "first_errors": self.errors[:5]}


def tile_path(rng: random.Random) -> str:
    lon, lat = rng.choice(CENTRES)
    z = rng.choice((10, 12, 13, 14, 15, 16))
    t = WM.tile(lon + rng.uniform(-0.15, 0.15), lat + rng.uniform(-0.1, 0.1), z)
    base = rng.choice((SITES, "/municipalities/halle", "/municipalities/leipzig/collections/generated-sites",
                       "/municipalities/leipzig"))
    return f"{base}/tiles/WebMercatorQuad/{z}/{t.y}/{t.x}"


def read_path(rng: random.Random) -> str:
    lon, lat = rng.choice(CENTRES)
    kind = rng.random()
    if kind < 0.25 / 0.5:
        if rng.random() < 0.5:
            return f"{SITES}/items?limit={rng.choice((10, 100))}&offset={rng.randrange(0, 50)}"
        x, y = lon + rng.uniform(-0.1, 0.1), lat + rng.uniform(-0.05, 0.05)
        return f"{SITES}/items?limit=100&bbox={x:.4f},{y:.4f},{x + 0.05:.4f},{y + 0.03:.4f}"
    if kind < 0.40 / 0.5:
        area = rng.choice((1, 5, 10, 20))
        return (f"{SITES}/items?limit=50&filter=area_net_ha%20%3E%20{area}%20AND%20availability%20%3D%20"
                f"%27verfuegbar%27&sortby=-area_net_ha")
    return f"/region/collections/commercial-sites/items?limit=100&offset={rng.randrange(0, 100)}"


def new_site(rng: random.Random, n: int) -> dict[str, Any]:
    x, y, d = 11.9 + rng.uniform(0, 0.15), 51.44 + rng.uniform(0, 0.08), 0.003
    return {"type": "Feature", "id": f"soak-{n}",
            "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]]},
            "properties": {"name": f"Soak {n}", "area_gross_ha": 4.0, "area_net_ha": 3.5, "zoning": "GE",
                           "availability": "verfuegbar", "servicing": "erschlossen"}}


async def cache_mb(client: httpx.AsyncClient) -> float:
    """What the workers' tile caches hold (bounded by design), from /metrics: memory growth beyond it is a leak."""
    text = (await client.get("/metrics")).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("geotwin_tile_cache_bytes")) / 2**20


def rss_mb(pid: int) -> float:
    """Resident memory of the service: the serving process and its workers."""
    total = 0
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


async def prepare(dsn: str) -> str:
    import asyncpg

    await _load_demo(dsn)
    await _generate(dsn, "leipzig", "generated-sites", Spec("commercial-site", 20_000, seed=3))
    conn = await asyncpg.connect(dsn)
    try:
        return (await create_key(conn, "halle", "editor", "soak"))["key"]
    finally:
        await conn.close()


async def drive(base: str, key: str, minutes: float, rate: float, pid: int) -> tuple[list[Minute], Minute]:
    """The minutes, and the state before the load (memory only)."""
    rng = random.Random(11)
    # Fixed sets of URLs, as planners come back to the same places: the service's bounded memories (tile cache,
    # tile footprints, numberMatched) settle within the first minutes, so growth after that would be a leak.
    tiles = [tile_path(rng) for _ in range(2000)]
    reads = [read_path(rng) for _ in range(1000)]
    buckets = [Minute() for _ in range(max(1, int(round(minutes))) if minutes >= 1 else 1)]
    seconds = minutes * 60
    editor = {"X-API-Key": key}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    started = time.monotonic()

    def bucket() -> Minute:
        return buckets[min(len(buckets) - 1, int((time.monotonic() - started) // 60))]

    async def one(client: httpx.AsyncClient, method: str, url: str, expect: set[int],
                  **kw: Any) -> httpx.Response | None:
        t = time.perf_counter()
        try:
            r = await client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            bucket().errors.append(f"{method} {url}: {exc.__class__.__name__}")
            return None
        b = bucket()
        b.latencies.append((time.perf_counter() - t) * 1000)
        if r.status_code not in expect:
            b.errors.append(f"{method} {url}: {r.status_code} {r.text[:120]}")
        return r

    async def write_cycle(client: httpx.AsyncClient, n: int) -> None:
        body = json.dumps(new_site(rng, n))
        r = await one(client, "POST", f"{SITES}/items", {201}, content=body,
                      headers={**editor, "Content-Type": "application/geo+json"})
        if r is None or r.status_code != 201:
            return
        item = f"{SITES}/items/soak-{n}"
        r = await one(client, "PATCH", item, {200, 204}, content=json.dumps({"properties": {"area_net_ha": 3.0}}),
                      headers={**editor, "Content-Type": "application/merge-patch+json",
                               "If-Match": r.headers.get("ETag", "")})
        if r is None or r.status_code not in (200, 204):
            return
        await one(client, "DELETE", item, {204}, headers={**editor, "If-Match": r.headers.get("ETag", "")})

    tasks: set[asyncio.Task] = set()
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        i = 0
        writes = 0
        before = Minute(rss_mb=rss_mb(pid), cache_mb=await cache_mb(client))
        next_sample = 60.0
        while (now := time.monotonic() - started) < seconds:
            if now >= next_sample:  # memory at the end of each minute
                buckets[int(now // 60) - 1].rss_mb, buckets[int(now // 60) - 1].cache_mb = (
                    rss_mb(pid), await cache_mb(client))
                next_sample += 60
            due = started + i / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            roll = rng.random()
            if roll < 0.40:
                coro = one(client, "GET", rng.choice(tiles), {200, 204})
            elif roll < 0.90:
                coro = one(client, "GET", rng.choice(reads), {200})
            else:
                # A write cycle is three requests: one in ten scheduled slots starts one, every third slot.
                if i % 3:
                    coro = one(client, "GET", rng.choice(reads), {200})
                else:
                    writes += 1
                    coro = write_cycle(client, writes)
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)
        buckets[-1].rss_mb, buckets[-1].cache_mb = rss_mb(pid), await cache_mb(client)
    return buckets, before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=60, help="requests started per second")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    cluster = LocalCluster(DATA / "bench" / "pg", remembered_port(DATA / "bench", 54339))
    cluster.start()
    cluster.psql('DROP DATABASE IF EXISTS "geotwin_soak"')
    dsn = cluster.create_database("geotwin_soak")
    upgrade(dsn)
    key = asyncio.run(prepare(dsn))
    port = free_port()
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin", "PGDATABASE": "geotwin_soak"}
    proc = start([str(ROOT / ".venv" / "bin" / "geotwin"), "serve", "--workers", str(args.workers), "--port",
                  str(port)], env, port, "/ready")
    try:
        print(f"soak: {args.minutes} min at {args.rate} requests/s against {args.workers} workers", flush=True)
        minutes, before = asyncio.run(drive(f"http://127.0.0.1:{port}", key, args.minutes, args.rate, proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rows = [m.summary(i) for i, m in enumerate(minutes)]
    print(f"{'minute':>6} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>8} "
          f"{'tile cache MB':>14} {'RSS - cache':>12}")
    print(f"{'before':>6} {'':>9} {'':>7} {'':>8} {'':>8} {before.rss_mb:>8.1f} {before.cache_mb:>14.1f} "
          f"{before.rss_mb - before.cache_mb:>12.1f}")
    for r in rows:
        print(f"{r['minute']:>6} {r['requests']:>9} {r['errors']:>7} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{r['rss_mb']:>8} {r['tile_cache_mb']:>14} {r['rss_mb'] - r['tile_cache_mb']:>12.1f}")
    total = {"minutes": args.minutes, "rate": args.rate, "workers": args.workers,
             "requests": sum(r["requests"] for r in rows), "errors": sum(r["errors"] for r in rows),
             "p99_first_minute_ms": rows[0]["p99_ms"], "p99_last_minute_ms": rows[-1]["p99_ms"],
             "rss_before_mb": round(before.rss_mb, 1), "rss_after_first_minute_mb": rows[0]["rss_mb"],
             "rss_end_mb": rows[-1]["rss_mb"],
             "tile_cache_end_mb": rows[-1]["tile_cache_mb"],
             "p50_all_ms": round(statistics.median(x for m in minutes for x in m.latencies), 2)}
    print(json.dumps(total))
    out = ROOT / "bench" / "results" / time.strftime("soak-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"summary": total, "minutes": rows}, indent=2))
    print(f"raw numbers: {out.relative_to(ROOT)}")
    sys.exit(1 if total["errors"] else 0)


if __name__ == "__main__":
    main()
