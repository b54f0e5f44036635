"""Downloads: GeoPackage, FlatGeobuf, GeoJSON and CSV, read back with GDAL (Debian's ogr2ogr) and compared with
what the API serves: same features, same attributes, same places."""

from __future__ import annotations

import html as html_lib
import io
import json
import re
import subprocess
import sys
import zipfile

import httpx
import pytest
import shapely
from shapely.geometry import shape

REGION_SITES = "/region/collections/commercial-sites"
EPSG_25832 = "http://www.opengis.net/def/crs/EPSG/0/25832"


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
    # A file written before it is sent says its size (a browser shows how much is left); rows streamed
    # straight from the database cannot.
    if fmt in ("gpkg", "fgb", "shp"):
        assert int(r.headers["content-length"]) == len(r.content) > 0
    else:
        assert "content-length" not in r.headers and r.headers["transfer-encoding"] == "chunked"
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


def test_a_file_format_asked_of_the_items_names_the_export_with_the_same_filters(live_server):
    params = {"filter": "availability = 'verfuegbar'", "limit": "2", "f": "csv"}
    r = httpx.get(f"{live_server}{REGION_SITES}/items", params=params)
    assert r.status_code == 400 and r.json()["parameter"] == "f"
    href = r.json()["description"].rsplit(" ", 1)[-1]
    assert href.startswith(f"{live_server}{REGION_SITES}/export?") and "limit" not in href, href
    csv = httpx.get(href)
    matched = httpx.get(f"{live_server}{REGION_SITES}/items", params={**params, "f": "json"}).json()["numberMatched"]
    assert csv.status_code == 200 and csv.text.count("\n") == matched + 1 > 3, csv.text[:300]
    assert "download" not in httpx.get(f"{live_server}{REGION_SITES}/items", params={"f": "pdf"}).json()["description"]


def test_the_collection_and_its_pages_link_their_downloads(live_server, tmp_path):
    doc = httpx.get(f"{live_server}{REGION_SITES}").json()
    enclosures = {link["type"]: link["href"] for link in doc["links"] if link["rel"] == "enclosure"}
    assert set(enclosures) == {"application/geopackage+sqlite3", "application/flatgeobuf", "application/geo+json",
                               "text/csv; charset=utf-8", "application/zip",
                               "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
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


def test_head_on_an_export_makes_the_checks_and_writes_no_file(live_server, monkeypatch):
    """A link checker's or a download manager's HEAD gets the answer's status and headers at once; only the
    size, which writing the file would tell, is left out (RFC 9110 §9.3.2)."""
    from service import export

    def refuse(*args, **kwargs):
        raise AssertionError("a HEAD wrote the export")

    for writer in ("gdal_stream", "geojson_stream", "csv_stream", "xlsx_stream"):
        monkeypatch.setattr(export, writer, refuse)
    url = f"{live_server}{REGION_SITES}/export"
    for name, fmt in export.FORMATS.items():
        r = httpx.head(url, params={"f": name, "crs": EPSG_25832})
        assert r.status_code == 200 and r.content == b"", (name, r.status_code)
        assert r.headers["content-type"] == fmt.media_type
        assert r.headers["content-disposition"] == f'attachment; filename="region-commercial-sites.{fmt.extension}"'
        assert r.headers["content-crs"] == f"<{EPSG_25832}>" and "content-length" not in r.headers
    assert httpx.head(url, params={"f": "pdf"}).status_code == 400  # what a GET refuses, a HEAD refuses too
    assert httpx.head(url, params={"bbox": "1,2"}).status_code == 400
    assert httpx.head(f"{live_server}/municipalities/halle/collections/internal-notes/export").status_code == 404


def test_a_spreadsheet_export_holds_the_properties_and_a_point_of_each_feature(live_server, tmp_path, monkeypatch):
    """Excel for the list of sites a planner sends on: typed cells (numbers, dates, no decimal-comma trouble),
    and x/y of a point inside each site, lon/lat unless `crs` says otherwise; Debian's GDAL reads it back."""
    api = httpx.get(f"{live_server}{REGION_SITES}/items", params={"limit": 1000}).json()["features"]
    r = httpx.get(f"{live_server}{REGION_SITES}/export", params={"f": "xlsx"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert r.headers["content-disposition"] == 'attachment; filename="region-commercial-sites.xlsx"'
    assert int(r.headers["content-length"]) == len(r.content)
    path = tmp_path / "sites.xlsx"
    path.write_bytes(r.content)
    rows = {f["properties"]["id"]: f["properties"] for f in via_gdal(path, "xlsx", tmp_path)}
    assert set(rows) == {f["id"] for f in api}
    for feature in api:
        row = rows[feature["id"]]
        for key, value in feature["properties"].items():
            if isinstance(value, float):
                assert row[key] == pytest.approx(value), key
            elif isinstance(value, bool):
                assert row[key] in (value, int(value)), key
            else:
                assert row[key] == value, (feature["id"], key, row[key], value)
        assert shape(feature["geometry"]).contains(shapely.Point(row["x"], row["y"]))

    utm = httpx.get(f"{live_server}{REGION_SITES}/export", params={"f": "xlsx", "crs": EPSG_25832})
    path.write_bytes(utm.content)
    xs = [f["properties"]["x"] for f in via_gdal(path, "xlsx", tmp_path)]
    assert all(600_000 < x < 800_000 for x in xs), "metres of UTM zone 32N"

    # More features than a worksheet has rows: a 400 naming f, before any file is written.
    from service import export

    monkeypatch.setattr(export, "XLSX_MAX_ROWS", 3)
    r = httpx.get(f"{live_server}{REGION_SITES}/export", params={"f": "xlsx"})
    assert r.status_code == 400 and r.json()["parameter"] == "f" and "f=csv" in r.json()["description"]
    star_park = {"bbox": "12.04,51.50,12.07,51.52"}  # a selection that fits is counted and written
    assert httpx.get(f"{live_server}{REGION_SITES}/items", params=star_park).json()["numberMatched"] <= 3
    assert httpx.get(f"{live_server}{REGION_SITES}/export", params={"f": "xlsx", **star_park}).status_code == 200


def test_an_export_gdal_cannot_write_is_an_error_answer_not_a_cut_download(live_server, monkeypatch):
    """A full temporary directory while GDAL writes: 503 with the reason in JSON, before any byte of a file
    went out, and nothing left behind."""
    import tempfile
    from pathlib import Path

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    from service import export

    before = set(Path(tempfile.gettempdir()).glob("geotwin-export-*"))
    # GDAL writes in a process of its own (service/gdalwriter.py): here one that fails as it would on a full disk
    failing = ("import pyogrio, service.gdalwriter\n"
               "def full(*args, **kwargs):\n    raise OSError(28, 'No space left on device')\n"
               "pyogrio.write_arrow = full\nservice.gdalwriter.main()")
    monkeypatch.setattr(export, "WRITER", [sys.executable, "-c", failing])
    monkeypatch.setattr(export._Sheet, "close", full)
    for fmt in ("gpkg", "shp", "xlsx"):
        r = httpx.get(f"{live_server}{REGION_SITES}/export", params={"f": fmt})
        assert r.status_code == 503 and r.headers["content-type"] == "application/json", (fmt, r.text[:200])
        assert "No space left on device" in r.json()["description"] and r.json()["parameter"] == "f"
    assert set(Path(tempfile.gettempdir()).glob("geotwin-export-*")) <= before


async def test_values_written_from_outside_that_miss_their_type_export_as_empty_not_as_an_error(live_server,
                                                                                                   tmp_path, db_url):
    """psql or QGIS on the table can write what the API would refuse: 3.5 storeys, 2^63, 1e400, a number as
    text. The export still answers, each such value empty (3.0 is 3), the rest as it is."""
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        m_pk = await conn.fetchval("SELECT id FROM municipality WHERE slug = 'halle'")
        c_pk = await conn.fetchval("INSERT INTO collection (municipality_id, slug, title, layer_type) VALUES "
                                   "($1, 'odd-values', 'odd values', 'planning-zone') RETURNING id", m_pk)
        odd = ['{"plan_number": "B 1", "max_storeys": 3.5, "grz": "0,4"}',
               '{"plan_number": 12, "max_storeys": 9223372036854775808, "grz": true, "gfz": 1e400}',
               '{"plan_number": "B 3", "max_storeys": 3.0, "grz": 0.4, "in_force_from": "2025-12-31", '
               '"plan_name": "=HYPERLINK(\\"http://example.org\\")"}']
        for i, props in enumerate(odd):
            await conn.execute("INSERT INTO feature (collection_id, fid, geom, properties) VALUES ($1, $2, "
                               "ST_Buffer(ST_SetSRID(ST_MakePoint(706193, 5707666), 25832), 50), $3::jsonb)",
                               c_pk, f"z{i}", props)
        for fmt in ("gpkg", "fgb", "shp", "csv", "geojson", "xlsx"):
            r = httpx.get(f"{live_server}/municipalities/halle/collections/odd-values/export", params={"f": fmt})
            assert r.status_code == 200, (fmt, r.text)
        # In Excel a text is a text: no formula runs when a planner opens the list.
        with zipfile.ZipFile(io.BytesIO(r.content)) as book:
            cells = book.read("xl/worksheets/sheet1.xml").decode()  # strings inline, as written row by row
        assert "<f>" not in cells and '<t>=HYPERLINK("http://example.org")</t>' in cells
        # 1e400 is beyond a double: the pages, the history and the items read it as well (as no number).
        base = f"{live_server}/municipalities/halle/collections/odd-values"
        for url in (f"{base}/items/z1?f=html", f"{base}/items?f=html", f"{base}/items/z1", f"{base}/items",
                    f"{base}/items/z1/versions", f"{base}/changes"):
            assert httpx.get(url).status_code == 200, url
        path = tmp_path / "odd.gpkg"
        path.write_bytes(httpx.get(f"{live_server}/municipalities/halle/collections/odd-values/export",
                                   params={"f": "gpkg"}).content)
        back = {f["properties"]["id"]: f["properties"] for f in via_gdal(path, "gpkg", tmp_path)}
        assert back["z0"]["max_storeys"] is None and back["z0"]["grz"] is None
        assert back["z1"]["max_storeys"] is None and back["z1"]["grz"] is None and back["z1"]["plan_number"] == "12"
        assert back["z2"]["max_storeys"] == 3 and back["z2"]["grz"] == 0.4 and back["z2"]["in_force_from"] == \
            "2025-12-31"
    finally:
        await conn.execute("DELETE FROM collection WHERE slug = 'odd-values'")
        await conn.close()
