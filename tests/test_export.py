"""Downloads: GeoPackage, FlatGeobuf, GeoJSON and CSV, read back with GDAL (Debian's ogr2ogr) and compared with
what the API serves: same features, same attributes, same places."""

from __future__ import annotations

import html as html_lib
import json
import re
import subprocess

import httpx
import pytest
import shapely
from shapely.geometry import shape

REGION_SITES = "/region/collections/commercial-sites"


def via_gdal(path, fmt: str, tmp_path) -> list[dict]:
    out = tmp_path / f"roundtrip-{fmt}.geojson"
    options = ["-oo", "GEOM_POSSIBLE_NAMES=wkt", "-oo", "KEEP_GEOM_COLUMNS=NO", "-oo", "AUTODETECT_TYPE=YES"] \
        if fmt == "csv" else []
    source = f"/vsizip/{path}" if fmt == "shp" else str(path)
    result = subprocess.run(["ogr2ogr", "-f", "GeoJSON", str(out), source, *options], capture_output=True,
                            text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr  # e.g. Debian 12's GDAL on a GeoPackage 1.4
    return json.loads(out.read_text())["features"]


@pytest.mark.parametrize("fmt", ["gpkg", "fgb", "geojson", "csv", "shp"])
def test_exports_round_trip_through_gdal(live_server, tmp_path, fmt):
    api = httpx.get(f"{live_server}{REGION_SITES}/items", params={"limit": 1000}).json()["features"]
    r = httpx.get(f"{live_server}{REGION_SITES}/export", params={"f": fmt})
    assert r.status_code == 200, r.text
    extension = "zip" if fmt == "shp" else fmt
    assert r.headers["content-disposition"] == f'attachment; filename="region-commercial-sites.{extension}"'
    path = tmp_path / f"sites.{extension}"
    path.write_bytes(r.content)
    back = via_gdal(path, fmt, tmp_path)
    assert len(back) == len(api)
    # A Shapefile's field names have at most 10 characters (GDAL cuts them: municipali, area_net_h).
    name = (lambda key: key[:10]) if fmt == "shp" else (lambda key: key)
    by_id = {f["properties"].get("id", f.get("id")): f for f in back}
    assert set(by_id) == {f["id"] for f in api}
    for feature in api:
        got = by_id[feature["id"]]
        assert got["properties"][name("municipality")] == feature["id"].split(":")[0]
        for key, value in feature["properties"].items():
            if key == "municipality":
                continue
            mine = got["properties"].get(name(key))
            if isinstance(value, float):
                assert mine == pytest.approx(value), (fmt, key)
            elif isinstance(value, bool) and fmt == "csv":
                assert str(mine).lower() == str(value).lower(), (fmt, key)
            elif fmt == "fgb" and key == "last_update":
                assert mine == f"{value}T00:00:00", "FlatGeobuf has no date type: dates come back as midnight"
            else:
                assert mine == value, (fmt, feature["id"], key, mine, value)
        # Same place: the shapes agree to a few centimetres (CRS84 output has 7 decimals).
        a, b = shape(feature["geometry"]), shape(got["geometry"])
        if fmt == "shp" and b.geom_type == "Polygon":  # a Shapefile does not say Multi of a one-part polygon
            b = shapely.MultiPolygon([b])
        assert a.symmetric_difference(b).area < 1e-9 and shapely.equals_exact(a.normalize(), b.normalize(), 1e-6)


def test_exports_take_filters_and_a_crs(live_server, tmp_path):
    params = {"filter": "availability = 'verfuegbar'"}
    expected = httpx.get(f"{live_server}{REGION_SITES}/items", params={**params, "limit": 1}).json()["numberMatched"]
    r = httpx.get(f"{live_server}{REGION_SITES}/export",
                  params={**params, "f": "gpkg", "crs": "http://www.opengis.net/def/crs/EPSG/0/25832"})
    path = tmp_path / "filtered.gpkg"
    path.write_bytes(r.content)
    info = subprocess.run(["ogrinfo", "-so", "-al", str(path)], capture_output=True, text=True, timeout=60).stdout
    assert f"Feature Count: {expected}" in info and 'ID["EPSG",25832]' in info
    assert r.headers["content-crs"] == "<http://www.opengis.net/def/crs/EPSG/0/25832>"
    for bad, parameter in (({"f": "dxf"}, "f"), ({"limit": "5"}, "limit"), ({"filter": "x ="}, "filter")):
        r = httpx.get(f"{live_server}{REGION_SITES}/export", params=bad)
        assert r.status_code == 400 and r.json()["parameter"] == parameter


def test_the_collection_and_its_pages_link_their_downloads(live_server, tmp_path):
    doc = httpx.get(f"{live_server}{REGION_SITES}").json()
    enclosures = {link["type"]: link["href"] for link in doc["links"] if link["rel"] == "enclosure"}
    assert set(enclosures) == {"application/geopackage+sqlite3", "application/flatgeobuf", "application/geo+json",
                               "text/csv; charset=utf-8", "application/zip"}
    assert enclosures["application/zip"].endswith("f=shp")
    whole = httpx.get(enclosures["application/flatgeobuf"])
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/flatgeobuf"
    html = httpx.get(f"{live_server}{REGION_SITES}?f=html").text
    assert f'Download all {doc["numberOfFeatures"]}: <a href="{enclosures["application/geopackage+sqlite3"]}"' in html

    # A filtered page offers that selection, without its paging: every matching feature, not only the page's.
    params = {"filter": "availability = 'verfuegbar'", "limit": "2", "offset": "1", "f": "html"}
    page = httpx.get(f"{live_server}{REGION_SITES}/items", params=params)
    matched = httpx.get(f"{live_server}{REGION_SITES}/items", params={**params, "f": "json"}).json()["numberMatched"]
    gpkg = re.search(rf'Download all {matched}: <a href="([^"]+)" download>GeoPackage</a>', page.text)
    assert gpkg, page.text
    href = html_lib.unescape(gpkg.group(1))
    assert "limit" not in href and "offset" not in href and href.endswith("&f=gpkg")
    path = tmp_path / "selection.gpkg"
    path.write_bytes(httpx.get(href).content)
    info = subprocess.run(["ogrinfo", "-so", "-al", str(path)], capture_output=True, text=True, timeout=60).stdout
    assert f"Feature Count: {matched}" in info and matched > 2


def test_an_internal_collection_is_not_exported_to_strangers(live_server):
    r = httpx.get(f"{live_server}/municipalities/halle/collections/internal-notes/export", params={"f": "csv"})
    assert r.status_code == 404


def test_an_export_gdal_cannot_write_is_an_error_answer_not_a_cut_download(live_server, monkeypatch):
    """A full temporary directory while GDAL writes: 503 with the reason in JSON, before any byte of a file
    went out, and nothing left behind."""
    import tempfile
    from pathlib import Path

    import pyogrio

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    before = set(Path(tempfile.gettempdir()).glob("geotwin-export-*"))
    monkeypatch.setattr(pyogrio, "write_arrow", full)
    for fmt in ("gpkg", "shp"):
        r = httpx.get(f"{live_server}{REGION_SITES}/export", params={"f": fmt})
        assert r.status_code == 503 and r.headers["content-type"] == "application/json", (fmt, r.text[:200])
        assert "No space left on device" in r.json()["description"] and r.json()["parameter"] == "f"
    assert set(Path(tempfile.gettempdir()).glob("geotwin-export-*")) <= before
