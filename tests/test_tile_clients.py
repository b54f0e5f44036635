"""Real clients of the vector tiles: GDAL's MVT and OGCAPI drivers and QGIS (its Python bindings from Debian)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
from pyproj import Transformer

from service.tiles import matrix_sets, min_zoom
from tests.conftest import run_qgis

HERE = Path(__file__).resolve().parent


def test_gdal_mvt_driver_reads_a_tile_whose_layers_are_tilejsons(live_server, tmp_path):
    root = f"{live_server}/municipalities/halle"
    t = matrix_sets()["WebMercatorQuad"].tile(12.056, 51.511, 13)
    tile = tmp_path / "tile.pbf"
    tile.write_bytes(httpx.get(f"{root}/tiles/WebMercatorQuad/{t.z}/{t.y}/{t.x}").content)
    result = subprocess.run(["ogrinfo", "-ro", "-al", "-so", "-oo", f"Z={t.z}", "-oo", f"X={t.x}", "-oo", f"Y={t.y}",
                             str(tile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    layers = dict(re.findall(r"Layer name: ([\w-]+)\n(?:.*\n)*?Feature Count: (\d+)", result.stdout))
    tilejson = httpx.get(f"{root}/tiles/WebMercatorQuad/tilejson.json").json()
    assert set(layers) <= {layer["id"] for layer in tilejson["vector_layers"]}
    assert {"commercial-sites", "planning-zones"} <= set(layers)
    assert int(layers["commercial-sites"]) >= 2
    # GDAL georeferences the tile itself: Star Park's name and its place come back.
    sql = subprocess.run(["ogrinfo", "-ro", "-q", "-oo", f"Z={t.z}", "-oo", f"X={t.x}", "-oo", f"Y={t.y}", str(tile),
                          "commercial-sites", "-where", "name = 'Star Park – Teilfläche A'"],
                         capture_output=True, text=True, timeout=60)
    assert "Star Park – Teilfläche A" in sql.stdout


def test_gdal_ogcapi_driver_reads_a_collection_tile_set(live_server):
    """GDAL's OGCAPI driver (the GDAL 3.12 inside pyogrio's wheel: Debian 12's GDAL 3.6 lacks the driver's vector
    tiles) follows the collection's tile set, our tile matrix set and the tileset's limits down to the tiles.
    With no options it picks WorldCRS84Quad, where the collection's CRS84 extent is what it takes it for. In
    WebMercatorQuad it would take that extent as projected coordinates (its raster tiles reproject it, its
    vector tiles do not), so a user who chooses that grid gives the extent in EPSG:3857.
    GDAL runs in a child process: the live server is a thread of this one, and pyogrio holds the GIL."""
    x0, y0, x1, y1 = Transformer.from_crs(4326, 3857, always_xy=True).transform_bounds(11.9, 51.4, 12.1, 51.6)
    script = f"""
import json, pyogrio, pyogrio.raw
url = "OGCAPI:{live_server}/municipalities/halle/collections/commercial-sites"
out = {{}}
for grid, options in (("WorldCRS84Quad", {{}}), ("WebMercatorQuad", dict(
        TILEMATRIXSET="WebMercatorQuad", MINX="{x0}", MINY="{y0}", MAXX="{x1}", MAXY="{y1}"))):
    first = pyogrio.read_info(url, layer=0, **options)["layer_name"]
    meta, _, geometries, values = pyogrio.raw.read(url, layer="Zoom level 13", **options)
    names = sorted(set(values[list(meta["fields"]).index("name")]))
    out[grid] = {{"first": first, "count": len(geometries), "names": names}}
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    read = json.loads(result.stdout.strip().splitlines()[-1])
    for grid, got in read.items():
        # the limits start at the sites' minimum zoom in that grid
        assert got["first"] == f"Zoom level {min_zoom('commercial-site', grid)}", (grid, got)
        assert "Star Park – Teilfläche A" in got["names"] and got["count"] >= 6, (grid, got)


def test_qgis_loads_and_draws_collection_and_dataset_tiles(live_server, tmp_path):
    root = f"{live_server}/municipalities/halle"
    templates = {
        "collection": f"{root}/collections/ecological-zones/tiles/WebMercatorQuad/{{z}}/{{y}}/{{x}}",
        "dataset": f"{root}/tiles/WebMercatorQuad/{{z}}/{{y}}/{{x}}",
    }
    to_3857 = Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = to_3857.transform(11.87, 51.45)
    x1, y1 = to_3857.transform(12.08, 51.53)
    rendered = run_qgis("qgis_render.py", json.dumps(templates), f"{x0},{y0},{x1},{y1}", home=tmp_path)
    for name in templates:
        assert rendered[name]["valid"], name
        assert rendered[name]["painted"] > 200, (name, rendered)
