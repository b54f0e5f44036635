"""Real clients against a live server: GDAL/OGR (ogrinfo, ogr2ogr), OWSLib, QGIS, and a client generated from the
OpenAPI document by openapi-python-client, as a neighbour's developer would make one."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import httpx
from owslib.ogcapi.features import Features
from owslib.util import Authentication
from pyproj import Transformer

from tests.conftest import new_key, run_qgis

HERE = Path(__file__).parent


def run(*cmd: str, **env: str) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={"CPL_DEBUG": "OFF",
                                                                                     "PATH": "/usr/bin:/bin", **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def api_counts(root: str) -> dict[str, int]:
    cols = httpx.get(f"{root}/collections").json()["collections"]
    return {c["id"]: httpx.get(f"{root}/collections/{c['id']}/items?limit=1").json()["numberMatched"] for c in cols}


def test_ogrinfo_lists_collections_with_their_counts(live_server):
    for root in (f"{live_server}/municipalities/halle", f"{live_server}/municipalities/leipzig",
                 f"{live_server}/region"):
        expected = api_counts(root)
        listing = run("ogrinfo", "-ro", "-q", f"OAPIF:{root}")
        assert set(re.findall(r"^\d+: ([\w-]+)", listing, re.M)) == set(expected)
        for layer, count in expected.items():
            summary = run("ogrinfo", "-ro", "-so", f"OAPIF:{root}", layer)
            assert f"Feature Count: {count}" in summary, (root, layer)


def test_ogr2ogr_copies_a_collection_to_geopackage(live_server, tmp_path):
    out = tmp_path / "sites.gpkg"
    run("ogr2ogr", "-f", "GPKG", str(out), f"OAPIF:{live_server}/region", "commercial-sites")
    with sqlite3.connect(out) as db:
        names = [r[0] for r in db.execute('SELECT name FROM "commercial-sites"')]
        srs = db.execute("SELECT srs_id FROM gpkg_geometry_columns").fetchone()[0]
    assert len(names) == 15
    assert "Star Park – Teilfläche B (östlich der Reide)" in names
    assert "Güterverkehrszentrum Leipzig, Erweiterungsflächen" in names
    assert srs == 4326


def test_ogr2ogr_honours_a_bbox_spatial_filter(live_server, tmp_path):
    out = tmp_path / "leipzig.gpkg"
    run("ogr2ogr", "-f", "GPKG", "-spat", "12.2", "51.2", "12.6", "51.5", str(out), f"OAPIF:{live_server}/region",
        "ecological-zones")
    with sqlite3.connect(out) as db:
        assert db.execute('SELECT count(*) FROM "ecological-zones"').fetchone()[0] == 5


def test_owslib_pages_through_the_largest_demo_collection(live_server):
    api = Features(f"{live_server}/region")
    assert "planning-zones" in {c["id"] for c in api.collections()["collections"]}
    total = api.collection_items("planning-zones", limit=1)["numberMatched"]
    assert total == max(api_counts(f"{live_server}/region").values()) == 22
    seen, offset = [], 0
    while True:
        page = api.collection_items("planning-zones", limit=5, offset=offset)
        seen += [f["id"] for f in page["features"]]
        if not any(link["rel"] == "next" for link in page["links"]):
            break
        offset += 5
    assert len(seen) == len(set(seen)) == total
    assert any(f.startswith("leipzig:") for f in seen) and any(f.startswith("magdeburg:") for f in seen)


def test_gdal_and_owslib_send_a_key_as_the_basic_password(live_server, db_url):
    """Clients that know only user and password (GDAL_HTTP_USERPWD, OWSLib's Authentication, FME, older QGIS)
    send the key as the password and see their municipality's internal collections. A proxy's own Basic
    credentials pass through as before; an empty Bearer header is a 401, not an anonymous read."""
    import asyncio

    key = asyncio.run(new_key(db_url, "halle", "viewer", "Basic"))
    root = f"{live_server}/municipalities/halle"
    listed = set(re.findall(r"^\d+: ([\w-]+)", run("ogrinfo", "-ro", "-q", f"OAPIF:{root}",
                                                      GDAL_HTTP_USERPWD=f"planer:{key}", GDAL_HTTP_AUTH="BASIC"), re.M))
    assert "internal-notes" in listed
    assert "internal-notes" not in run("ogrinfo", "-ro", "-q", f"OAPIF:{root}")
    api = Features(root, auth=Authentication("planer", key))
    assert "internal-notes" in {c["id"] for c in api.collections()["collections"]}
    assert api.collection_items("internal-notes", limit=1)["numberMatched"] > 0
    wrong = httpx.get(f"{root}/collections", auth=("planer", key[:-2] + "xx"))
    assert wrong.status_code == 401 and "not valid" in wrong.json()["description"]
    proxy = httpx.get(f"{root}/collections", auth=("staging", "Sommer2026"))
    assert proxy.status_code == 200 and "internal-notes" not in proxy.text
    for empty in ({"Authorization": "Bearer"}, {"X-API-Key": ""}):  # curl -H "…: Bearer $UNSET"
        r = httpx.get(f"{root}/collections", headers=empty)
        assert r.status_code == 401 and "carries no key" in r.json()["description"], empty


def test_qgis_reads_an_internal_collection_with_the_key_in_a_basic_configuration(live_server, db_url, tmp_path):
    """Debian's QGIS (3.22) has no API header authentication; its *Basic* configuration with the key as the
    password opens the municipality's internal collection, which it cannot open without."""
    import asyncio

    key = asyncio.run(new_key(db_url, "halle", "viewer", "QGIS Basic"))
    for home in ("with", "without"):
        (tmp_path / home).mkdir()
    root = f"{live_server}/municipalities/halle"
    with_key = run_qgis("qgis_oapif.py", root, "internal-notes", "EPSG:25832", key, home=tmp_path / "with")
    expected = httpx.get(f"{root}/collections/internal-notes/items", headers={"X-API-Key": key}).json()
    assert with_key["valid"] and set(with_key["features"]) == {str(f["id"]) for f in expected["features"]} != set()
    without = run_qgis("qgis_oapif.py", root, "internal-notes", "EPSG:25832", home=tmp_path / "without")
    assert not without["valid"]


def test_gdal_knows_every_field_before_it_has_seen_one(live_server, tmp_path):
    """With one feature per page, GDAL still gets every layer-type field (from the feature schema) and one
    geometry type, so nothing a later feature carries is dropped on export."""
    out = tmp_path / "zones.gpkg"
    run("ogr2ogr", "-oo", "PAGE_SIZE=1", "-f", "GPKG", str(out), f"OAPIF:{live_server}/municipalities/halle",
        "planning-zones")
    with sqlite3.connect(out) as db:
        columns = {row[1] for row in db.execute('PRAGMA table_info("planning-zones")')}
        repealed = db.execute('SELECT in_force_until FROM "planning-zones" WHERE id = ?', ("bp47-1",)).fetchone()
        geometry_type = db.execute("SELECT geometry_type_name FROM gpkg_geometry_columns").fetchone()[0]
    assert {"gfz", "max_storeys", "in_force_until", "max_height_m"} <= columns
    assert repealed == ("2011-06-30",)
    assert geometry_type == "MULTIPOLYGON"


# ---------------------------------------------------------------- Part 2 (CRS) and attribute filters

EPSG = "http://www.opengis.net/def/crs/EPSG/0/"


def test_gdal_sends_attribute_filters_to_the_server(live_server):
    """The per-collection OpenAPI parameters let GDAL's OAPIF driver push `-where` to the server."""
    root = f"{live_server}/region"
    expected = httpx.get(f"{root}/collections/commercial-sites/items",
                         params={"availability": "verfuegbar", "limit": 1}).json()["numberMatched"]
    result = subprocess.run(["ogrinfo", "-ro", "-al", "-q", f"OAPIF:{root}", "commercial-sites", "-where",
                             "availability = 'verfuegbar'"], capture_output=True, text=True, timeout=120,
                            env={"CPL_DEBUG": "ON", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    fetched = re.findall(r"HTTP: Fetch\((\S+)\)", result.stderr)
    assert any("/items?" in url and "availability=verfuegbar" in url for url in fetched), fetched
    assert len(re.findall(r"^OGRFeature\(", result.stdout, re.M)) == expected > 0


def test_owslib_reads_etrs89_utm_coordinates_that_agree_with_pyproj(live_server):
    root = f"{live_server}/municipalities/leipzig"
    api = Features(root)
    plain = api.collection_items("commercial-sites", limit=100)
    utm = api.collection_items("commercial-sites", limit=100, crs=EPSG + "25832")
    to_utm = Transformer.from_crs(4326, 25832, always_xy=True)
    by_id = {f["id"]: f for f in utm["features"]}
    assert len(by_id) == len(plain["features"]) > 0
    for feature in plain["features"]:
        lon, lat = feature["geometry"]["coordinates"][0][0][0]
        x, y = by_id[feature["id"]]["geometry"]["coordinates"][0][0][0]
        ex, ey = to_utm.transform(lon, lat)
        assert abs(x - ex) < 0.05 and abs(y - ey) < 0.05, (feature["id"], (x, y), (ex, ey))
    r = httpx.get(f"{root}/collections/commercial-sites/items", params={"crs": EPSG + "25832", "limit": 1})
    assert r.headers["Content-Crs"] == f"<{EPSG}25832>"
    latlon = api.collection_items("commercial-sites", limit=1, crs=EPSG + "4326")["features"][0]
    lon, lat = plain["features"][0]["geometry"]["coordinates"][0][0][0]
    assert latlon["geometry"]["coordinates"][0][0][0] == [lat, lon], "EPSG:4326 is latitude first"


def test_qgis_places_features_in_etrs89_utm_where_the_server_does(live_server, tmp_path):
    """A QGIS project in EPSG:25832 with the layer from the OAPIF provider: each site lies within 5 cm of the
    coordinates the server returns for crs=EPSG:25832. (QGIS 3.22 reads CRS84 and reprojects itself; newer
    QGIS asks for the collection's storageCrs, which a request below imitates.)"""
    root = f"{live_server}/municipalities/halle"
    qgis = run_qgis("qgis_oapif.py", root, "commercial-sites", "EPSG:25832", home=tmp_path)
    assert qgis["valid"] and qgis["features"]
    # What QGIS >= 3.28 sends for a layer in the storage CRS: crs and bbox-crs in EPSG:25832.
    server = httpx.get(f"{root}/collections/commercial-sites/items",
                       params={"crs": EPSG + "25832", "bbox": "690000,5690000,730000,5730000",
                               "bbox-crs": EPSG + "25832", "limit": 1000}).json()["features"]
    assert {f["id"] for f in server} == set(qgis["features"])
    for feature in server:
        x, y = feature["geometry"]["coordinates"][0][0][0]
        qx, qy = qgis["features"][feature["id"]]["first"]
        assert abs(x - qx) < 0.05 and abs(y - qy) < 0.05, (feature["id"], (x, y), (qx, qy))


GENERATED_CLIENT_READS = """
import sys
from halle_api import Client
from halle_api.api.municipality import municipality_get_features_commercial_sites as sites
from halle_api.models import MunicipalityGetFeaturesCommercialSitesAvailability as Availability

answer = sites.sync(client=Client(base_url=sys.argv[1]), availability=Availability("verfuegbar"), limit=2)
first = answer.features[0]
print(answer.number_matched, len(answer.features), first.id, first.properties.name, first.properties.area_net_ha,
      type(first.geometry).__name__, sep="|")
"""


def test_a_client_generated_from_a_root_openapi_document_reads_typed_features(live_server, tmp_path):
    """openapi-python-client makes a typed client of a municipality's OpenAPI document without a warning (each
    collection's items answer carries its layer type's properties), and that client reads the sites."""
    root = f"{live_server}/municipalities/halle"
    doc = tmp_path / "halle.json"
    doc.write_bytes(httpx.get(f"{root}/api").content)
    tools = HERE.parent / ".tools" / "bin"  # ./dev.sh test installs tests/tools.txt there
    assert (tools / "openapi-python-client").exists(), "run ./dev.sh test: it installs the test tools into .tools"
    made = subprocess.run([str(tools / "openapi-python-client"), "generate", "--path", str(doc), "--output-path",
                           str(tmp_path / "halle_api"), "--meta", "none"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PATH": f"{tools}:/usr/bin:/bin"})
    assert made.returncode == 0 and "Warning" not in made.stdout + made.stderr, made.stdout + made.stderr
    read = subprocess.run([str(tools / "python"), "-c", GENERATED_CLIENT_READS, root], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert read.returncode == 0, read.stderr
    api = httpx.get(f"{root}/collections/commercial-sites/items",
                    params={"availability": "verfuegbar", "limit": 2}).json()
    first = api["features"][0]
    assert read.stdout.strip().split("|") == [
        str(api["numberMatched"]), "2", first["id"], first["properties"]["name"],
        str(first["properties"]["area_net_ha"]), first["geometry"]["type"]]
