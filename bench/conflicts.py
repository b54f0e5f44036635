"""Time the region-wide conflict analysis on the benchmark data: every generated commercial site against
every generated ecological zone (1,000 vertices each), with the default 300 m buffer.

    .venv/bin/python bench/conflicts.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.db import connect  # noqa: E402
from service.localdb import LocalCluster, remembered_port  # noqa: E402
from service.sql.analysis import conflicts_sql  # noqa: E402

DATA = ROOT / ".data" / "bench"


async def main() -> None:
    cluster = LocalCluster(DATA / "pg", remembered_port(DATA, 54339))
    cluster.start()
    conn = await connect(cluster.url("geotwin_bench"))
    try:
        pks = dict(await conn.fetch("SELECT c.slug, c.id FROM collection c JOIN municipality m ON m.id = "
                                    "c.municipality_id WHERE m.slug = 'bench' AND c.slug IN ('sites', 'zones')"))
        counts = dict(await conn.fetch("SELECT slug, feature_count FROM collection WHERE id = ANY($1::int[])",
                                       list(pks.values())))
        sql, args = conflicts_sql([(pks["sites"], "bench")], [(pks["zones"], "bench")], None, {}, 300.0, None)
        started = time.perf_counter()
        rows = await conn.fetch(sql, *args)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    with_conflicts = sum(1 for r in rows if r["conflicts"])
    result = {"sites": counts["sites"], "zones": counts["zones"], "seconds": seconds,
              "sites_per_s": len(rows) / seconds, "sites_with_conflicts": with_conflicts}
    print(f"conflict analysis: {len(rows):,} sites x {counts['zones']:,} zones in {seconds:.1f} s "
          f"({result['sites_per_s']:,.0f} sites/s); {with_conflicts:,} sites conflict")
    out = ROOT / "bench" / "results" / time.strftime("conflicts-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(result, indent=2))
    print(f"raw numbers: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
