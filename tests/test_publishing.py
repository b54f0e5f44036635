"""Accounts and rights, and editing through OGC API – Features Part 4, on a database of their own (the demo
data of the other tests stays untouched).

Keys come from the API and the CLI, tokens from an RSA key this test creates; every write is checked for what
it leaves behind: the feature, its ETag, the change log, and nothing at all when it is refused.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from urllib.parse import quote, urlsplit

import asyncpg
import httpx
import jwt
import mapbox_vector_tile
import pytest
import shapely
import shapely.geometry
from cryptography.hazmat.primitives.asymmetric import rsa
from pyproj import Transformer

from service.crs import CRS84
from service.main import create_app
from service.settings import AuthSettings
from service.tiles import matrix_sets
from tests.conftest import ROOT, run_qgis, serve_in_thread, settings_for

ISSUER = "https://login.example-kommune.de/realms/geotwin"
SITES = "/municipalities/halle/collections/commercial-sites"
GEOJSON = {"Content-Type": "application/geo+json"}


def site(fid: str | None = None, x: float = 11.99, y: float = 51.47, **props) -> dict:
    d = 0.004
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]]},
        "properties": {"name": "Testfläche", "area_gross_ha": 8.0, "area_net_ha": 7.5, "zoning": "GE",
                       "availability": "verfuegbar", "servicing": "erschlossen", **props}}
    if fid is not None:
        feature["id"] = fid
    return feature


@pytest.fixture(scope="module")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pub_db(demo_db):
    return demo_db("geotwin_pub")


@pytest.fixture(scope="module")
def auth_settings(signing_key) -> AuthSettings:
    public = jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    return AuthSettings(oidc_issuer=ISSUER, oidc_audience="geotwin",
                        oidc_jwks=json.dumps({"keys": [{**public, "kid": "test-1", "use": "sig", "alg": "RS256"}]}))


@pytest.fixture(scope="module")
async def pub(cluster, pub_db, auth_settings):
    app = create_app(settings_for(cluster, "geotwin_pub", auth=auth_settings, max_body_mb=1))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        yield app, client


def key_via_cli(cluster, *args: str) -> str:
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin", "PGDATABASE": "geotwin_pub",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "geotwin"), "keys", "create", *args], capture_output=True,
                         text=True, env=env, timeout=60, check=True).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def keys(cluster, pub_db) -> dict[str, str]:
    return {
        "platform": key_via_cli(cluster, "--platform", "--label", "Betrieb"),
        "halle_admin": key_via_cli(cluster, "--municipality", "halle", "--role", "admin", "--label", "IT Halle"),
        "halle_editor": key_via_cli(cluster, "--municipality", "halle", "--role", "editor", "--label",
                                    "Planungsamt Halle"),
        "halle_viewer": key_via_cli(cluster, "--municipality", "halle", "--role", "viewer"),
        "leipzig_editor": key_via_cli(cluster, "--municipality", "leipzig", "--role", "editor"),
    }


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def count(client, path: str = SITES) -> int:
    return (await client.get(f"{path}/items", params={"limit": 1})).json()["numberMatched"]


# ---------------------------------------------------------------- keys and rights

async def test_keys_are_shown_once_and_stored_only_as_hashes(pub, keys, pub_db):
    _, client = pub
    r = await client.post("/municipalities/halle/keys", json={"role": "viewer", "label": "Praktikum"},
                          headers=auth(keys["halle_admin"]))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["key"].startswith("gt_") and created["role"] == "viewer"
    listing = (await client.get("/municipalities/halle/keys", headers=auth(keys["halle_admin"]))).json()["keys"]
    assert any(k["id"] == created["id"] for k in listing)
    assert created["key"] not in json.dumps(listing)
    conn = await asyncpg.connect(pub_db)
    try:
        stored = await conn.fetch("SELECT * FROM api_key")
    finally:
        await conn.close()
    assert not any(created["key"].encode() in bytes(str(dict(row)), "utf-8") for row in stored)
    # Usable at once, useless the moment it is revoked.
    assert (await client.get(f"{SITES}/items", headers=auth(created["key"]))).status_code == 200
    assert (await client.delete(f"/municipalities/halle/keys/{created['id']}",
                                headers=auth(keys["halle_admin"]))).status_code == 204
    r = await client.get(f"{SITES}/items", headers=auth(created["key"]))
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("who, method, path, status", [
    (None, "POST", f"{SITES}/items", 401),
    (None, "GET", "/municipalities/halle/keys", 401),
    ("halle_viewer", "POST", f"{SITES}/items", 403),
    ("leipzig_editor", "POST", f"{SITES}/items", 403),
    ("leipzig_editor", "DELETE", f"{SITES}/items/gs-001", 403),
    ("halle_editor", "GET", "/municipalities/halle/keys", 403),
    ("halle_editor", "POST", "/municipalities/halle/collections", 403),
    ("halle_admin", "GET", "/municipalities/leipzig/keys", 403),
    ("halle_admin", "POST", "/admin/municipalities", 403),
    ("halle_editor", "POST", "/region/collections/commercial-sites/items", 403),
    ("gt_abc_wrong", "GET", f"{SITES}/items", 401),
    ("not-a-key", "GET", f"{SITES}/items", 401),
])
async def test_access_is_refused_where_it_must_be(pub, keys, who, method, path, status):
    _, client = pub
    headers = {} if who is None else auth(keys.get(who, who))
    before = await count(client)
    r = await client.request(method, path, headers={**headers, **GEOJSON}, content=json.dumps(site("x-1")))
    assert r.status_code == status, r.text
    assert r.json()["code"] in ("Unauthorized", "Forbidden") and r.json()["description"]
    assert await count(client) == before


async def test_internal_collections_are_visible_to_their_municipality_only(pub, keys):
    _, client = pub
    path = "/municipalities/halle/collections/internal-notes"
    assert (await client.get(path)).status_code == 404
    assert (await client.get(path, headers=auth(keys["leipzig_editor"]))).status_code == 404
    r = await client.get(f"{path}/items", headers=auth(keys["halle_viewer"]))
    assert r.status_code == 200 and r.json()["numberReturned"] > 0
    assert r.headers["cache-control"].startswith("private")
    listing = (await client.get("/municipalities/halle/collections", headers=auth(keys["platform"]))).json()
    assert "internal-notes" in {c["id"] for c in listing["collections"]}
    region = (await client.get("/region/collections", headers=auth(keys["halle_viewer"]))).json()
    assert all("internal" not in c["id"] for c in region["collections"])


async def test_platform_admin_onboards_a_municipality_whose_admin_then_works(pub, keys):
    _, client = pub
    r = await client.post("/admin/municipalities", headers=auth(keys["platform"]),
                          json={"slug": "saalekreis", "name": "Saalekreis", "ags": "15088", "state": "Sachsen-Anhalt",
                                "crs": 25832})
    assert r.status_code == 201, r.text
    r = await client.post("/municipalities/saalekreis/keys", headers=auth(keys["platform"]),
                          json={"role": "admin", "label": "IT Saalekreis"})
    admin_key = r.json()["key"]
    r = await client.post("/municipalities/saalekreis/collections", headers=auth(admin_key),
                          json={"id": "commercial-sites", "title": "Gewerbeflächen Saalekreis",
                                "layer_type": "commercial-site"})
    assert r.status_code == 201, r.text
    editor = (await client.post("/municipalities/saalekreis/keys", headers=auth(admin_key),
                                json={"role": "editor"})).json()["key"]
    r = await client.post("/municipalities/saalekreis/collections/commercial-sites/items", headers={
        **auth(editor), **GEOJSON}, content=json.dumps(site("sk-1", 11.9, 51.4)))
    assert r.status_code == 201, r.text
    r = await client.post("/admin/municipalities", headers=auth(keys["platform"]),
                          json={"slug": "Bad Slug!", "name": "x", "ags": "1", "state": "x", "crs": 4326})
    assert r.status_code == 400


@pytest.mark.parametrize("body, where, words", [
    ({"slug": "Bad Slug!"}, "slug", "a slug is lower-case letters (a-z), digits and hyphens"),
    ({"ags": "1508"}, "ags", "an AGS has 8 digits (a municipality's, e.g. 15002000) or 5 (a district's"),
    ({"ags": "1500300"}, "ags", "not '1500300'"),  # 7 digits: was taken
    ({"ags": "99088"}, "ags", "an AGS begins with its Land's key, 01 to 16, not 99"),
    ({"state": "Sachsen"}, "state", "AGS 15084 lies in Sachsen-Anhalt (its first two digits, 15), not in 'Sachsen'"),
    ({"crs": 4326}, "crs", "25832 or 25833"),
    ({"crs": "EPSG:3857"}, "crs", "25832 or 25833"),
])
async def test_onboarding_refuses_a_municipality_described_wrongly_by_name(pub, keys, body, where, words):
    _, client = pub
    r = await client.post("/admin/municipalities", headers=auth(keys["platform"]),
                          json={"slug": "burgenlandkreis", "name": "Burgenlandkreis", "ags": "15084"} | body)
    assert r.status_code == 400, r.text
    assert r.json()["property"] == where and words in r.json()["description"], r.json()
    assert (await client.get("/municipalities/burgenlandkreis")).status_code == 404


async def test_onboarding_takes_the_state_and_crs_from_the_ags_when_not_given(pub, keys, cluster):
    """The AGS's first two digits are the Land's key: Nordsachsen (14730) lies in Sachsen, whose data arrives
    in ETRS89 / UTM 33N. `geotwin municipality add` checks the same way and says so without a traceback."""
    _, client = pub
    r = await client.post("/admin/municipalities", headers=auth(keys["platform"]),
                          json={"slug": "nordsachsen", "name": "Nordsachsen", "ags": "14730"})
    assert r.status_code == 201, r.text
    assert (r.json()["state"], r.json()["crs"]) == ("Sachsen", 25833)
    r = await client.post("/admin/municipalities", headers=auth(keys["platform"]), json={
        "slug": "altenburger-land", "name": "Altenburger Land", "ags": "16077", "state": "th",
        "crs": "http://www.opengis.net/def/crs/EPSG/0/25832"})
    assert (r.status_code, r.json()["state"], r.json()["crs"]) == (201, "Thüringen", 25832), r.text
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin", "PGDATABASE": "geotwin_pub",
           "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    geotwin = str(ROOT / ".venv" / "bin" / "geotwin")
    wrong = subprocess.run([geotwin, "municipality", "add", "anhalt-bitterfeld", "Anhalt-Bitterfeld", "1508"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr
    assert "Invalid value for AGS: an AGS has 8 digits" in " ".join(wrong.stderr.replace("│", " ").split())
    done = subprocess.run([geotwin, "municipality", "add", "anhalt-bitterfeld", "Anhalt-Bitterfeld", "15082"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Anhalt-Bitterfeld, Sachsen-Anhalt, AGS 15082, data in EPSG:25832" in done.stdout, done.stdout


@pytest.mark.parametrize("path, body, where, words", [
    # A misspelt member was dropped unseen: this collection was made public.
    ("/municipalities/halle/collections", {"id": "vertraulich", "title": "Vertraulich", "layer_type": "generic",
                                           "visiblity": "internal"}, "visiblity", "not a member this body takes"),
    ("/municipalities/halle/collections", {"id": "vertraulich", "title": "Vertraulich", "layer_type": "gneric"},
     "layer_type", "no layer type 'gneric'; known: commercial-site, ecological-zone, generic"),  # was a 404
    ("/municipalities/halle/keys", {"role": "editor", "lable": "GIS-Stelle"}, "lable", "not a member"),
    ("/admin/municipalities", {"slug": "burgenlandkreis", "name": "Burgenlandkreis", "ags": "15084", "crd": 25833},
     "crd", "not a member"),
])
async def test_a_misspelt_or_unknown_member_of_an_admin_body_is_refused_by_name(pub, keys, path, body, where, words):
    _, client = pub
    who = auth(keys["platform" if path.startswith("/admin") else "halle_admin"])
    before = (await client.get("/municipalities/halle/collections", headers=who)).json()
    r = await client.post(path, headers=who, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["property"] == where and words in r.json()["description"], r.json()
    assert (await client.get("/municipalities/halle/collections", headers=who)).json() == before


@pytest.mark.parametrize("content, media, status, words", [
    (b"[]", "application/json", 400, "the body is a JSON object, not an array"),
    (b'"viewer"', "application/json", 400, "the body is a JSON object, not a string"),
    (b'{"role": "viewer"}', "text/plain", 415, "send the body as application/json, not text/plain"),
    (b'{"role": "viewer"}', None, 400, "the request has no Content-Type header: send the body as application/json"),
    (b'{"role": "viewer", "label": "GIS\\u0000"}', "application/json", 400,
     "label: text may not hold the character U+0000 (NUL)"),  # was the regular expression that refused it
])
async def test_an_admin_body_of_the_wrong_shape_or_type_is_named_as_what_it_is(pub, keys, content, media, status,
                                                                                  words):
    """Pydantic's "Input should be a valid dictionary or object to extract fields from" said neither what the
    body was nor, for a body sent as text/plain (FastAPI then reads no JSON at all), that its type was wrong."""
    _, client = pub
    who = auth(keys["halle_admin"])
    before = (await client.get("/municipalities/halle/keys", headers=who)).json()
    r = await client.post("/municipalities/halle/keys", content=content,
                          headers=who | ({"Content-Type": media} if media else {}))
    assert r.status_code == status, r.text
    assert words in r.json()["description"], r.json()
    assert r.json().get("parameter") == ("Content-Type" if status == 415 or media is None else None)
    assert (await client.get("/municipalities/halle/keys", headers=who)).json() == before


async def test_an_admin_describes_a_collection_anew_and_deletes_one(pub, keys):
    """A municipality's admin fixes a title, makes an internal collection public (and back), and deletes a
    collection with its features, each with the ETag last read; editors and neighbours may not."""
    _, client = pub
    admin, editor = auth(keys["halle_admin"]), auth(keys["halle_editor"])
    path = "/municipalities/halle/collections/entwurf"
    r = await client.post("/municipalities/halle/collections", headers=admin, json={
        "id": "entwurf", "title": "Gewerbeflachen (Entwurf)", "layer_type": "commercial-site",
        "visibility": "internal", "keywords": ["Entwurf"]})
    assert r.status_code == 201, r.text
    r = await client.post(f"{path}/items", headers={**editor, **GEOJSON}, content=json.dumps(site("e-1", 11.95, 51.47)))
    assert r.status_code == 201, r.text
    assert (await client.get(path)).status_code == 404, "internal: not for the public"
    seen = await client.get(path, headers=admin)
    etag = seen.headers["etag"]

    refused = [
        (editor, {"If-Match": etag}, {"title": "x"}, 403, None),
        (auth(keys["leipzig_editor"]), {"If-Match": etag}, {"title": "x"}, 403, None),
        ({}, {"If-Match": etag}, {"title": "x"}, 401, None),
        (admin, {}, {"title": "x"}, 428, "If-Match"),
        (admin, {"If-Match": '"0123"'}, {"title": "x"}, 412, "If-Match"),
        (admin, {"If-Match": etag}, {"layer_type": "planning-zone"}, 400, "layer_type"),
        (admin, {"If-Match": etag}, {"id": "anders"}, 400, "id"),
        (admin, {"If-Match": etag}, {"title": None}, 400, "title"),
        (admin, {"If-Match": etag}, {"visibility": "geheim"}, 400, "visibility"),
        (admin, {"If-Match": etag}, {"colour": "rot"}, 400, "colour"),
    ]
    for who, headers, body, status, where in refused:
        r = await client.patch(path, headers={**who, **headers}, json=body)
        assert r.status_code == status, (body, r.text)
        if where:
            assert where in (r.json().get("parameter"), r.json().get("property")), (body, r.json())
    assert (await client.get(path, headers=admin)).headers["etag"] == etag, "nothing changed"

    r = await client.patch(path, headers={**admin, "If-Match": etag}, json={
        "title": "Gewerbeflächen (Entwurf)", "visibility": "public", "keywords": None, "id": "entwurf",
        "layer_type": "commercial-site"})
    assert r.status_code == 204, r.text
    public = await client.get(path)
    assert public.status_code == 200 and public.headers["etag"] == r.headers["etag"] != etag
    assert public.json()["title"] == "Gewerbeflächen (Entwurf)" and public.json()["keywords"] == []
    assert public.json()["description"] == "" and (await count(client, path)) == 1
    assert (await client.get(path, headers={"If-None-Match": etag})).status_code == 200, "the old copy is stale"
    r = await client.patch(path, headers={**admin, "If-Match": etag}, json={"visibility": "internal"})
    assert r.status_code == 412, "the ETag before the change no longer matches"
    assert r.headers["etag"] == public.headers["etag"], "a 412 names the current version"

    for who, headers, status in ((editor, {"If-Match": public.headers["etag"]}, 403), (admin, {}, 428)):
        assert (await client.delete(path, headers={**who, **headers})).status_code == status
    r = await client.delete(path, headers={**admin, "If-Match": public.headers["etag"]})
    assert r.status_code == 204, r.text
    for url in (path, f"{path}/items", f"{path}/items/e-1"):
        assert (await client.get(url, headers=admin)).status_code == 404, url
    listing = (await client.get("/municipalities/halle/collections", headers=admin)).json()
    assert "entwurf" not in {c["id"] for c in listing["collections"]}
    assert (await client.delete(path, headers={**admin, "If-Match": "*"})).status_code == 404


async def test_a_collection_made_again_under_its_old_id_shows_its_own_data(pub, keys):
    """An admin deletes a collection and makes it again under the same id (to start over), then loads it the
    way the first one was loaded: it counts the same number of changes as the first one did. Its tiles,
    items and metadata must not answer with the first one's (from the tile cache, or as a 304 to the ETag a
    map or browser kept): caches key on the collection itself, not only on how often it changed."""
    _, client = pub
    admin, editor = auth(keys["halle_admin"]), auth(keys["halle_editor"])
    path = "/municipalities/halle/collections/neuanfang"
    tile = matrix_sets()["WebMercatorQuad"].tile(11.952, 51.472, 14)
    tile_url = f"{path}/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}"
    urls = (tile_url, f"{path}/items", f"{path}/items/n-1", path)

    async def made_and_loaded(name: str) -> dict[str, httpx.Response]:
        r = await client.post("/municipalities/halle/collections", headers=admin, json={
            "id": "neuanfang", "title": "Neuanfang", "layer_type": "commercial-site", "visibility": "public"})
        assert r.status_code == 201, r.text
        r = await client.post(f"{path}/items", headers={**editor, **GEOJSON},
                              content=json.dumps(site("n-1", 11.95, 51.47, name=name)))
        assert r.status_code == 201, r.text
        return {url: await client.get(url) for url in urls}

    first = await made_and_loaded("Erster Versuch")
    assert all(r.status_code == 200 for r in first.values())
    r = await client.delete(path, headers={**admin, "If-Match": first[path].headers["etag"]})
    assert r.status_code == 204, r.text
    second = await made_and_loaded("Zweiter Versuch")
    assert (await client.get(f"{path}/items/n-1")).json()["properties"]["name"] == "Zweiter Versuch"
    layer = mapbox_vector_tile.decode(second[tile_url].content)["neuanfang"]
    assert [f["properties"]["name"] for f in layer["features"]] == ["Zweiter Versuch"], "the first one's tile"
    for url in urls:
        assert second[url].headers["etag"] != first[url].headers["etag"], url
        again = await client.get(url, headers={"If-None-Match": first[url].headers["etag"]})
        assert again.status_code == 200, f"{url}: the first collection's copy would be kept"
    r = await client.delete(path, headers={**admin, "If-Match": second[path].headers["etag"]})
    assert r.status_code == 204, r.text


async def test_the_cli_lists_describes_anew_and_deletes_collections(cluster, pub, keys):
    _, client = pub
    admin = auth(keys["halle_admin"])
    r = await client.post("/municipalities/halle/collections", headers=admin, json={
        "id": "probe", "title": "Probe", "layer_type": "generic", "visibility": "internal"})
    assert r.status_code == 201, r.text
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin", "PGDATABASE": "geotwin_pub",
           "PATH": "/usr/bin:/bin", "COLUMNS": "200"}

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / ".venv" / "bin" / "geotwin"), "collections", *args], input=stdin,
                              capture_output=True, text=True, env=env, timeout=60)

    listed = cli("list", "--municipality", "halle")
    assert re.search(r"halle/probe\s+│ Probe\s+│ generic\s+│ internal\s+│ 0 ", listed.stdout), listed.stdout
    done = cli("set", "halle/probe", "--title", "Probe 2027", "--visibility", "public", "--keyword", "a",
               "--keyword", "b")
    assert done.returncode == 0 and "halle/probe changed (title, keywords, visibility)" in done.stdout, done.stdout
    public = (await client.get("/municipalities/halle/collections/probe")).json()
    assert (public["title"], public["keywords"]) == ("Probe 2027", ["a", "b"])
    assert cli("set", "halle/probe", "--visibility", "geheim").returncode == 2
    assert cli("set", "halle/nix", "--title", "x").returncode == 2
    kept = cli("delete", "halle/probe", stdin="n\n")
    assert kept.returncode == 1 and "with its 0 features" in kept.stdout
    assert (await client.get("/municipalities/halle/collections/probe")).status_code == 200
    gone = cli("delete", "halle/probe", "--yes")
    assert gone.returncode == 0 and "halle/probe deleted" in gone.stdout, gone.stdout + gone.stderr
    assert (await client.get("/municipalities/halle/collections/probe", headers=admin)).status_code == 404


# ---------------------------------------------------------------- editing

async def test_create_read_replace_patch_delete_with_etags_and_a_change_log(pub, keys, pub_db):
    _, client = pub
    editor = {**auth(keys["halle_editor"]), **GEOJSON}
    before = await count(client)
    r = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site(name="Neue Fläche")))
    assert r.status_code == 201, r.text
    location, etag = r.headers["location"], r.headers["etag"]
    fid = location.rsplit("/", 1)[1]
    assert await count(client) == before + 1, "the catalog follows the write at once"
    got = await client.get(location)
    assert got.headers["etag"] == etag and got.json()["properties"]["name"] == "Neue Fläche"

    changed = site(fid, name="Umbenannt")
    assert (await client.put(location, headers=editor, content=json.dumps(changed))).status_code == 428
    stale = await client.put(location, headers={**editor, "If-Match": '"1"'}, content=json.dumps(changed))
    assert stale.status_code == 412 and stale.json()["parameter"] == "If-Match"
    r = await client.put(location, headers={**editor, "If-Match": etag}, content=json.dumps(changed))
    assert r.status_code == 200, r.text
    etag2 = r.headers["etag"]
    assert etag2 != etag and r.json()["properties"]["name"] == "Umbenannt"

    geometry_before = (await client.get(location, params={"crs": "http://www.opengis.net/def/crs/EPSG/0/25832"})
                       ).json()["geometry"]
    r = await client.patch(location, headers={**auth(keys["halle_editor"]), "Content-Type":
                                              "application/merge-patch+json", "If-Match": etag2},
                           content=json.dumps({"properties": {"price_eur_m2": 42.5, "zoning": None}}))
    assert r.status_code == 422 and r.json()["property"] == "zoning", "zoning is required: removing it fails"
    r = await client.patch(location, headers={**auth(keys["halle_editor"]), "Content-Type":
                                              "application/merge-patch+json", "If-Match": etag2},
                           content=json.dumps({"properties": {"price_eur_m2": 42.5}}))
    assert r.status_code == 200, r.text
    assert r.json()["properties"]["price_eur_m2"] == 42.5 and r.json()["properties"]["name"] == "Umbenannt"
    geometry_after = (await client.get(location, params={"crs": "http://www.opengis.net/def/crs/EPSG/0/25832"})
                      ).json()["geometry"]
    assert geometry_after == geometry_before, "a properties patch leaves the stored geometry exactly as it was"

    r = await client.delete(location, headers={**editor, "If-Match": r.headers["etag"]})
    assert r.status_code == 204
    assert (await client.get(location)).status_code == 404
    assert await count(client) == before

    conn = await asyncpg.connect(pub_db)
    try:
        log = await conn.fetch("SELECT op, actor, properties->>'name' AS name FROM feature_change "
                               "WHERE fid = $1 ORDER BY change_id", fid)
    finally:
        await conn.close()
    assert [r["op"] for r in log] == ["I", "U", "U", "D"]
    assert all("Planungsamt Halle" in r["actor"] for r in log)
    assert [r["name"] for r in log][:2] == ["Neue Fläche", "Umbenannt"]


async def test_two_planners_updating_one_feature_one_wins_the_other_gets_412(pub, keys):
    _, client = pub
    editor = {**auth(keys["halle_editor"]), **GEOJSON}
    r = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site("race-1")))
    etag = r.headers["etag"]
    results = await asyncio.gather(*(
        client.put(f"{SITES}/items/race-1", headers={**editor, "If-Match": etag},
                   content=json.dumps(site("race-1", name=f"Planer {i}"))) for i in range(2)))
    assert sorted(r.status_code for r in results) == [200, 412]
    winner = next(r for r in results if r.status_code == 200).json()["properties"]["name"]
    assert (await client.get(f"{SITES}/items/race-1")).json()["properties"]["name"] == winner


async def test_qgis_editing_through_ogc_api_features_asks_options_then_patches_without_if_match(cluster, pub,
                                                                                                 keys):
    """What QGIS (3.32 and later) does to edit an OAPIF layer: OPTIONS on the items and on one item, and it
    offers editing for what `Allow` names; then POST, PATCH (a merge patch of what changed) and DELETE, with no
    If-Match. By default such a PATCH is 428; with GEOTWIN_API__IF_MATCH=optional it goes through, and a stale
    If-Match is still 412."""
    _, client = pub
    editor = {**auth(keys["halle_editor"]), **GEOJSON}
    # 200 with Allow and, where POST or PATCH is allowed, the bodies they take (Part 4's options-response,
    # options-accept-post and accept-patch)
    r = await client.options(f"{SITES}/items", headers=auth(keys["halle_editor"]))
    assert r.status_code == 200 and r.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert r.headers["accept-post"] == "application/geo+json" and "accept-patch" not in r.headers
    r = await client.options(f"{SITES}/items/unknown_id", headers=auth(keys["halle_editor"]))
    assert r.status_code == 200 and r.headers["allow"] == "DELETE, GET, HEAD, PATCH, PUT, OPTIONS"
    assert r.headers["accept-patch"] == "application/merge-patch+json" and "accept-post" not in r.headers
    # Only an editor of the municipality is offered editing: QGIS greys the pencil out for everybody else.
    for who in ({}, auth(keys["halle_viewer"]), auth(keys["leipzig_editor"])):
        r = await client.options(f"{SITES}/items/unknown_id", headers=who)
        assert r.status_code == 200 and r.headers["allow"] == "GET, HEAD, OPTIONS", who
        assert "accept-patch" not in r.headers, who
    r = await client.options("/region/collections/commercial-sites/items", headers=auth(keys["platform"]))
    assert r.status_code == 200 and "POST" not in r.headers["allow"], "the region is read-only"
    assert (await client.options("/nowhere")).status_code == 404

    await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site("qgis-1")))
    patch = {**auth(keys["halle_editor"]), "Content-Type": "application/merge-patch+json"}
    body = json.dumps({"properties": {"name": "aus QGIS"}})
    r = await client.patch(f"{SITES}/items/qgis-1", headers=patch, content=body)
    assert r.status_code == 428 and r.json()["parameter"] == "If-Match"

    app = create_app(settings_for(cluster, "geotwin_pub", if_match="optional"))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver") as lenient:
        r = await lenient.patch(f"{SITES}/items/qgis-1", headers=patch, content=body)
        assert r.status_code == 200, r.text
        assert (await lenient.get(f"{SITES}/items/qgis-1")).json()["properties"]["name"] == "aus QGIS"
        r = await lenient.patch(f"{SITES}/items/qgis-1", headers={**patch, "If-Match": '"1"'}, content=body)
        assert r.status_code == 412
        api = (await lenient.get("/municipalities/halle/api")).json()
        if_match = [p for p in api["paths"]["/collections/{collectionId}/items/{featureId}"]["patch"]["parameters"]
                    if p.get("name") == "If-Match"]
        assert if_match and if_match[0]["required"] is False
        classes = (await lenient.get("/municipalities/halle/conformance")).json()["conformsTo"]
        assert not [c for c in classes if "optimistic-locking" in c], "a write without If-Match is not a 428 here"
        assert (await lenient.delete(f"{SITES}/items/qgis-1", headers=auth(keys["halle_editor"]))).status_code == 204
        assert (await lenient.delete(f"{SITES}/items/qgis-1",
                                     headers=auth(keys["leipzig_editor"]))).status_code == 403


async def test_a_batch_with_one_bad_feature_writes_nothing_and_names_it(pub, keys):
    _, client = pub
    before = await count(client)
    bad = site("batch-2")
    bad["properties"]["area_net_ha"] = "viel"
    body = {"type": "FeatureCollection", "features": [site("batch-1"), bad, site("batch-3", zoning="XX")]}
    r = await client.post(f"{SITES}/items", headers={**auth(keys["halle_editor"]), **GEOJSON},
                          content=json.dumps(body))
    assert r.status_code == 422
    err = r.json()
    assert err["index"] == 1 and err["property"] == "area_net_ha"
    assert {(i["index"], i["property"]) for i in err["issues"]} == {(1, "area_net_ha"), (2, "zoning")}
    assert await count(client) == before
    body["features"] = [site("batch-1"), site("batch-3")]
    r = await client.post(f"{SITES}/items", headers={**auth(keys["halle_editor"]), **GEOJSON},
                          content=json.dumps(body))
    assert r.status_code == 201 and r.json()["numberCreated"] == 2
    assert await count(client) == before + 2
    again = await client.post(f"{SITES}/items", headers={**auth(keys["halle_editor"]), **GEOJSON},
                              content=json.dumps(site("batch-1")))
    assert again.status_code == 409 and again.json()["property"] == "id"
    # In a batch, the first feature whose id is taken, by its index, and how many there are.
    body["features"] = [site("batch-4"), site("batch-3"), site("batch-1")]
    again = await client.post(f"{SITES}/items", headers={**auth(keys["halle_editor"]), **GEOJSON},
                              content=json.dumps(body))
    assert again.status_code == 409 and (again.json()["property"], again.json()["index"]) == ("id", 1)
    assert again.json()["description"].startswith("2 feature id(s) already in commercial-sites: batch-3, batch-1")
    assert await count(client) == before + 2


async def test_any_feature_id_gets_links_that_lead_back_to_it(pub, keys):
    """Plan numbers hold slashes (`Nr. 12/3`), names umlauts and signs. Every link and `Location` carries the id
    percent-encoded (a `€` in a header was a 500 after the write had committed), and each of them, followed,
    reads, changes, lists and deletes that feature; the regional view too."""
    _, client = pub
    editor = auth(keys["halle_editor"])
    for i, fid in enumerate(["Nr. 12/3", "Fläche €", "q?x#y&z=1", "halle:alt"]):
        r = await client.post(f"{SITES}/items", headers={**editor, **GEOJSON},
                              content=json.dumps(site(fid, x=12.1 + i * 0.01)))
        assert r.status_code == 201, r.text
        location = r.headers["location"]
        assert location.isascii() and location.endswith("/items/" + quote(fid, safe=":@")), location
        path = urlsplit(location).path
        got = await client.get(path)
        assert got.status_code == 200 and got.json()["id"] == fid
        assert got.json()["links"][0]["href"] == f"{location}?f=json"
        r = await client.patch(path, headers={**editor, "If-Match": got.headers["etag"],
                                              "Content-Type": "application/merge-patch+json"},
                               content=json.dumps({"properties": {"name": "geändert"}}))
        assert r.status_code == 200 and r.json()["properties"]["name"] == "geändert"
        versions = (await client.get(f"{path}/versions")).json()
        assert len(versions["versions"]) == 2 and versions["links"][0]["href"] == location
        page = (await client.get(f"{SITES}/items", params={"f": "html", "limit": 1000})).text
        assert f'{path}?f=html"' in page
        regional = await client.get(f"/region/collections/commercial-sites/items/{quote('halle:' + fid, safe=':@')}")
        assert regional.status_code == 200 and regional.json()["id"] == f"halle:{fid}"
        r = await client.delete(path, headers={**editor, "If-Match": (await client.get(path)).headers["etag"]})
        assert r.status_code == 204 and (await client.get(path)).status_code == 404


async def test_writes_answer_as_part_4_says_without_a_content_type_or_for_a_missing_feature(pub, keys):
    """OGC API - Features - Part 4: a body without a Content-Type header is a 400 (a 415 is for a type not read),
    and a feature that does not exist is a 404 without If-Match too: there is no ETag to send."""
    _, client = pub
    editor = auth(keys["halle_editor"])
    before = await count(client)
    body = json.dumps(site("ohne-typ")).encode()
    for method, path in (("POST", f"{SITES}/items"), ("PUT", f"{SITES}/items/gs-001"),
                         ("PATCH", f"{SITES}/items/gs-001")):
        etag = (await client.get(f"{SITES}/items/gs-001")).headers["etag"]
        r = await client.request(method, path, content=body, headers={**editor, "If-Match": etag})
        assert (r.status_code, r.json()["parameter"]) == (400, "Content-Type"), (method, r.text)
        assert "no Content-Type header" in r.json()["description"]
    assert await count(client) == before
    assert (await client.get(f"{SITES}/items/ohne-typ")).status_code == 404
    for method, content, media in (("PUT", json.dumps(site()), "application/geo+json"),
                                   ("PATCH", '{"properties": {"name": "x"}}', "application/merge-patch+json"),
                                   ("DELETE", None, None)):
        for condition in ({}, {"If-Match": '"xyz"'}):
            r = await client.request(method, f"{SITES}/items/nirgends", content=content,
                                     headers={**editor, **condition, **({"Content-Type": media} if media else {})})
            assert (r.status_code, r.json()["parameter"]) == (404, "featureId"), (method, condition, r.text)
    r = await client.delete(f"{SITES}/items/gs-001", headers=editor)
    assert r.status_code == 428, "an existing feature still needs If-Match"


@pytest.mark.parametrize("body, headers, status, where", [
    (b"{not json", {}, 400, {}),
    (json.dumps(site()).encode(), {"Content-Type": "text/plain"}, 415, {"parameter": "Content-Type"}),
    (json.dumps({"type": "Point", "coordinates": [1, 2]}).encode(), {}, 422, {"property": "type"}),
    (json.dumps(site() | {"geometry": None}).encode(), {}, 422, {"property": "geometry"}),
    (json.dumps(site() | {"geometry": {"type": "Point", "coordinates": [12, 51]}}).encode(), {}, 422,
     {"property": "geometry"}),
    (json.dumps(site() | {"geometry": {"type": "Polygon", "coordinates": [
        [[12, 51], [12.01, 51.01], [12.01, 51], [12, 51.01], [12, 51]]]}}).encode(), {}, 422, {"property": "geometry"}),
    (json.dumps(site(x=706193, y=5707666)).encode(), {}, 422, {"property": "geometry"}),  # UTM without Content-Crs
    (json.dumps(site()).encode().replace(b"11.99", b"NaN"), {}, 400, {}),
    (json.dumps(site()).encode(), {"Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/2056>"}, 400,
     {"parameter": "Content-Crs"}),
    (json.dumps(site(colour="rot")).encode(), {}, 422, {"property": "colour"}),
    (json.dumps(site(name="Hafen\x00Nord")).encode(), {}, 422, {"property": "name"}),  # PostgreSQL can't store it
    (json.dumps(site("x" * 201)).encode(), {}, 422, {"property": "id"}),
    # /items/Nr. 12%2Fversions would be the versions of "Nr. 12": such a feature could never be read
    (json.dumps(site("Nr. 12/versions")).encode(), {}, 422, {"property": "id"}),
    (b"{" + b'"a":' * 1 + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, 400, {}),
    (json.dumps({"type": "FeatureCollection", "features": []}).encode(), {}, 400, {}),
    (b"x" * (1024 * 1024 + 10), {}, 413, {}),
])
async def test_bad_bodies_are_refused_clearly_and_write_nothing(pub, keys, body, headers, status, where):
    _, client = pub
    before = await count(client)
    r = await client.post(f"{SITES}/items", headers={**auth(keys["halle_editor"]), **GEOJSON, **headers},
                          content=body)
    assert r.status_code == status, r.text[:500]
    for key, value in where.items():
        assert r.json()[key] == value, r.json()
    assert await count(client) == before


@pytest.mark.parametrize("geometry, message", [
    ({"type": "Polgon", "coordinates": [[[12, 51], [12.01, 51], [12.01, 51.01], [12, 51]]]},  # was a 500
     "type 'Polgon' is not a GeoJSON geometry type (one of 'Point', 'MultiPoint', 'LineString', 'MultiLineString', "
     "'Polygon', 'MultiPolygon', 'GeometryCollection')"),
    ({"type": "Polygon", "coordinates": [[12, 51], [12.01, 51], [12.01, 51.01], [12, 51]]},
     "coordinates[0][0]: a position is 2 or 3 numbers (x, y, and z if any), not 12 (are the coordinates nested one "
     "level too shallow?)"),
    ({"type": "Polygon", "coordinates": [[[12, 51]]]},
     "coordinates[0]: a ring needs at least 4 positions (the last one repeating the first), not 1"),
    ({"type": "Polygon", "coordinates": [[[12, 51], [12.01], [12.01, 51.01], [12, 51]]]},
     "coordinates[0][1]: a position is 2 or 3 numbers (x, y, and z if any), not [12.01]"),
    ({"type": "Polygon"}, "coordinates: missing"),
    ({"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [12, 51]}, {"type": "Polgon"}]},
     "geometries[1]: type 'Polgon' is not a GeoJSON geometry type (one of 'Point', 'MultiPoint', 'LineString', "
     "'MultiLineString', 'Polygon', 'MultiPolygon', 'GeometryCollection')"),
    # Shapely reads text as numbers without a word (an import refuses them): now refused here too.
    ({"type": "Polygon", "coordinates": [[[12, 51], ["12.01", "51"], [12.01, 51.01], [12, 51]]]},
     "coordinates[0][1]: a position is 2 or 3 numbers (x, y, and z if any), not ['12.01', '51'] (numbers written as "
     "text? RFC 7946 wants them as JSON numbers)"),
    ({"type": "Point", "coordinates": [12.0, True]},
     "coordinates: a position is 2 or 3 numbers (x, y, and z if any), not [12.0, True]"),
])
async def test_a_geometry_that_is_no_geojson_is_named_with_what_is_wrong_and_where(pub, keys, geometry, message):
    """What Shapely cannot make a geometry of is checked against GeoJSON (RFC 7946), as a file's features are
    on import: the answer says what is wrong and where in `coordinates`, not Shapely's exception."""
    _, client = pub
    before = await count(client)
    r = await client.post(f"{SITES}/items", headers={**auth(keys["halle_editor"]), **GEOJSON},
                          content=json.dumps(site("kaputt") | {"geometry": geometry}))
    assert r.status_code == 422, r.text
    assert r.json()["property"] == "geometry" and r.json()["issues"][0]["message"] == message, r.json()
    assert await count(client) == before


@pytest.mark.parametrize("patch, where, words", [
    ({"type": "Polygon", "coordinates": [[[12, 51], [12.01, 51], [12.01, 51.01], [12, 51]]]}, "coordinates",
     "a Feature has no member `coordinates`"),
    ({"type": "Polygon"}, "type", "its `type` is 'Feature', not 'Polygon' (a geometry goes into `geometry`)"),
    ({"properties": {"name": "x"}, "name": "y"}, "name", "a Feature has no member `name`"),
    ([{"op": "replace", "path": "/properties/name", "value": "x"}], None, "not an array"),  # a JSON Patch
    ("name=x", None, "not a string"),
])
async def test_a_patch_that_is_no_feature_is_refused_naming_what_is_wrong(pub, keys, patch, where, words):
    """A bare geometry sent as a patch answered 200 and changed nothing: its `type` was taken for the Feature's."""
    _, client = pub
    editor = {**auth(keys["halle_editor"]), **GEOJSON}
    created = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site()))
    location = created.headers["location"]
    got = await client.get(location, headers=auth(keys["halle_editor"]))
    r = await client.patch(location, content=json.dumps(patch), headers={
        **auth(keys["halle_editor"]), "If-Match": got.headers["etag"], "Content-Type": "application/merge-patch+json"})
    assert r.status_code == 400, r.text
    assert r.json().get("property") == where and words in r.json()["description"], r.json()
    assert (await client.get(location, headers=auth(keys["halle_editor"]))).json() == got.json()


async def test_a_like_pattern_taken_from_a_property_that_ends_in_a_backslash_names_the_filter(pub, keys):
    """LIKE with a property on its right takes each feature's value as the pattern: only the database finds
    one that ends in the escape character. Its error names the filter too."""
    _, client = pub
    await client.post(f"{SITES}/items", headers={**auth(keys["halle_editor"]), **GEOJSON},
                      content=json.dumps(site("backslash", name="Lager C:\\")))
    r = await client.get(f"{SITES}/items", params={"filter": "name LIKE name"}, headers=auth(keys["halle_editor"]))
    assert r.status_code == 400, r.text
    assert r.json()["parameter"] == "filter" and "escape character" in r.json()["description"], r.json()


async def test_a_write_with_an_unknown_query_parameter_is_refused_by_name(pub, keys):
    """`?repiar=true` was ignored: the feature went in unrepaired, or was refused for a reason the editor had
    just asked to have repaired. Writes now check their parameters as reads do."""
    _, client = pub
    editor = {**auth(keys["halle_editor"]), **GEOJSON}
    before = await count(client)
    r = await client.post(f"{SITES}/items", params={"repiar": "true"}, headers=editor, content=json.dumps(site()))
    assert (r.status_code, r.json()["parameter"]) == (400, "repiar"), r.text
    assert "this endpoint accepts: repair" in r.json()["description"]
    assert await count(client) == before
    created = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site()))
    r = await client.delete(created.headers["location"], params={"force": "1"},
                            headers={**editor, "If-Match": created.headers["etag"]})
    assert (r.status_code, r.json()["parameter"]) == (400, "force"), r.text
    assert "this endpoint takes none" in r.json()["description"]
    assert (await client.get(created.headers["location"])).status_code == 200


async def test_invalid_geometry_is_repaired_only_when_asked(pub, keys):
    _, client = pub
    bowtie = site("bowtie") | {"geometry": {"type": "Polygon", "coordinates": [
        [[12.0, 51.0], [12.01, 51.01], [12.01, 51.0], [12.0, 51.01], [12.0, 51.0]]]}}
    headers = {**auth(keys["halle_editor"]), **GEOJSON}
    r = await client.post(f"{SITES}/items", headers=headers, content=json.dumps(bowtie))
    assert r.status_code == 422 and "Self-intersection" in r.json()["description"]
    r = await client.post(f"{SITES}/items", params={"repair": "true"}, headers=headers, content=json.dumps(bowtie))
    assert r.status_code == 201, r.text
    assert r.json()["geometry"]["type"] == "MultiPolygon"
    # A ring whose last position is not its first (RFC 7946 wants them equal): Shapely would close it unasked.
    ring = [[12.0, 51.0], [12.01, 51.0], [12.01, 51.01], [12.0, 51.011]]
    open_ring = site("open-ring") | {"geometry": {"type": "Polygon", "coordinates": [ring]}}
    r = await client.post(f"{SITES}/items", headers=headers, content=json.dumps(open_ring))
    assert r.status_code == 422, r.text
    assert r.json()["property"] == "geometry"
    assert ("a ring of its geometry does not close: it begins at 12.0 51.0 and ends at 12.0 51.011"
            in r.json()["description"]), r.json()
    r = await client.post(f"{SITES}/items", params={"repair": "true"}, headers=headers, content=json.dumps(open_ring))
    assert r.status_code == 201, r.text
    stored = shapely.geometry.shape(r.json()["geometry"])
    assert [12.0, 51.011] in shapely.get_coordinates(stored).tolist() and stored.is_valid


async def test_content_crs_puts_utm_33_coordinates_where_they_belong(pub, keys):
    _, client = pub
    x, y = 289600.0, 5707838.0  # Halle, Marktplatz in EPSG:25833 (shared/DOMAIN.md)
    feature = site("utm33", x, y)
    feature["geometry"]["coordinates"] = [[[x, y], [x + 300, y], [x + 300, y + 300], [x, y + 300], [x, y]]]
    r = await client.post(f"{SITES}/items", headers={
        **auth(keys["halle_editor"]), **GEOJSON, "Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/25833>"},
        content=json.dumps(feature))
    assert r.status_code == 201, r.text
    got = (await client.get(f"{SITES}/items/utm33", params={
        "crs": "http://www.opengis.net/def/crs/EPSG/0/25832"})).json()["geometry"]["coordinates"][0][0][0]
    expected = Transformer.from_crs(25833, 25832, always_xy=True).transform(x, y)
    assert got == pytest.approx(list(expected), abs=0.01)


async def test_a_write_answers_in_the_crs_it_was_written_in_and_a_412_names_the_current_etag(pub, keys):
    """A planner who writes UTM 33 coordinates gets the feature back in UTM 33, with a Content-Crs saying so and
    the ETag `GET ?crs=` gives for it; without Content-Crs the answer is CRS84 and says that. A 412 carries the
    current ETag as a header, so the client can read again and retry without parsing the message."""
    _, client = pub
    utm33 = "http://www.opengis.net/def/crs/EPSG/0/25833"
    editor = {**auth(keys["halle_editor"]), **GEOJSON}
    x, y = 289600.0, 5707838.0  # Halle, Marktplatz in EPSG:25833 (shared/DOMAIN.md)
    ring = [[x, y], [x + 200, y], [x + 200, y + 150], [x, y + 150], [x, y]]
    feature = site("crs-back")
    feature["geometry"]["coordinates"] = [ring]
    r = await client.post(f"{SITES}/items", headers={**editor, "Content-Crs": f"<{utm33}>"},
                          content=json.dumps(feature))
    assert r.status_code == 201, r.text
    assert r.headers["content-crs"] == f"<{utm33}>"
    assert sum(r.json()["geometry"]["coordinates"][0][0], []) == pytest.approx(sum(ring, []), abs=0.002)
    read = await client.get(f"{SITES}/items/crs-back", params={"crs": utm33})
    assert read.headers["etag"] == r.headers["etag"] and read.json()["geometry"] == r.json()["geometry"]
    again = await client.get(f"{SITES}/items/crs-back", params={"crs": utm33},
                             headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304

    # The answer's ETag names the version, whatever the CRS: it is a valid If-Match.
    patch = {**auth(keys["halle_editor"]), "Content-Type": "application/merge-patch+json"}
    r = await client.patch(f"{SITES}/items/crs-back", headers={**patch, "If-Match": r.headers["etag"]},
                           content=json.dumps({"properties": {"name": "Am Markt"}}))
    assert r.status_code == 200, r.text
    assert r.headers["content-crs"] == f"<{CRS84}>"
    lon, lat = r.json()["geometry"]["coordinates"][0][0][0]  # a site is a MultiPolygon
    assert (lon, lat) == pytest.approx(Transformer.from_crs(25833, 4326, always_xy=True).transform(x, y), abs=1e-6)
    assert r.headers["etag"] == (await client.get(f"{SITES}/items/crs-back")).headers["etag"]
    current = r.headers["etag"]

    stale = await client.put(f"{SITES}/items/crs-back", headers={**editor, "If-Match": '"1.1"'},
                             content=json.dumps(site("crs-back", name="Überschrieben")))
    assert stale.status_code == 412 and stale.headers["etag"] == current, stale.headers
    assert current in stale.json()["description"]
    r = await client.put(f"{SITES}/items/crs-back", headers={**editor, "If-Match": stale.headers["etag"]},
                         content=json.dumps(site("crs-back", name="Neu gelesen")))
    assert r.status_code == 200 and r.json()["properties"]["name"] == "Neu gelesen"

    # The document says all of it: the header a write takes, and what its answers carry.
    api = (await client.get("/municipalities/halle/api")).json()
    for method, path in (("post", "/collections/{collectionId}/items"),
                         ("put", "/collections/{collectionId}/items/{featureId}"),
                         ("patch", "/collections/{collectionId}/items/{featureId}")):
        op = api["paths"][path][method]
        taken = [p for p in op["parameters"] if p["name"] == "Content-Crs"]
        assert taken and taken[0]["in"] == "header" and f"<{utm33}>" in taken[0]["schema"]["enum"], method
        ok = op["responses"]["201" if method == "post" else "200"]
        assert {"ETag", "Content-Crs"} <= set(ok["headers"]), method
    assert "ETag" in api["components"]["responses"]["412"]["headers"]


# ---------------------------------------------------------------- OpenID Connect

def token(signing_key, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "geotwin", "sub": "planerin-42", "iat": now, "exp": now + 300,
            "municipality": "halle", "geotwin_role": ["offline_access", "editor"], **claims}
    return jwt.encode(body, signing_key, algorithm="RS256", headers={"kid": "test-1"})


async def test_openid_connect_tokens_map_to_municipality_and_role(pub, signing_key, pub_db):
    _, client = pub
    headers = {**GEOJSON, "Authorization": f"Bearer {token(signing_key)}"}
    r = await client.post(f"{SITES}/items", headers=headers, content=json.dumps(site("oidc-1")))
    assert r.status_code == 201, r.text
    conn = await asyncpg.connect(pub_db)
    try:
        assert await conn.fetchval("SELECT actor FROM feature_change WHERE fid = 'oidc-1'") == "token:planerin-42"
    finally:
        await conn.close()
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for bad, status in ((token(signing_key, exp=int(time.time()) - 120), 401),
                        (token(signing_key, iss="https://evil.example"), 401),
                        (token(signing_key, aud="someone-else"), 401),
                        (token(other_key), 401),
                        (token(signing_key, municipality="leipzig"), 403),
                        (token(signing_key, geotwin_role="viewer"), 403),
                        (token(signing_key, geotwin_role="mayor"), 401)):
        r = await client.post(f"{SITES}/items", headers={**GEOJSON, "Authorization": f"Bearer {bad}"},
                              content=json.dumps(site("oidc-bad")))
        assert r.status_code == status, (jwt.decode(bad, options={"verify_signature": False}), r.text)


# ---------------------------------------------------------------- a real client sees the edits

def test_qgis_shows_what_an_editor_changed(cluster, pub_db, keys, tmp_path):
    app = create_app(settings_for(cluster, "geotwin_pub"))
    url, server, thread = serve_in_thread(app)
    try:
        root = f"{url}/municipalities/magdeburg"
        headers = {**auth(key_via_cli(cluster, "--municipality", "magdeburg", "--role", "editor")), **GEOJSON}
        r = httpx.post(f"{root}/collections/commercial-sites/items", headers=headers,
                       content=json.dumps(site("md-neu", 11.62, 52.11, name="Neue Fläche Magdeburg")))
        assert r.status_code == 201, r.text
        old = httpx.get(f"{root}/collections/commercial-sites/items/gs-204")
        assert httpx.delete(f"{root}/collections/commercial-sites/items/gs-204",
                            headers={**headers, "If-Match": old.headers["etag"]}).status_code == 204
        seen = run_qgis("qgis_oapif.py", root, "commercial-sites", "EPSG:25832", home=tmp_path)["features"]
        assert "md-neu" in seen and "gs-204" not in seen
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_qgis_editing_the_table_itself_gives_features_the_api_serves_as_geojson(cluster, pub, pub_db, tmp_path):
    """A planner opens `feature` from a PostGIS connection in QGIS (Debian 12's 3.22) and edits it there. That
    QGIS writes the jsonb properties as a JSON string holding the object's text; the database turns it back into
    the object, so the API serves GeoJSON with properties, filters find them, and the versions list both edits.
    What is no object at all is refused, naming the feature."""
    _, client = pub
    conn = await asyncpg.connect(pub_db)
    try:
        pk = await conn.fetchval("SELECT c.id FROM collection c JOIN municipality m ON m.id = c.municipality_id "
                                 "WHERE m.slug = 'halle' AND c.slug = 'commercial-sites'")
        before = await count(client)
        done = await asyncio.to_thread(run_qgis, "qgis_edit_table.py", str(cluster.port), "geotwin_pub", str(pk),
                                       "aus-qgis", home=tmp_path)
        assert done["valid"] and done["added"] and done["changed"], done
        feature = (await client.get(f"{SITES}/items/aus-qgis")).json()
        assert feature["properties"]["name"] == "Geändert in QGIS", feature
        assert await count(client) == before + 1
        found = (await client.get(f"{SITES}/items", params={"availability": "reserviert"})).json()
        assert "aus-qgis" in {f["id"] for f in found["features"]}
        versions = (await client.get(f"{SITES}/items/aus-qgis/versions")).json()["versions"]
        assert [v["feature"]["properties"]["name"] for v in versions] == ["Aus QGIS", "Geändert in QGIS"]
        for bad in ("[1, 2]", '"kein Objekt"', "42"):
            with pytest.raises(asyncpg.CheckViolationError, match="feature aus-qgis: properties must be a JSON"):
                await conn.execute("UPDATE feature SET properties = $1::jsonb WHERE fid = 'aus-qgis'", bad)
        await conn.execute("UPDATE feature SET properties = 'null' WHERE fid = 'aus-qgis'")
        assert (await client.get(f"{SITES}/items/aus-qgis")).json()["properties"] == {}
    finally:
        await conn.execute("DELETE FROM feature WHERE fid = 'aus-qgis'")
        await conn.close()


async def test_validity_follows_the_properties_when_others_write_the_table(pub, pub_db):
    """A planner repeals a protected area by setting `repealed_on` in QGIS on the table (here: the UPDATE it
    sends). The validity columns follow, so `datetime` no longer finds the zone after that day; a date the
    database cannot read is refused, naming the feature and the property."""
    _, client = pub
    zones = "/municipalities/halle/collections/ecological-zones/items"
    conn = await asyncpg.connect(pub_db)
    try:
        fid, props = await conn.fetchrow(
            "SELECT f.fid, f.properties::text FROM feature f JOIN collection c ON c.id = f.collection_id "
            "JOIN municipality m ON m.id = c.municipality_id WHERE m.slug = 'halle' AND c.slug = 'ecological-zones' "
            "AND f.valid_to IS NULL AND f.valid_from < '2020-01-01' ORDER BY f.fid LIMIT 1")

        async def current(day: str) -> bool:
            page = (await client.get(zones, params={"datetime": day, "limit": 1000})).json()
            return fid in {f["id"] for f in page["features"]}

        assert await current("2026-01-01")
        await conn.execute("UPDATE feature SET properties = properties || '{\"repealed_on\": \"2025-06-30\"}' "
                           "WHERE fid = $1", fid)
        assert not await current("2026-01-01") and await current("2025-06-01")
        with pytest.raises(asyncpg.CheckViolationError, match=f"feature {fid}: repealed_on must be a date"):
            await conn.execute("UPDATE feature SET properties = properties || '{\"repealed_on\": \"30.06.2025\"}' "
                               "WHERE fid = $1", fid)
    finally:
        await conn.execute("UPDATE feature SET properties = $2::jsonb WHERE fid = $1", fid, props)
        await conn.close()
    assert await current("2026-01-01")
