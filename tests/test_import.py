"""File import: every format into a collection, CRS detection and mapping, all or nothing with a report, API
jobs with progress, the CLI, and hostile files refused with nothing written. Files are made with Debian's GDAL
from the demo data, so the expected content is known."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import sqlite3
import struct
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import asyncpg
import pytest

from service.errors import GeoTwinError
from service.export import dbf_names
from service.geojsoncheck import geometry_problems
from service.importer import MOVE, import_file
from service.importer import check_batch as real_check_batch
from service.jobs import UPLOAD_PREFIX, sweep_uploads
from service.layertypes import registry
from service.sources import WORK_PREFIX, ImportOptions
from tests.conftest import ROOT, app_client, new_key, openapi_misfits

DEMO = ROOT / "fixtures" / "demo" / "halle-commercial-sites.geojson"
SITES = registry()["commercial-site"]
COLLECTION = "/municipalities/halle/collections/commercial-sites"


def ogr(*args: str) -> None:
    result = subprocess.run(["ogr2ogr", *args], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("import-files")
    out = {"geojson": d / "sites.geojson", "gpkg": d / "sites.gpkg", "csv": d / "sites.csv", "zip": d / "sites.zip",
           "fgb": d / "sites.fgb", "seq": d / "sites-seq.geojson"}
    ogr("-f", "FlatGeobuf", str(out["fgb"]), str(DEMO))  # as GeoTwin exports it, too
    # A GeoJSON text sequence (RFC 8142: each feature after a record separator), under GeoJSON's name ending.
    ogr("-f", "GeoJSONSeq", str(out["seq"]), str(DEMO), "-lco", "RS=YES")
    ogr("-f", "GeoJSON", str(out["geojson"]), str(DEMO), "-t_srs", "EPSG:25833")  # 25833, said in the file
    ogr("-f", "GPKG", str(out["gpkg"]), str(DEMO), "-nln", "gewerbe")
    ogr("-f", "CSV", str(out["csv"]), str(DEMO), "-lco", "GEOMETRY=AS_WKT")  # a CSV says no CRS
    shp = d / "shp"
    ogr("-f", "ESRI Shapefile", str(shp), str(DEMO), "-nln", "flaechen", "-lco", "ENCODING=UTF-8")
    with zipfile.ZipFile(out["zip"], "w", zipfile.ZIP_DEFLATED) as z:
        for part in shp.iterdir():
            z.write(part, part.name)
    return out


@pytest.fixture(scope="module")
def imp_db(demo_db):
    return demo_db("geotwin_imp")


async def collection_state(dsn: str, slug: str = "commercial-sites") -> dict[str, tuple]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT f.fid, ST_AsText(ST_Normalize(ST_SnapToGrid(f.geom, 0.01))) AS g, f.properties FROM feature f "
            "JOIN collection c ON c.id = f.collection_id JOIN municipality m ON m.id = c.municipality_id "
            "WHERE m.slug = 'halle' AND c.slug = $1", slug)
    finally:
        await conn.close()
    return {r["fid"]: (r["g"], json.loads(r["properties"])) for r in rows}


SITES_PK = ("SELECT c.id FROM collection c JOIN municipality m ON m.id = c.municipality_id "
            "WHERE m.slug = 'halle' AND c.slug = $1")


def renamed_demo(tmp_path: Path, prefix: str) -> tuple[dict, Path]:
    """The demo sites with ids `<prefix>-0`, `<prefix>-1`, …, and the GeoJSON file holding them."""
    doc = json.loads(DEMO.read_text())
    for i, feature in enumerate(doc["features"]):
        feature["id"] = f"{prefix}-{i}"
    path = tmp_path / f"{prefix}.geojson"
    path.write_text(json.dumps(doc))
    return doc, path


async def run_import(dsn: str, path: Path, slug: str = "commercial-sites", **options) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        pk = await conn.fetchval(SITES_PK, slug)
        return await import_file(conn, pk, SITES, path, ImportOptions(**options))
    finally:
        await conn.close()


# The demo sites' properties under the 10-character names a Shapefile gives them (read back by themselves).
SHP_NAMES = {"area_gross_ha": "area_gross", "area_net_ha": "area_net_h", "availability": "availabili",
               "planning_status": "planning_s", "price_eur_m2": "price_eur_", "largest_plot_ha": "largest_pl",
               "motorway_km": "motorway_k", "rail_siding": "rail_sidin", "last_update": "last_updat"}


@pytest.mark.parametrize("fmt, options", [
    ("gpkg", {}),
    ("geojson", {}),
    ("csv", {"crs": "EPSG:25832"}),
    ("zip", {}),
    ("fgb", {}),
])
async def test_each_format_imports_the_demo_sites_exactly(imp_db, files, fmt, options):
    original = await collection_state(imp_db)
    report = await run_import(imp_db, files[fmt], **options)
    assert report.imported == len(original) == report.total
    assert report.shortened_fields == (SHP_NAMES if fmt == "zip" else {})
    assert report.ignored_fields == [] and report.linearized == 0
    now = await collection_state(imp_db)
    assert set(now) == set(original)
    for fid, (geometry, props) in original.items():
        assert now[fid][1] == props, (fmt, fid)
        if fmt != "geojson":  # the 25833 file went 25832 -> 25833 -> 25832: centimetres may move
            assert now[fid][0] == geometry, (fmt, fid)


async def test_a_geojson_text_sequence_imports_as_geojson_does(imp_db, files):
    """GeoJSON text sequences (RFC 8142: a record separator before each feature), as `ogr2ogr -f GeoJSONSeq`
    writes them, may come under GeoJSON's name ending: the check of a file's first bytes lets them through."""
    original = await collection_state(imp_db)
    try:
        report = await run_import(imp_db, files["seq"])
        assert report.imported == len(original) == report.total
        now = await collection_state(imp_db)
        assert {fid: props for fid, (_, props) in now.items()} == {fid: p for fid, (_, p) in original.items()}
    finally:  # the sequence went through WGS 84: the exact geometries back, for the tests after this one
        await run_import(imp_db, files["gpkg"])
    assert await collection_state(imp_db) == original


@pytest.mark.parametrize("fmt, options", [("gpkg", {}), ("geojson", {}), ("csv", {"crs": "EPSG:25832"})])
async def test_a_zipped_file_imports_as_the_file_does(imp_db, files, tmp_path, fmt, options):
    """A GeoPackage, GeoJSON or CSV file zipped to be mailed (in a folder of the zip, with the Finder data a Mac
    adds) imports as the file itself does; the report names the zip."""
    original = await collection_state(imp_db)
    packed = _zip(tmp_path / "Gewerbeflächen.zip", {f"Gewerbe/{files[fmt].name}": files[fmt].read_bytes(),
                                                    f"__MACOSX/Gewerbe/._{files[fmt].name}": b"\0\5\26\7"})
    report = await run_import(imp_db, packed, **options)
    assert (report.imported, report.source) == (len(original), "Gewerbeflächen.zip")
    now = await collection_state(imp_db)
    assert {fid: p for fid, (_, p) in now.items()} == {fid: p for fid, (_, p) in original.items()}
    assert not list(Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*/sites.*")), "the unpacked file is removed"


async def test_a_shapefile_zipped_on_a_mac_imports(imp_db, files, tmp_path):
    """A Mac's zip holds `__MACOSX/._flaechen.shp` (Finder data) beside each part: not a second Shapefile."""
    original = await collection_state(imp_db)
    with zipfile.ZipFile(files["zip"]) as shp:
        parts = {n: shp.read(n) for n in shp.namelist()}
    mac = _zip(tmp_path / "flaechen.zip", {**parts, **{f"__MACOSX/._{n}": b"\0\5\26\7" for n in parts}})
    assert (await run_import(imp_db, mac)).imported == len(original)
    assert await collection_state(imp_db) == original


async def test_files_in_other_encodings_import_exactly_once_the_encoding_is_given(imp_db, files, tmp_path):
    """Excel saves CSV as cp1252 (or as UTF-16, "Unicode text"), and older Shapefiles come without .cpg. With
    `encoding` they import exactly as their UTF-8 originals do; without it, or with a wrong one, the error names
    `encoding` (for a Shapefile also the first feature and field whose text it cannot read) and nothing is
    written."""
    original = await collection_state(imp_db)
    work_dirs = set(Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*"))
    text = files["csv"].read_text(encoding="utf-8")
    assert "ä" in text and "–" in text
    excel, unicode = tmp_path / "excel.csv", tmp_path / "unicode.csv"
    # As a German Excel saves it: semicolons between the fields, decimal commas, dates as 31.12.2025.
    rows = list(csv.reader(io.StringIO(text)))
    german = io.StringIO()
    writer = csv.writer(german, delimiter=";", lineterminator="\r\n")
    writer.writerow(rows[0])
    writer.writerows([re.sub(r"^(\d{4})[-/](\d\d)[-/](\d\d)$", r"\3.\2.\1", re.sub(r"^(-?\d+)\.(\d+)$", r"\1,\2", v))
                      for v in row] for row in rows[1:])
    assert re.search(r";\d+,\d+;", german.getvalue()) and re.search(r";\d\d\.\d\d\.20\d\d", german.getvalue())
    excel.write_bytes(german.getvalue().encode("cp1252"))
    unicode.write_bytes(text.encode("utf-16"))
    shp = tmp_path / "shp"
    ogr("-f", "ESRI Shapefile", str(shp), str(DEMO), "-nln", "flaechen", "-lco", "ENCODING=CP1252")
    (shp / "flaechen.cpg").unlink()
    old_zip = _zip(tmp_path / "old.zip", {p.name: p.read_bytes() for p in shp.iterdir()})
    named = tmp_path / "named"  # a field name with an umlaut, in cp1252, and no .cpg either
    (tmp_path / "named.csv").write_text('wkt,Fläche\n"POLYGON((706500 5705500,706800 5705500,706800 5705800,'
                                       '706500 5705500))",Süd\n')
    ogr("-f", "ESRI Shapefile", str(named), str(tmp_path / "named.csv"), "-lco", "ENCODING=CP1252", "-oo",
        "GEOM_POSSIBLE_NAMES=wkt", "-oo", "KEEP_GEOM_COLUMNS=NO", "-a_srs", "EPSG:25832", "-nlt", "POLYGON")
    (named / "named.cpg").unlink()
    named_zip = _zip(tmp_path / "named.zip", {p.name: p.read_bytes() for p in named.iterdir()})

    for path, options, parameter, message in [
        (excel, {"crs": "EPSG:25832"}, "file", "not UTF-8"),
        (excel, {"crs": "EPSG:25832", "encoding": "utf-16"}, "encoding", "not utf-16"),
        (excel, {"crs": "EPSG:25832", "encoding": "Klingon"}, "encoding", "unknown text encoding 'Klingon'"),
        (excel, {"crs": "EPSG:25832", "encoding": "base64"}, "encoding", "unknown text encoding"),
        (named_zip, {}, "encoding", "the field names: the text is not UTF-8"),
        (old_zip, {}, "encoding", "without .cpg"),
    ]:
        with pytest.raises(GeoTwinError) as err:
            await run_import(imp_db, path, **options)
        assert message in err.value.description, (path.name, options, err.value.description)
        assert err.value.where["parameter"] == parameter, (path.name, options, err.value.where)
    first = next(i for i, f in enumerate(json.loads(DEMO.read_text())["features"])
                 if not f["properties"]["name"].isascii())
    assert (err.value.where["index"], err.value.where["property"]) == (first, "name")
    assert await collection_state(imp_db) == original

    for path, options in [(excel, {"crs": "EPSG:25832", "encoding": "cp1252"}),
                          (excel, {"crs": "EPSG:25832", "encoding": "Windows-1252"}),
                          (unicode, {"crs": "EPSG:25832", "encoding": "utf-16"}),
                          (old_zip, {"encoding": "cp1252"})]:
        report = await run_import(imp_db, path, **options)
        assert report.imported == len(original), (path.name, options)
        assert await collection_state(imp_db) == original, (path.name, options)
    assert set(Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*")) <= work_dirs, "the UTF-8 copies are removed"


async def test_text_holding_nul_is_refused_with_where_as_an_edit_holding_it_is(imp_db, files, tmp_path):
    """GDAL cut a text at U+0000 without a word ("Vor\\u0000Nach" came in as "Vor"); an edit holding it is a 422.
    A GeoJSON file is refused naming the feature and property, a CSV naming the line; an escaped backslash
    before "u0000" is text like any other."""
    original = await collection_state(imp_db)
    work_dirs = set(Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*"))
    demo = json.loads(DEMO.read_text())
    demo["features"][3]["properties"]["name"] = "Vor\x00Nach"
    with_nul = tmp_path / "nul.geojson"
    with_nul.write_text(json.dumps(demo))  # as \u0000
    as_utf16 = tmp_path / "nul16.geojson"
    as_utf16.write_bytes(json.dumps(demo).encode("utf-16"))
    lines = files["csv"].read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b",", b",\x00", 1)
    csv_nul = tmp_path / "nul.csv"
    csv_nul.write_bytes(b"\n".join(lines))
    for path, options, where in [(with_nul, {}, {"index": 3, "property": "name"}),
                                 (as_utf16, {"encoding": "utf-16"}, {"index": 3, "property": "name"}),
                                 (csv_nul, {"crs": "EPSG:25832"}, {})]:
        with pytest.raises(GeoTwinError) as err:
            await run_import(imp_db, path, **options)
        assert "U+0000" in err.value.description, (path.name, err.value.description)
        assert err.value.where == {"parameter": "file", **where}, (path.name, err.value.where)
    assert "line 3 " in err.value.description
    assert await collection_state(imp_db) == original
    assert set(Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*")) <= work_dirs, "the UTF-8 copy is removed"
    demo["features"][3]["properties"]["name"] = "C:\\u0000\\Pläne"  # a backslash, then u0000
    escaped = tmp_path / "escaped.geojson"
    escaped.write_text(json.dumps(demo))
    assert "\\\\u0000" in escaped.read_text()
    await run_import(imp_db, escaped)
    fid = demo["features"][3]["id"]
    conn = await asyncpg.connect(imp_db)
    try:
        assert await conn.fetchval("SELECT properties->>'name' FROM feature WHERE fid = $1", fid) == "C:\\u0000\\Pläne"
    finally:
        await conn.close()
    await run_import(imp_db, DEMO)
    assert await collection_state(imp_db) == original


async def test_a_file_of_several_layers_needs_layer_and_qgis_styles_do_not_count(imp_db, files, tmp_path):
    """QGIS keeps a project's styles in the GeoPackage (`layer_styles`, a table without geometries): the one layer
    with geometries is read. Of two such layers, or two Shapefiles in a zip, neither is guessed: the error lists
    them, naming `layer`."""
    original = await collection_state(imp_db)
    styles = tmp_path / "layer_styles.csv"
    styles.write_text("styleName,styleQML\ndefault,<qgis/>\n")
    styled, two = tmp_path / "styled.gpkg", tmp_path / "two.gpkg"
    for target in (styled, two):
        ogr("-f", "GPKG", str(target), str(DEMO), "-nln", "gewerbe")
        ogr("-update", "-f", "GPKG", str(target), str(styles), "-nln", "layer_styles")
    ogr("-update", "-f", "GPKG", str(two), str(ROOT / "fixtures" / "demo" / "halle-planning-zones.geojson"),
        "-nln", "bplan")
    for options, parameter, message in [({}, "layer", "2 layers with geometries ('gewerbe', 'bplan'): give layer"),
                                        ({"layer": "gewerbe2"}, "layer", "no layer 'gewerbe2'")]:
        with pytest.raises(GeoTwinError) as err:
            await run_import(imp_db, two, **options)
        assert message in err.value.description and err.value.where["parameter"] == parameter, err.value.body()
    assert await collection_state(imp_db) == original
    for path, options in ((styled, {}), (two, {"layer": "gewerbe"})):
        assert (await run_import(imp_db, path, **options)).imported == len(original)
        assert await collection_state(imp_db) == original

    # A zip of several Shapefiles, likewise.
    shp = {p.name: p.read_bytes() for p in (files["zip"].parent / "shp").iterdir()}
    both = _zip(tmp_path / "both.zip", {**shp, **{"zweite" + Path(n).suffix: b for n, b in shp.items()}})
    for options, message in [({}, "2 Shapefiles ('flaechen', 'zweite'): give layer"),
                             ({"layer": "dritte"}, "no Shapefile 'dritte'")]:
        with pytest.raises(GeoTwinError) as err:
            await run_import(imp_db, both, **options)
        assert message in err.value.description and err.value.where["parameter"] == "layer", err.value.body()
    assert (await run_import(imp_db, both, layer="zweite")).imported == len(original)
    assert await collection_state(imp_db) == original

    # A layer a single-layer file does not have: was "the file cannot be read as GeoJSON: Layer 'nope' could
    # not be opened", as if the file were broken.
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, DEMO, layer="nope")
    assert "the file has no layer 'nope'; its layers: " in err.value.description, err.value.body()
    assert err.value.where["parameter"] == "layer"
    assert (await run_import(imp_db, files["fgb"], layer="halle-commercial-sites")).imported == len(original)


async def test_a_file_without_crs_needs_one_and_a_wrong_crs_is_caught(imp_db, files):
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, files["csv"])
    assert err.value.where["parameter"] == "crs"
    with pytest.raises(GeoTwinError) as err:  # UTM coordinates read as degrees
        await run_import(imp_db, files["csv"], crs="EPSG:4326")
    assert "outside" in err.value.where["report"]["issues"][0]["message"]


async def test_one_bad_feature_means_nothing_is_written_and_every_problem_is_reported(imp_db, tmp_path):
    doc = json.loads(DEMO.read_text())
    doc["features"][1]["properties"]["area_gross_ha"] = "groß"
    doc["features"][3]["properties"]["zoning"] = "XX"
    doc["features"][4]["geometry"]["coordinates"] = [[[706000, 5708000], [706100, 5708100], [706100, 5708000],
                                                      [706000, 5708100], [706000, 5708000]]]
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(doc))
    before = await collection_state(imp_db)
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, path)
    issues = err.value.where["report"]["issues"]
    assert {(i["index"], i["property"]) for i in issues} == {(1, "area_gross_ha"), (3, "zoning"), (4, "geometry")}
    assert "Self-intersection" in next(i["message"] for i in issues if i["index"] == 4)
    assert await collection_state(imp_db) == before


@pytest.mark.filterwarnings("ignore:Non closed ring detected:RuntimeWarning")  # GDAL's, expected here
async def test_geometries_that_cannot_be_read_are_named_with_the_reason(imp_db, tmp_path):
    """GDAL hands on a ring that does not close (a hand-made GeoJSON) and a GeoPackage geometry cut short as they
    are; the report says what is wrong with each, not just "no geometry"."""
    doc = json.loads(DEMO.read_text())
    doc["features"][2]["geometry"]["coordinates"] = [[[706000, 5708000], [706100, 5708000], [706100, 5708100],
                                                      [706000, 5708100.5]]]
    doc["features"][5]["geometry"] = None
    path = tmp_path / "open.geojson"
    path.write_text(json.dumps(doc))
    gpkg = tmp_path / "cut.gpkg"
    ogr("-f", "GPKG", str(gpkg), str(DEMO), "-nln", "sites", "-lco", "SPATIAL_INDEX=NO")
    with contextlib.closing(sqlite3.connect(gpkg)) as db, db:
        blob = db.execute("SELECT geom FROM sites WHERE fid = 4").fetchone()[0]
        db.execute("UPDATE sites SET geom = ? WHERE fid = 4", (blob[:-24],))
    before = await collection_state(imp_db)
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, path)
    issues = {i["index"]: (i["property"], i["message"]) for i in err.value.where["report"]["issues"]}
    assert issues == {
        2: ("geometry", "a ring of its geometry does not close: it begins at 706000 5708000 and ends at 706000 "
                        "5708100.5"),
        5: ("geometry", "no geometry (null)")}
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, gpkg)
    [issue] = err.value.where["report"]["issues"]
    assert (issue["index"], issue["property"]) == (3, "geometry")
    assert issue["message"].startswith("the geometry cannot be read: "), issue
    assert await collection_state(imp_db) == before


async def test_a_hole_left_open_in_a_geopackage_is_named_with_its_ends(imp_db, tmp_path):
    """GEOS reads no WKB with an open ring, so the report once said only that some ring does not close. For a
    polygon with holes it now says which, as it does for a GeoJSON file."""
    gpkg = tmp_path / "hole.gpkg"
    ogr("-f", "GPKG", str(gpkg), str(DEMO), "-nln", "sites", "-lco", "SPATIAL_INDEX=NO")
    rings = [[(706000, 5708000), (706100, 5708000), (706100, 5708100), (706000, 5708000)],
             [(706050, 5708010), (706090, 5708010), (706090, 5708050), (706050, 5708020.25)]]
    wkb = struct.pack("<BII", 1, 3, len(rings)) + b"".join(
        struct.pack("<I", len(ring)) + b"".join(struct.pack("<dd", *xy) for xy in ring) for ring in rings)
    with contextlib.closing(sqlite3.connect(gpkg)) as db, db:
        blob = db.execute("SELECT geom FROM sites WHERE fid = 2").fetchone()[0]
        header = blob[:3] + bytes([blob[3] & 0b11110001]) + blob[4:8]  # "GP", version, flags (no envelope), SRS
        db.execute("UPDATE sites SET geom = ? WHERE fid = 2", (header + wkb,))
    before = await collection_state(imp_db)
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, gpkg)
    assert [(i["index"], i["property"], i["message"]) for i in err.value.where["report"]["issues"]] == [
        (1, "geometry", "a ring of its geometry does not close: it begins at 706050 5708010 and ends at 706050 "
                        "5708020.25")]
    assert await collection_state(imp_db) == before


# Geometries GDAL's GeoJSON reader reads as none (or as empty, or as WKB GEOS refuses: in GEOS's words, or
# without saying which ring of a polygon with holes is open), each with what the report says instead.
HAND_MADE = {
    "a ring of one position": ({"type": "Polygon", "coordinates": [[[706000, 5708000]]]},
                               "coordinates[0]: a ring needs at least 4 positions (the last one repeating the "
                               "first), not 1"),
    "a misspelt type": ({"type": "Polgon", "coordinates": [[[706000, 5708000], [706100, 5708000],
                                                            [706100, 5708100], [706000, 5708000]]]},
                        "type 'Polgon' is not a GeoJSON geometry type (one of 'Point', 'MultiPoint', 'LineString', "
                        "'MultiLineString', 'Polygon', 'MultiPolygon', 'GeometryCollection')"),
    "a multipolygon one level too shallow": (
        {"type": "MultiPolygon", "coordinates": [[[706000, 5708000], [706100, 5708000], [706100, 5708100],
                                                  [706000, 5708000]]]},
        "coordinates[0][0][0]: a position is 2 or 3 numbers (x, y, and z if any), not 706000 (are the coordinates "
        "nested one level too shallow?)"),
    "a position with text": ({"type": "Polygon", "coordinates": [[[706000, 5708000], ["706100", "5708000,5"],
                                                                   [706100, 5708100], [706000, 5708000]]]},
                             "coordinates[0][1]: a position is 2 or 3 numbers (x, y, and z if any), not "
                             "['706100', '5708000,5'] (numbers written as text? RFC 7946 wants them as JSON numbers)"),
    "numbers written as text": (
        {"type": "Polygon", "coordinates": [[[706000, 5708000], ["706100", "5708000"], [706100, 5708100],
                                             [706000, 5708000]]]},
        "coordinates[0][1]: a position is 2 or 3 numbers (x, y, and z if any), not ['706100', '5708000'] (numbers "
        "written as text? RFC 7946 wants them as JSON numbers)"),
    "a WKT string": ("POLYGON((706000 5708000, 706100 5708000, 706100 5708100, 706000 5708000))",
                     "the geometry is not a GeoJSON geometry object but 'POLYGON((706000 5708000, 706100 5708000, "
                     "706100 5708100,..."),
    "no geometry member": (None, "the feature has no geometry member"),
    "a hole left open": ({"type": "Polygon", "coordinates": [
        [[706000, 5708000], [706100, 5708000], [706100, 5708100], [706000, 5708000]],
        [[706050, 5708010], [706090, 5708010], [706090, 5708050], [706050, 5708020]]]},
        "a ring of its geometry does not close: it begins at 706050 5708010 and ends at 706050 5708020"),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # GDAL's warnings about each of them, naming no feature
async def test_a_geometry_gdal_reads_as_none_is_named_with_where_it_goes_wrong(imp_db, tmp_path):
    """GDAL's GeoJSON reader gives a hand-made geometry it cannot make sense of no geometry (or an empty one)
    and says why only in a warning that names no feature. The report reads the feature's own text again and
    says what is wrong and where; the features GDAL did read are not reported."""
    doc, path = renamed_demo(tmp_path, "hand")
    doc["features"] += [dict(doc["features"][0], id=f"hand-{k}") for k in range(len(doc["features"]), 9)]
    expected = {}
    for index, (geometry, message) in enumerate(HAND_MADE.values(), start=1):
        feature = doc["features"][index]
        if message.endswith("member"):
            del feature["geometry"]
        else:
            feature["geometry"] = geometry
        expected[index] = ("geometry", message)
    path.write_text(json.dumps(doc))
    before = await collection_state(imp_db)
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, path)
    issues = {i["index"]: (i["property"], i["message"]) for i in err.value.where["report"]["issues"]}
    assert issues == expected
    assert err.value.description.endswith(
        f"first at feature 1 (hand-1): geometry: {HAND_MADE['a ring of one position'][1]}")
    assert await collection_state(imp_db) == before


def test_the_second_reading_says_nothing_when_the_file_does_not_line_up_with_what_gdal_read(tmp_path):
    """The feature at an index must carry the id the import read there; if not, the report keeps GDAL's
    words rather than put another feature's problem under this one's id."""
    path = tmp_path / "two.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "a", "properties": {}, "geometry": {"type": "Polgon", "coordinates": []}},
        {"type": "Feature", "properties": {}, "geometry": None}]}))
    assert geometry_problems(path, {0: "a", 1: "2"}) == {0: HAND_MADE["a misspelt type"][1], 1: "no geometry (null)"}
    assert geometry_problems(path, {0: "b", 1: "2"}) == {}


@pytest.mark.parametrize("bad", ["x" * 201, "Nr. 12/versions"])
async def test_a_file_holds_to_the_apis_rule_for_ids(imp_db, tmp_path, bad):
    """An id is the last segment of its feature's URL. The API refuses one of more than 200 characters or
    ending in `/versions` (that path lists a feature's versions); an import did not, and wrote features nobody
    could then read by their URL."""
    doc, path = renamed_demo(tmp_path, "ids")
    doc["features"][2]["id"] = bad
    path.write_text(json.dumps(doc))
    before = await collection_state(imp_db)
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, path, mode="append")
    issues = err.value.where["report"]["issues"]
    assert [(i["index"], i["property"]) for i in issues] == [(2, "id")], issues
    assert "'/versions'" in issues[0]["message"] and "200 characters" in issues[0]["message"]
    assert await collection_state(imp_db) == before


async def test_arcs_are_read_as_straight_segments(imp_db, files, tmp_path):
    """Cadastre and CAD data keep circular arcs (CurvePolygon, CompoundCurve in a MultiSurface). The importer
    reads them as GDAL approximates them (at most 4° of arc per segment) and counts them in the report; the
    properties come through unchanged."""
    original = await collection_state(imp_db)
    rows = list(csv.DictReader(io.StringIO(files["csv"].read_text())))
    expected = {}
    for i, row in enumerate(rows):
        x, y = 706000 + 400 * i, 5707000
        if i % 2:  # a circle of radius 100 m
            row["WKT"] = (f"CURVEPOLYGON(CIRCULARSTRING({x} {y},{x + 100} {y + 100},{x + 200} {y},"
                          f"{x + 100} {y - 100},{x} {y}))")
            expected[row["id"]] = 3.14159265 * 100 ** 2
        else:  # a square of 100 m with a half disc of radius 50 m on its east side
            row["WKT"] = (f"MULTISURFACE(CURVEPOLYGON(COMPOUNDCURVE(({x} {y},{x} {y + 100},{x + 100} {y + 100}),"
                          f"CIRCULARSTRING({x + 100} {y + 100},{x + 150} {y + 50},{x + 100} {y}),"
                          f"({x + 100} {y},{x} {y}))))")
            expected[row["id"]] = 100 ** 2 + 3.14159265 * 50 ** 2 / 2
    curved_csv, curved_gpkg = tmp_path / "bogen.csv", tmp_path / "bogen.gpkg"
    with curved_csv.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ogr("-f", "GPKG", str(curved_gpkg), str(curved_csv), "-nln", "flurstuecke", "-a_srs", "EPSG:25832", "-nlt",
        "MULTISURFACE", "-oo", "GEOM_POSSIBLE_NAMES=WKT", "-oo", "KEEP_GEOM_COLUMNS=NO", "-oo", "AUTODETECT_TYPE=YES")
    for path, options in ((curved_gpkg, {}), (curved_csv, {"crs": "EPSG:25832"})):
        report = await run_import(imp_db, path, **options)
        assert (report.imported, report.linearized) == (len(rows), len(rows)), path.name
        conn = await asyncpg.connect(imp_db)
        try:
            areas = dict(await conn.fetch(
                "SELECT f.fid, ST_Area(f.geom) FROM feature f JOIN collection c ON c.id = f.collection_id "
                "JOIN municipality m ON m.id = c.municipality_id WHERE m.slug = 'halle' AND c.slug = $1",
                "commercial-sites"))
        finally:
            await conn.close()
        assert areas.keys() == expected.keys()
        for fid, area in expected.items():
            assert abs(areas[fid] - area) < 0.001 * area, (path.name, fid, areas[fid], area)
        now = await collection_state(imp_db)
        assert {fid: props for fid, (_, props) in now.items()} == {fid: p for fid, (_, p) in original.items()}
    await run_import(imp_db, files["gpkg"])
    assert await collection_state(imp_db) == original


async def test_append_refuses_ids_that_exist_and_replace_replaces(imp_db, files):
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, files["gpkg"], mode="append")
    assert err.value.where["report"]["issues"][0]["property"] == "id"
    report = await run_import(imp_db, files["gpkg"], mode="replace")
    assert report.imported == 6


class PausedAtMove:
    """The importer's real connection, held just before the move into `feature` (the collection is locked by
    then) until the test says go."""

    def __init__(self, conn):
        self.conn, self.at_move, self.go = conn, asyncio.Event(), asyncio.Event()

    async def execute(self, sql, *args):
        if sql == MOVE:
            self.at_move.set()
            await self.go.wait()
        return await self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


async def test_an_edit_during_an_import_waits_for_it_instead_of_deadlocking(cluster, imp_db, tmp_path):
    """An editor creates a feature with one of the file's ids while an append import holds the collection:
    the edit waits, the import lands whole, and the edit is then refused with 409 because the id exists.
    (Before edits took the collection's lock first, the two deadlocked, and one of them failed with a 500.)"""
    doc, path = renamed_demo(tmp_path, "race")
    before = await collection_state(imp_db)
    key = await new_key(imp_db, "halle", "editor")
    conn, watcher = PausedAtMove(await asyncpg.connect(imp_db)), await asyncpg.connect(imp_db)
    try:
        pk = await watcher.fetchval(SITES_PK, "commercial-sites")
        importing = asyncio.create_task(import_file(conn, pk, SITES, path, ImportOptions(mode="append")))
        await asyncio.wait_for(conn.at_move.wait(), 60)
        async with app_client(cluster, "geotwin_imp") as (_, api):
            site = {**doc["features"][3], "id": "race-3"}
            posting = asyncio.create_task(api.post(f"{COLLECTION}/items", json=site, headers={
                "X-API-Key": key, "Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/25832>"}))
            for _ in range(200):  # until the edit waits for the import's lock
                if posting.done() or await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = "
                        "current_database() AND pid <> pg_backend_pid()"):
                    break
                await asyncio.sleep(0.05)
            conn.go.set()
            assert not posting.done(), posting.result().text
            report = await importing
            answer = await posting
        assert report.imported == len(doc["features"])
        assert answer.status_code == 409 and "race-3" in answer.json()["description"], answer.text
        after = await collection_state(imp_db)
        assert set(after) == set(before) | {f"race-{i}" for i in range(len(doc["features"]))}
    finally:
        await watcher.execute("DELETE FROM feature WHERE fid LIKE 'race-%'")
        await conn.conn.close()
        await watcher.close()


async def test_an_edit_waits_for_an_import_a_bounded_time_then_gets_409_with_retry_after(cluster, imp_db):
    """While an import holds the collection longer than GEOTWIN_DB_LOCK_TIMEOUT_S, an edit is answered 409
    with Retry-After (not a 503 "narrow it down" from the statement timeout) and writes nothing."""
    key = await new_key(imp_db, "halle", "editor")
    doc = json.loads(DEMO.read_text())
    site = {**doc["features"][0], "id": "waited-1"}
    headers = {"X-API-Key": key, "Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/25832>"}
    importer = await asyncpg.connect(imp_db)
    try:
        async with app_client(cluster, "geotwin_imp", db_options={"GEOTWIN_DB_LOCK_TIMEOUT_S": 0.5}) as (_, api):
            async with importer.transaction():  # holds the collection as an import's move does
                await importer.execute("SELECT 1 FROM collection WHERE slug = 'commercial-sites' FOR UPDATE")
                started = time.monotonic()
                r = await api.post(f"{COLLECTION}/items", json=site, headers=headers)
                assert r.status_code == 409 and r.headers["retry-after"] == "5", r.text
                assert "import" in r.json()["description"] and time.monotonic() - started < 5
            assert "waited-1" not in await collection_state(imp_db)
            assert (await api.post(f"{COLLECTION}/items", json=site, headers=headers)).status_code == 201
    finally:
        await importer.execute("DELETE FROM feature WHERE fid = 'waited-1'")
        await importer.close()


def _zip(path: Path, entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


async def test_hostile_files_are_refused_and_nothing_is_written(imp_db, files, tmp_path):
    before = await collection_state(imp_db)
    shp = {p.name: p.read_bytes() for p in (files["zip"].parent / "shp").iterdir()}
    gpkg = files["gpkg"].read_bytes()
    cases = {
        "traversal.zip": _zip(tmp_path / "traversal.zip", {**shp, "../../etc/evil.shp": b"x"}),
        "bomb.zip": _zip(tmp_path / "bomb.zip", {**shp, "padding.dbf": b"\0" * 50_000_000}),
        "none.zip": _zip(tmp_path / "none.zip", {"liesmich.txt": b"Gewerbeflaechen"}),
        "zipped.zip": _zip(tmp_path / "zipped.zip", {"Gewerbe/Gewerbeflächen.gpkg": gpkg, "Gewerbe/alt.csv": b"x"}),
        "noshx.zip": _zip(tmp_path / "noshx.zip", {n: b for n, b in shp.items() if not n.endswith(".shx")}),
        "nodbf.zip": _zip(tmp_path / "nodbf.zip", {n: b for n, b in shp.items() if not n.endswith(".dbf")}),
        "notzip.zip": tmp_path / "notzip.zip",
        "truncated.gpkg": tmp_path / "truncated.gpkg",
        "damaged.gpkg": tmp_path / "damaged.gpkg",
        "fake.gpkg": tmp_path / "fake.gpkg",
        "truncated.fgb": tmp_path / "truncated.fgb",
        "fake.fgb": tmp_path / "fake.fgb",
        "latin1.geojson": tmp_path / "latin1.geojson",
        "broken.geojson": tmp_path / "broken.geojson",
        "notjson.geojson": tmp_path / "notjson.geojson",
        "notgeo.geojson": tmp_path / "notgeo.geojson",
        "array.geojson": tmp_path / "array.geojson",
        "gpkg.zip": tmp_path / "gpkg.zip",
        "book.csv": _zip(tmp_path / "book.csv", {"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<w/>"}),
        "empty.csv": tmp_path / "empty.csv",
        "sites.txt": tmp_path / "sites.txt",
        "cut-gpkg.zip": _zip(tmp_path / "cut-gpkg.zip", {"Gewerbe/sites.gpkg": gpkg[: len(gpkg) // 3]}),
        "crc.zip": tmp_path / "crc.zip",
    }
    cases["notzip.zip"].write_bytes(b"PK\x03\x04 not really")
    cases["truncated.gpkg"].write_bytes(gpkg[: len(gpkg) // 3])
    page = int.from_bytes(gpkg[16:18], "big")  # the whole length, but its second and third pages garbled
    cases["damaged.gpkg"].write_bytes(gpkg[:page] + bytes(b ^ 0x5A for b in gpkg[page:3 * page]) + gpkg[3 * page:])
    cases["fake.gpkg"].write_bytes(b"<html>not a database</html>")
    fgb = files["fgb"].read_bytes()
    cases["truncated.fgb"].write_bytes(fgb[: len(fgb) * 2 // 3])
    cases["cut.fgb"] = tmp_path / "cut.fgb"  # cut between two features: GDAL reads the first ones without a word
    ogr("-f", "FlatGeobuf", str(tmp_path / "plain.fgb"), str(DEMO), "-lco", "SPATIAL_INDEX=NO")
    plain = (tmp_path / "plain.fgb").read_bytes()
    starts = [12 + int.from_bytes(plain[8:12], "little")]  # magic, header size, header; then size + feature each
    while starts[-1] < len(plain):
        starts.append(starts[-1] + 4 + int.from_bytes(plain[starts[-1]:starts[-1] + 4], "little"))
    cases["cut.fgb"].write_bytes(plain[:starts[-2]])
    cases["fake.fgb"].write_bytes(b"<html>not a FlatGeobuf</html>")
    cases["latin1.geojson"].write_bytes(DEMO.read_text().encode("latin-1", errors="replace"))
    cases["broken.geojson"].write_bytes(DEMO.read_bytes()[:-500])
    cases["notjson.geojson"].write_bytes(b"Gewerbeflaechen Halle, Stand 2026")
    cases["notgeo.geojson"].write_bytes(b'{"Gewerbeflaechen": "Halle"}')
    cases["array.geojson"].write_bytes(b"[" + json.dumps(json.loads(DEMO.read_text())["features"][0]).encode() + b"]")
    cases["gpkg.zip"].write_bytes(gpkg)
    cases["empty.csv"].write_bytes(b"")
    cases["sites.txt"].write_bytes(b"x")
    crc = bytearray(_zip(tmp_path / "whole.zip", {"sites.gpkg": gpkg}, zipfile.ZIP_STORED).read_bytes())
    crc[30 + len("sites.gpkg") + len(gpkg) // 2] ^= 0xFF  # a byte in the middle of the stored GeoPackage
    cases["crc.zip"].write_bytes(crc)
    reasons = {"traversal.zip": "outside the archive", "bomb.zip": "zip bomb", "none.zip": "no Shapefile",
               "zipped.zip": "no Shapefile (.shp), nor an XPlanGML file (.gml), but several files: "
                             "'Gewerbeflächen.gpkg', 'alt.csv'; send one at a time",
               "noshx.zip": "comes without its .shx", "nodbf.zip": "comes without its .dbf (the attributes)",
               "notzip.zip": "not a zip", "truncated.gpkg": f"the GeoPackage is incomplete: it has {len(gpkg) // 3:,} "
                                                               f"bytes of the {len(gpkg):,} its header gives",
               "damaged.gpkg": "cannot be read as a GeoPackage: it is damaged or incomplete (SQLite: database disk "
                               "image is malformed); was it copied or uploaded whole?",
               "fake.gpkg": "not a GeoPackage",
               "truncated.fgb": "cannot be read", "fake.fgb": "not a FlatGeobuf",
               "cut.fgb": f"holds 5 of the {len(json.loads(DEMO.read_text())['features'])} features its header",
               "latin1.geojson": "not UTF-8", "broken.geojson": "cannot be read",
               "notjson.geojson": "the file is named .geojson, but it is text, not GeoJSON",
               "notgeo.geojson": "cannot be read as GeoJSON: GDAL does not recognise its content",
               "array.geojson": "but it is a JSON array, not GeoJSON; GeoJSON is an object",
               "gpkg.zip": "the file is named .zip, but it is a SQLite database (a GeoPackage?), not a zip archive; "
                           "name it .gpkg",
               "book.csv": "an Excel workbook, .xlsx?), not CSV; save it from Excel as CSV UTF-8 first",
               "empty.csv": "empty", "sites.txt": "unknown file type",
               "cut-gpkg.zip": "the GeoPackage 'Gewerbe/sites.gpkg' in the zip is incomplete: it has "
                               f"{len(gpkg) // 3:,} bytes of the {len(gpkg):,} its header gives",
               "crc.zip": "the file 'sites.gpkg' in the zip cannot be unpacked (Bad CRC-32"}
    for name, path in cases.items():
        with pytest.raises(GeoTwinError) as err:
            await run_import(imp_db, path, crs="EPSG:25832")
        assert reasons[name] in err.value.description, (name, err.value.description)
        assert err.value.where.get("parameter") == "file", (name, err.value.where)
        # GDAL's words for its own command line stay out: the server's paths, its SQL, how to pick a driver.
        for internal in (str(tmp_path), "sqlite_master", "<DRIVER>"):
            assert internal not in err.value.description, (name, err.value.description)
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, files["gpkg"], max_bytes=1000)
    assert "at most 1,000" in err.value.description
    assert await collection_state(imp_db) == before


# ---------------------------------------------------------------- the API job and the CLI

@pytest.fixture(scope="module")
async def api(cluster, imp_db):
    key = await new_key(imp_db, "halle", "editor", "GIS-Team")
    async with app_client(cluster, "geotwin_imp") as (_, client):
        yield client, {"Authorization": f"Bearer {key}"}


async def _wait(client, url: str, headers: dict) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = (await client.get(url, headers=headers)).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("the import job did not finish")


async def test_api_import_job_reports_progress_and_result(api, files, imp_db):
    client, auth = api
    r = await client.post(f"{COLLECTION}/imports", params={"filename": "sites.gpkg", "mode": "replace"},
                          headers=auth, content=files["gpkg"].read_bytes())
    assert r.status_code == 202, r.text
    doc = "/municipalities/halle/api"
    items = "/collections/{collectionId}/imports"
    assert not await openapi_misfits(client, doc, "post", items, "202", r.json())
    job = await _wait(client, r.headers["location"], auth)
    assert job["status"] == "succeeded" and job["processed"] == job["total"] == 6 and job["progress"] == 1
    assert job["stage"] is None  # named while it runs: the last one was checking
    conn = await asyncpg.connect(imp_db)
    try:
        assert await conn.fetchval("SELECT stage FROM import_job WHERE id = $1", job["id"]) == "checking"
    finally:
        await conn.close()
    assert not await openapi_misfits(client, doc, "get", items + "/{jobId}", "200", job)
    assert job["report"]["imported"] == 6 and job["report"]["crs"].endswith("25832")
    r = await client.post(f"{COLLECTION}/imports", params={"filename": "sites.csv"}, headers=auth,
                          content=files["csv"].read_bytes())
    job = await _wait(client, r.headers["location"], auth)
    assert job["status"] == "failed" and "crs" in job["error"]
    # The planner's own file name in the error and the report (its last part only; it is stored under it).
    r = await client.post(f"{COLLECTION}/imports", params={"filename": "../Gewerbeflächen Nord.csv",
                                                           "crs": "EPSG:4326"}, headers=auth,
                          content=files["csv"].read_bytes())
    job = await _wait(client, r.headers["location"], auth)
    assert job["error"].startswith("Gewerbeflächen Nord.csv: nothing imported"), job["error"]
    assert job["report"]["source"] == "Gewerbeflächen Nord.csv"
    assert job["report"]["issues"][0]["message"].startswith("coordinates lie outside")
    assert not await openapi_misfits(client, doc, "get", items + "/{jobId}", "200", job)
    assert await openapi_misfits(client, doc, "get", items + "/{jobId}", "200",
                                 {**job, "report": {**job["report"], "linearized": "none"}}), "the report is described"
    assert (await client.get(r.headers["location"])).status_code == 401, "job reports are for editors"
    for params, parameter in (({"filename": "x.doc"}, "filename"), ({"filename": "x.gpkg", "mode": "merge"}, "mode"),
                              ({"filename": "x.gpkg", "mapping": "[1]"}, "mapping"),
                              ({"filename": "x.csv", "encoding": "Klingon"}, "encoding"),
                              # were taken, and the job failed later (the CRS) or replaced every feature (`mod`)
                              ({"filename": "x.csv", "crs": "EPSG:99999"}, "crs"),
                              ({"filename": "x.gpkg", "mod": "append"}, "mod")):
        r = await client.post(f"{COLLECTION}/imports", params=params, headers=auth, content=b"x")
        assert r.status_code == 400 and r.json()["parameter"] == parameter, r.json()


async def test_a_shapefile_export_imports_back_as_it_was(api, imp_db, tmp_path, capfd):
    """The planner's round trip: download the sites as a zipped Shapefile, (edit it in a GIS,) import it again:
    the same collection, though the Shapefile cut every longer field name to 10 characters. A layer of points and
    polygons cannot be one Shapefile: that export is refused, naming `f`."""
    client, auth = api
    original = await collection_state(imp_db)
    r = await client.get(f"{COLLECTION}/export",
                         params={"f": "shp", "crs": "http://www.opengis.net/def/crs/EPSG/0/25832"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip", r.text
    assert "Warning" not in capfd.readouterr().err, "names are cut before GDAL would warn past the JSON log"
    assert dbf_names(["area_gross_ha", "area_gross_net", "area_gross_x"]) == ["area_gross", "area_gro_1",
                                                                               "area_gro_2"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        assert sorted(Path(n).suffix for n in archive.namelist()) == [".cpg", ".dbf", ".prj", ".shp", ".shx"]
        assert archive.read("commercial-sites.cpg").strip() == b"UTF-8"
    path = tmp_path / "halle-commercial-sites.zip"
    path.write_bytes(r.content)
    report = await run_import(imp_db, path)
    assert report.imported == len(original) and len(report.shortened_fields) == 9 and not report.ignored_fields
    assert await collection_state(imp_db) == original

    conn = await asyncpg.connect(imp_db)
    try:
        pk = await conn.fetchval("INSERT INTO collection (municipality_id, slug, title, layer_type) SELECT id, "
                                 "'gemischt', 'gemischt', 'generic' FROM municipality WHERE slug = 'halle' "
                                 "RETURNING id")
        await conn.execute("INSERT INTO feature (collection_id, fid, geom, properties) VALUES "
                           "($1, 'p', ST_SetSRID(ST_MakePoint(706000, 5707000), 25832), '{}'), "
                           "($1, 'f', ST_Buffer(ST_SetSRID(ST_MakePoint(706000, 5707000), 25832), 10), '{}')", pk)
        mixed = await client.get("/municipalities/halle/collections/gemischt/export", params={"f": "shp"})
        assert mixed.status_code == 400 and mixed.json()["parameter"] == "f", mixed.text
        assert "MultiPolygon, Point" in mixed.json()["description"]
        await conn.execute("DELETE FROM feature WHERE collection_id = $1 AND fid = 'f'", pk)
        points = await client.get("/municipalities/halle/collections/gemischt/export", params={"f": "shp"})
        assert points.status_code == 200
    finally:
        await conn.execute("DELETE FROM collection WHERE slug = 'gemischt'")
        await conn.close()


async def test_a_file_sent_as_a_form_imports_like_one_sent_as_the_body(api, files, tmp_path):
    """`curl -F file=@…` and HTML forms send multipart/form-data: the file part is the file, its name the
    file's name, and the options may come as form fields. What is wrong is a 400 naming it, and the upload is
    not kept."""
    client, auth = api
    work_dirs = set(Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*"))
    excel = tmp_path / "excel.csv"
    excel.write_bytes(files["csv"].read_text(encoding="utf-8").encode("cp1252"))
    for upload, form, source in [
        (("Gewerbeflächen Süd.gpkg", files["gpkg"].read_bytes()), {}, "Gewerbeflächen Süd.gpkg"),
        (("Tabelle.csv", excel.read_bytes()), {"crs": "EPSG:25832", "encoding": "cp1252"}, "Tabelle.csv"),
    ]:
        r = await client.post(f"{COLLECTION}/imports", headers=auth, files={"file": upload}, data=form)
        assert r.status_code == 202, r.text
        job = await _wait(client, r.headers["location"], auth)
        assert (job["status"], job["source"], job["report"]["imported"]) == ("succeeded", source, 6), job
        assert job["options"]["encoding"] == form.get("encoding")
    gpkg = ("sites.gpkg", files["gpkg"].read_bytes())
    page = int.from_bytes(gpkg[1][16:18], "big")
    damaged = gpkg[1][:page] + bytes(b ^ 0x5A for b in gpkg[1][page:3 * page]) + gpkg[1][3 * page:]
    shapefile = zipfile.ZipFile(files["zip"])
    no_dbf = _zip(tmp_path / "no_dbf.zip", {n: shapefile.read(n) for n in shapefile.namelist() if n[-4:] != ".dbf"})
    mailed = {name: _zip(tmp_path / f"{name}.zip", {f"Gewerbe/{inner}": data}).read_bytes() for name, inner, data in [
        ("whole", "sites.gpkg", gpkg[1]), ("cut", "sites.gpkg", gpkg[1][:5000]), ("damaged", "sites.gpkg", damaged),
        ("named", "sites.csv", gpkg[1])]}
    for kwargs, status, parameter in [
        ({"data": {"mode": "append"}, "files": {"file": ("", b"")}}, 400, "file"),  # no file chosen in the form
        ({"files": {"file": (None, "sites.gpkg")}}, 400, "file"),  # curl -F file=sites.gpkg, without the @
        ({"files": {"file": gpkg}, "data": {"colour": "red"}}, 400, "colour"),
        ({"files": {"file": gpkg}, "data": {"mode": "merge"}}, 400, "mode"),
        ({"files": {"file": ("sites.doc", b"x")}}, 400, "filename"),
        ({"files": {"file": gpkg}, "params": {"encoding": "Klingon"}}, 400, "encoding"),
        ({"content": b"garbage", "headers": {"Content-Type": "multipart/form-data"}}, 400, "Content-Type"),
        ({"content": files["gpkg"].read_bytes()}, 400, "filename"),  # the body itself, but no name for it
        ({"content": b"", "params": {"filename": "sites.gpkg"}}, 400, "file"),  # was a job that failed at once
        ({"files": {"file": ("sites.gpkg", b"")}}, 400, "file"),
        # said at once, not by a job that fails: what the file is, by its first bytes, and the name it needs
        ({"files": {"file": ("sites.zip", gpkg[1])}}, 422, "file"),
        ({"files": {"file": ("sites.gpkg", gpkg[1][:5000])}}, 422, "file"),  # cut off
        ({"files": {"file": ("sites.gpkg", damaged)}}, 422, "file"),
        ({"files": {"file": gpkg}, "data": {"layer": "Flurstuecke"}}, 400, "layer"),
        ({"files": {"file": ("sites.zip", no_dbf.read_bytes())}}, 422, "file"),
        # and so is the file zipped to be mailed, read from the zip
        ({"files": {"file": ("Gewerbe.zip", mailed["cut"])}}, 422, "file"),
        ({"files": {"file": ("Gewerbe.zip", mailed["damaged"])}}, 422, "file"),
        ({"files": {"file": ("Gewerbe.zip", mailed["named"])}}, 422, "file"),
        ({"files": {"file": ("Gewerbe.zip", mailed["whole"])}, "data": {"layer": "Flurstuecke"}}, 400, "layer"),
        ({"content": b"<html>Anmeldung</html>", "params": {"filename": "sites.geojson"}}, 422, "file"),
    ]:
        r = await client.post(f"{COLLECTION}/imports", **{**kwargs, "headers": {**auth, **kwargs.get("headers", {})}})
        assert (r.status_code, r.json().get("parameter")) == (status, parameter), (kwargs.keys(), r.text)
    assert set(Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*")) <= work_dirs, "refused uploads are not kept"


async def test_more_import_jobs_than_connections_queue_and_all_finish(api, files):
    """Fifteen jobs at once, more than the job pool's ten connections (a planner's double clicks, a script):
    the ones beyond the worker's job slots wait as queued, none fails for want of a connection."""
    client, auth = api
    body = files["gpkg"].read_bytes()
    posted = await asyncio.gather(*(client.post(f"{COLLECTION}/imports", params={"filename": "sites.gpkg"},
                                                headers=auth, content=body) for _ in range(15)))
    assert [r.status_code for r in posted] == [202] * 15
    seen = {(await client.get(r.headers["location"], headers=auth)).json()["status"] for r in posted}
    assert "queued" in seen, seen
    jobs = await asyncio.gather(*(_wait(client, r.headers["location"], auth) for r in posted))
    assert [(j["status"], j["error"]) for j in jobs] == [("succeeded", None)] * 15


async def test_api_upload_limit(cluster, imp_db):
    key = await new_key(imp_db, "halle", "editor")
    async with app_client(cluster, "geotwin_imp") as (app, client):
        app.state.settings.imports.max_upload_mb = 1
        r = await client.post(f"{COLLECTION}/imports", params={"filename": "big.geojson"},
                              headers={"Authorization": f"Bearer {key}"}, content=io.BytesIO(b" " * 1_100_000).read())
        assert r.status_code == 413
        r = await client.post(f"{COLLECTION}/imports", headers={"Authorization": f"Bearer {key}"},
                              files={"file": ("big.geojson", b" " * 1_100_000)})
        assert r.status_code == 413


def test_cli_import_shows_progress_and_reports(cluster, imp_db, files, tmp_path):
    """A file that has a property under another name fails, naming the property and the field it left unread;
    `--map` reads it. A Shapefile's shortened names are read by themselves, and the CLI says so."""
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin", "PGDATABASE": "geotwin_imp",
           "PATH": "/usr/bin:/bin", "COLUMNS": "120"}
    command = [str(ROOT / ".venv" / "bin" / "geotwin"), "import", "--municipality", "halle"]
    renamed = tmp_path / "renamed.csv"
    header, rest = files["csv"].read_text().split("\n", 1)
    renamed.write_text(header.replace("availability", "Verfügbarkeit") + "\n" + rest)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args, "--collection", "sites-from-csv", "--crs", "EPSG:25832"],
                              capture_output=True, text=True, env=env, timeout=120)

    bad = run(str(renamed), "--layer-type", "commercial-site")
    assert bad.returncode == 1 and "nothing imported" in bad.stdout, bad.stdout + bad.stderr
    listed = subprocess.run([command[0], "collections", "list", "--municipality", "halle"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert "halle/commercial-sites" in listed.stdout and "sites-from-csv" not in listed.stdout, \
        "all or nothing: the collection made for the failed import is gone too"
    assert "availability: 'availability' is a required property" in bad.stdout
    assert "fields not in the layer type, not read (--map property=field reads one): Verfügbarkeit" in bad.stdout
    ok = run(str(renamed), "--layer-type", "commercial-site", "--map", "availability=Verfügbarkeit")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "6 features imported into halle/sites-from-csv" in ok.stdout
    shp = run(str(files["zip"]))
    assert shp.returncode == 0, shp.stdout + shp.stderr
    assert "Shapefile fields read as the layer type's: area_gross → area_gross_ha," in shp.stdout


async def test_a_file_where_every_feature_fails_is_counted_whole_and_listed_in_part(imp_db, tmp_path):
    """Memory stays bounded however many features fail: every problem is counted, the first 1,000 listed."""
    n = 2500
    lines = ["wkt;name"] + [f"POLYGON((706{i % 900:03d} 5707000,706{i % 900:03d} 5707100,706999 5707100,"
                            f"706999 5707000,706{i % 900:03d} 5707000));Fläche {i}" for i in range(n)]
    path = tmp_path / "wrong-crs.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = await collection_state(imp_db)
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, path, crs="EPSG:4326")  # UTM metres read as degrees: outside, every one
    report = err.value.where["report"]
    assert report["rejected"] == n and report["problems"] > n  # a geometry and missing properties each
    assert len(report["issues"]) == 1000 and report["issues"][0]["index"] == 0
    assert any("outside" in i["message"] for i in report["issues"][:5])
    assert await collection_state(imp_db) == before


@pytest.mark.parametrize("mode", ["replace", "append"])
async def test_batches_already_moved_are_undone_when_a_later_one_fails(imp_db, tmp_path, monkeypatch, mode):
    """Batches move into the collection while the next ones are read. With two features per batch, a bad
    feature or a repeated id in the third batch still means nothing is written, and the report names it."""
    monkeypatch.setattr("service.importer.BATCH", 2)
    doc, _ = renamed_demo(tmp_path, "batched")
    before = await collection_state(imp_db)

    bad = json.loads(json.dumps(doc))
    bad["features"][5]["properties"]["zoning"] = "XX"
    (tmp_path / "bad.geojson").write_text(json.dumps(bad))
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, tmp_path / "bad.geojson", mode=mode)
    assert [(i["index"], i["property"]) for i in err.value.where["report"]["issues"]] == [(5, "zoning")]
    assert err.value.where["report"]["imported"] == 0
    assert await collection_state(imp_db) == before

    twice = json.loads(json.dumps(doc))
    twice["features"][4]["id"] = "batched-0"
    (tmp_path / "twice.geojson").write_text(json.dumps(twice))
    with pytest.raises(GeoTwinError) as err:
        await run_import(imp_db, tmp_path / "twice.geojson", mode=mode)
    assert err.value.where["report"]["issues"][0]["message"] == "2 features share the id 'batched-0'"
    assert await collection_state(imp_db) == before

    (tmp_path / "good.geojson").write_text(json.dumps(doc))
    report = await run_import(imp_db, tmp_path / "good.geojson", mode=mode)
    try:
        assert report.imported == report.total == len(doc["features"])
        after = await collection_state(imp_db)
        expected = {f"batched-{i}" for i in range(len(doc["features"]))}
        assert set(after) == (expected if mode == "replace" else set(before) | expected)
        if mode == "append":  # an id of the collection's own, in the last batch
            (tmp_path / "again.geojson").write_text(json.dumps({**doc, "features": doc["features"][-1:]}))
            with pytest.raises(GeoTwinError) as err:
                await run_import(imp_db, tmp_path / "again.geojson", mode="append")
            assert err.value.where["report"]["issues"][0]["message"] == \
                "the collection already has a feature 'batched-5'"
    finally:  # the demo sites, as the module's other tests expect them
        await run_import(imp_db, DEMO, mode="replace")
    assert await collection_state(imp_db) == before


class SlowMove(PausedAtMove):
    """The importer's real connection, whose moves take 30 s longer in PostgreSQL. It says it is at the move
    only once PostgreSQL runs the sleep: PostgreSQL ignores a cancel request that reaches a backend still
    waiting to read its next statement, so a stop sent earlier would wait the 30 s out (CI's busy machine once
    did; in the service the window is the time between sending the move and the server reading it)."""

    def __init__(self, conn, dsn):
        super().__init__(conn)
        self.dsn = dsn

    async def execute(self, sql, *args):
        if sql == MOVE:
            sleeping = asyncio.ensure_future(self.conn.execute("SELECT pg_sleep(30)"))
            watcher = await asyncpg.connect(self.dsn)
            try:
                while not await watcher.fetchval(
                        "SELECT state = 'active' AND query = 'SELECT pg_sleep(30)' FROM pg_stat_activity "
                        "WHERE pid = $1", self.conn.get_server_pid()):
                    await asyncio.sleep(0.01)
            finally:
                await watcher.close()
            self.at_move.set()
            await sleeping  # a cancellation of the move cancels the sleep with it
        return await self.conn.execute(sql, *args)


@pytest.mark.parametrize("stop", ["cancelled", "checking fails"])
async def test_an_import_stopped_while_a_batch_moves_writes_nothing_and_frees_its_connection(imp_db, tmp_path,
                                                                                              monkeypatch, stop):
    """A service shutting down cancels its imports, and checking a batch may fail unexpectedly. Either may
    happen while the previous batch is on its way into the collection: its statement is stopped, the import
    rolls back whole, and its connection is free for the next use at once."""
    monkeypatch.setattr("service.importer.BATCH", 2)
    checked = []

    def check_batch(*args, **kwargs):
        checked.append(1)
        if stop == "checking fails" and len(checked) == 2:
            deadline = time.monotonic() + 10
            while not conn.at_move.is_set() and time.monotonic() < deadline:  # the first batch is in PostgreSQL
                time.sleep(0.01)
            raise RuntimeError("a bug in checking")
        return real_check_batch(*args, **kwargs)

    monkeypatch.setattr("service.importer.check_batch", check_batch)
    doc, path = renamed_demo(tmp_path, "stopped")
    before = await collection_state(imp_db)
    conn = SlowMove(await asyncpg.connect(imp_db), imp_db)
    try:
        pk = await conn.fetchval(SITES_PK, "commercial-sites")
        started = time.monotonic()
        importing = asyncio.create_task(import_file(conn, pk, SITES, path, ImportOptions(mode="append")))
        await asyncio.wait_for(conn.at_move.wait(), 30)
        if stop == "cancelled":
            importing.cancel()
        with pytest.raises(asyncio.CancelledError if stop == "cancelled" else RuntimeError):
            await asyncio.wait_for(importing, 60)
        assert time.monotonic() - started < 20  # the 30 s statement was stopped, not waited for
        assert not conn.conn.is_in_transaction()
        assert await conn.conn.fetchval("SELECT count(*) FROM feature WHERE fid LIKE 'stopped-%'") == 0
    finally:
        await conn.conn.close()
    assert await collection_state(imp_db) == before


def test_uploads_left_by_a_dead_service_are_swept_up(tmp_path):
    """Each upload is removed when its job ends; a service killed meanwhile leaves it. At start the service
    removes those older than a day, and leaves younger ones (another worker's import may be reading one)."""
    old, young, other = (tmp_path / f"{UPLOAD_PREFIX}old", tmp_path / f"{UPLOAD_PREFIX}young", tmp_path / "other-old")
    for directory in (old, young, other):
        directory.mkdir()
        (directory / "upload.geojson").write_text("{}")
    day_ago = time.time() - 25 * 3600
    for directory in (old, other):
        os.utime(directory, (day_ago, day_ago))
    assert sweep_uploads(directory=tmp_path) == 1
    assert not old.exists() and young.exists() and other.exists()
