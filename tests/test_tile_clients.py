"""Real clients of the vector tiles: GDAL's MVT driver and QGIS (its Python bindings from Debian)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
from pyproj import Transformer

from service.tiles import matrix_sets
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
