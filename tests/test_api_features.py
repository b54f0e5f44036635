"""OGC API – Features Part 1 read path: landing, conformance, collections, items, item, formats."""

from __future__ import annotations

import html
import re

import pytest

HALLE = "/municipalities/halle"
SITES = f"{HALLE}/collections/commercial-sites"
OPENAPI_30 = "application/vnd.oai.openapi+json;version=3.0"


async def test_landing_page_links(client):
    r = await client.get(HALLE)
    assert r.status_code == 200
    rels = {link["rel"]: link for link in r.json()["links"]}
    assert rels["service-desc"]["type"] == OPENAPI_30
    assert rels["service-desc"]["href"].endswith(f"{HALLE}/api")
    assert rels["conformance"]["href"].endswith(f"{HALLE}/conformance")
    assert rels["data"]["href"].endswith(f"{HALLE}/collections")
    assert "Halle (Saale)" in r.json()["title"]


async def test_conformance_declares_only_what_holds(client):
    r = await client.get(f"{HALLE}/conformance")
    classes = set(r.json()["conformsTo"])
    base = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/"
    assert {base + c for c in ("core", "geojson", "html", "oas30")} <= classes
    tiles = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/"
    assert {tiles + c for c in ("core", "tileset", "dataset-tilesets", "geodata-tilesets", "mvt")} <= classes
    assert "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs" in classes
    assert "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter" in classes
    # Editing (Part 4), by the Standard's URIs and its drafts', at a municipality's root, which takes writes
    part4 = {f"http://www.opengis.net/spec/ogcapi-{part}/1.0/conf/{c}" for part in ("common-5", "features-4")
             for c in ("create-replace-delete", "update", "optimistic-locking-etags")}
    assert part4 | {"http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/features"} <= classes
    region = set((await client.get("/region/conformance")).json()["conformsTo"])
    assert not any("features-4" in c or "common-5" in c for c in region), "the region only reads"
    # Not implemented, so not declared: CQL2 arithmetic, arrays, functions; timestamps and the handling preference.
    assert not any(c.endswith(("/arithmetic", "/array-functions", "/functions", "/optimistic-locking-timestamps",
                               "/handling")) for c in classes)


async def test_collections_list_public_layers_only(client):
    r = await client.get(f"{HALLE}/collections")
    ids = {c["id"] for c in r.json()["collections"]}
    assert ids == {"planning-zones", "commercial-sites", "ecological-zones", "charging-stations"}
    assert "internal-notes" not in ids
    missing = await client.get(f"{HALLE}/collections/internal-notes")
    assert missing.status_code == 404


async def test_collection_metadata(client):
    doc = (await client.get(f"{HALLE}/collections/planning-zones")).json()
    assert doc["extent"]["spatial"]["crs"].endswith("OGC/1.3/CRS84")
    minx, miny, maxx, maxy = doc["extent"]["spatial"]["bbox"][0]
    assert 11.8 < minx < maxx < 12.1 and 51.4 < miny < maxy < 51.6  # Halle, lon/lat
    assert doc["extent"]["temporal"]["interval"][0][0].startswith("1994-02-01")
    assert doc["layerType"]["name"] == "planning-zone"
    contract = next(link for link in doc["links"] if link["rel"] == "profile")
    assert contract["href"].endswith("/schemas/planning-zone")
    assert contract["type"] == "application/schema+json"
    described = next(link for link in doc["links"] if link["rel"] == "describedby")
    assert described["href"].endswith(f"{HALLE}/collections/planning-zones/schema")
    assert {link["rel"] for link in doc["links"]} >= {"self", "alternate", "items"}


async def test_items_geojson_in_crs84(client):
    r = await client.get(f"{SITES}/items")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert fc["type"] == "FeatureCollection"
    assert fc["numberMatched"] == fc["numberReturned"] == 6
    star_park = next(f for f in fc["features"] if f["id"] == "gs-001")
    lon, lat = star_park["geometry"]["coordinates"][0][0][0]
    assert 12.0 < lon < 12.1 and 51.4 < lat < 51.6  # longitude first


@pytest.mark.parametrize("accept", ["application/json", "application/geo+json", "*/*", ""])
async def test_items_json_by_accept(client, accept):
    r = await client.get(f"{SITES}/items", headers={"accept": accept} if accept else {})
    assert r.headers["content-type"].startswith("application/geo+json")


async def test_html_for_browsers_with_map(client):
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    for path in (HALLE, f"{HALLE}/collections", f"{SITES}", f"{SITES}/items", f"{SITES}/items/gs-003", "/"):
        r = await client.get(path, headers={"accept": browser})
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html"), path
    page = (await client.get(f"{SITES}/items/gs-003?f=html")).text
    assert 'class="map"' in page and "Gewerbegebiet Halle-Ost, Dieselstraße" in page
    # The layer type's titles, the property's name in the tooltip, and codes with their labels.
    assert '<th title="area_net_ha">Net area (ha)</th>' in page
    assert re.search(r'<th title="zoning">Zoning</th><td>\w+gebiet[^<]* \(G[EI]\)</td>', page), page[-3000:]
    collection_page = (await client.get(f"{SITES}?f=html")).text
    assert 'class="map"' in collection_page
    landing = (await client.get("/municipalities/leipzig?f=html")).text
    assert 'href="http://testserver/viewer?root=%2Fmunicipalities%2Fleipzig"' in landing  # opens on its layers
    titles = [c["title"] for c in (await client.get("/municipalities/leipzig/collections")).json()["collections"]]
    assert titles and all(f">{html.escape(t)}</a>" in landing for t in titles)


async def test_feature_schema_lists_every_property(client):
    r = await client.get(f"{HALLE}/collections/planning-zones/schema")
    assert r.headers["content-type"] == "application/schema+json"
    props = r.json()["properties"]["properties"]["properties"]
    assert {"gfz", "max_storeys", "in_force_until", "land_use"} <= set(props)
    regional = (await client.get("/region/collections/planning-zones/schema")).json()
    assert "municipality" in regional["properties"]["properties"]["properties"]


async def test_polygon_layers_are_served_as_multipolygons(client):
    types = {f["geometry"]["type"] for f in (await client.get(f"{SITES}/items")).json()["features"]}
    assert types == {"MultiPolygon"}
    points = (await client.get(f"{HALLE}/collections/charging-stations/items")).json()["features"]
    assert {f["geometry"]["type"] for f in points} == {"Point"}


async def test_single_item(client):
    r = await client.get(f"{SITES}/items/gs-002")
    assert r.status_code == 200
    feature = r.json()
    assert feature["geometry"]["type"] == "MultiPolygon"
    assert feature["properties"]["name"] == "Star Park – Teilfläche B (östlich der Reide)"
    assert {link["rel"] for link in feature["links"]} >= {"self", "collection"}


async def test_paging_walks_every_feature_once(client):
    seen, url, pages = [], f"{HALLE}/collections/planning-zones/items?limit=4", 0
    while url:
        fc = (await client.get(url)).json()
        assert fc["numberMatched"] == 11
        seen += [f["id"] for f in fc["features"]]
        url = next((link["href"] for link in fc["links"] if link["rel"] == "next"), None)
        pages += 1
    assert pages == 3 and len(seen) == len(set(seen)) == 11
    last = (await client.get(f"{HALLE}/collections/planning-zones/items?limit=4&offset=8")).json()
    assert any(link["rel"] == "prev" for link in last["links"])


async def test_limit_default_and_maximum(cluster, db_url):
    import httpx

    from service.main import create_app
    from tests.conftest import settings_for

    app = create_app(settings_for(cluster, default_limit=2, max_limit=3))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.get(f"{SITES}/items")).json()["numberReturned"] == 2
            over = (await c.get(f"{SITES}/items?limit=500")).json()
            assert over["numberReturned"] == 3  # served as the maximum, not an error
            assert "limit=3" in next(link["href"] for link in over["links"] if link["rel"] == "next")


async def test_equality_filters(client):
    fc = (await client.get(f"{SITES}/items?availability=verfuegbar&zoning=GE")).json()
    assert {f["id"] for f in fc["features"]} == {"gs-003", "gs-006"}
    assert fc["numberMatched"] == 2
    fc = (await client.get(f"{SITES}/items?rail_siding=true")).json()
    assert {f["id"] for f in fc["features"]} == {"gs-003", "gs-004"}
    fc = (await client.get(f"{SITES}/items?area_net_ha=19")).json()
    assert [f["id"] for f in fc["features"]] == ["gs-002"]
    generic = (await client.get(f"{HALLE}/collections/charging-stations/items?operator=Stadtwerke Halle")).json()
    assert generic["numberMatched"] == 3


async def test_datetime_against_validity(client):
    zones = f"{HALLE}/collections/planning-zones/items"
    in_2005 = {f["id"] for f in (await client.get(f"{zones}?datetime=2005-01-01")).json()["features"]}
    assert "bp47-1" in in_2005 and "bp47a-1" not in in_2005  # the old plan, repealed in 2011
    assert "bp213-1" in in_2005  # in preparation: no validity dates, so not excluded by time
    in_2020 = {f["id"] for f in (await client.get(f"{zones}?datetime=2020-06-01T12:00:00Z")).json()["features"]}
    assert "bp47a-1" in in_2020 and "bp47-1" not in in_2020
    before = {f["id"] for f in (await client.get(f"{zones}?datetime=../1995-01-01")).json()["features"]}
    assert "bp47-1" in before and "bp158-1" not in before
    after = {f["id"] for f in (await client.get(f"{zones}?datetime=2012-01-01/..")).json()["features"]}
    assert "bp47-1" not in after and "bp47a-1" in after


async def test_a_moment_falls_on_the_municipality_s_day(client):
    """Validity dates are Halle's days: 30 June 2011, 23:30 UTC is already 1 July in Halle, when B-Plan 47a took
    over from 47, in the datetime parameter and in a filter's TIMESTAMP alike (the service's time zone,
    Europe/Berlin by default)."""
    zones = f"{HALLE}/collections/planning-zones/items"
    for moment in ("2011-06-30T23:30:00Z", "2011-07-01T01:30:00+02:00"):
        shown = {f["id"] for f in (await client.get(zones, params={"datetime": moment})).json()["features"]}
        assert "bp47a-1" in shown and "bp47-1" not in shown, moment
    late = {f["id"] for f in (await client.get(zones, params={"datetime": "2011-06-30T21:30:00Z"})).json()["features"]}
    assert "bp47-1" in late and "bp47a-1" not in late
    started = (await client.get(zones, params={"filter": "in_force_from = TIMESTAMP('2011-06-30T23:30:00Z')"})).json()
    assert {f["id"] for f in started["features"]} >= {"bp47a-1"}


async def test_schemas_served_at_stable_urls(client):
    index = (await client.get("/schemas")).json()
    assert {lt["name"] for lt in index["layerTypes"]} == {"planning-zone", "commercial-site", "ecological-zone",
                                                          "generic"}
    r = await client.get("/schemas/commercial-site")
    assert r.headers["content-type"] == "application/schema+json"
    assert r.json()["$id"] == "urn:geotwin:layer-type:commercial-site:1.0"
    assert (await client.get("/schemas/commercial-site.schema.json")).json() == r.json()


async def test_service_root_lists_municipalities_and_region(client):
    doc = (await client.get("/")).json()
    assert {m["id"] for m in doc["municipalities"]} == {"halle", "leipzig", "magdeburg"}
    halle = next(m for m in doc["municipalities"] if m["id"] == "halle")
    assert halle["ags"] == "15002000" and halle["crs"].endswith("/25832")
    assert doc["region"]["collections"] == ["commercial-sites", "ecological-zones", "planning-zones"]


async def test_a_client_going_up_from_an_api_root_finds_the_municipalities(client):
    """`/municipalities/halle` → its `up` link → `/municipalities`, which lists what the root lists (a browser is
    sent to the root page); the region's `up` is the root. A path nothing answers names where the paths are."""
    up = {d: next(x["href"] for x in (await client.get(d)).json()["links"] if x["rel"] == "up")
          for d in (HALLE, "/region")}
    assert up == {HALLE: "http://testserver/municipalities", "/region": "http://testserver/"}
    listed = await client.get("/municipalities")
    assert listed.status_code == 200
    assert listed.json()["municipalities"] == (await client.get("/")).json()["municipalities"]
    page = await client.get("/municipalities", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "http://testserver/"
    missing = await client.get("/municipality/halle")
    assert missing.status_code == 404
    assert missing.json()["description"].startswith("nothing at /municipality/halle: the paths this service "
                                                    "answers are listed at http://testserver/api")


async def test_cors_allows_any_origin(client):
    r = await client.get(f"{SITES}/items", headers={"origin": "https://masterportal.example"})
    assert r.headers["access-control-allow-origin"] == "*"


async def test_head_answers_like_get_without_a_body(client):
    for path in (f"{SITES}/items", f"{SITES}/items/gs-001", f"{HALLE}/collections", "/schemas/generic"):
        get, head = await client.get(path), await client.head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
    assert (await client.head(f"{SITES}/items/nope")).status_code == 404


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_pages_write_dates_as_their_language_does(client):
    """A planner reads 30.09.2026, not 2026-09-30, in the feature's and the items' tables and in a collection's
    validity; the JSON keeps ISO."""
    for language, shown in (("de-DE", "30.09.2026"), ("en", "Sep 30, 2026")):
        for path in (f"{SITES}/items/gs-001", f"{SITES}/items"):
            page = (await client.get(path, params={"f": "html"}, headers={"accept-language": language})).text
            assert f"<td>{shown}</td>" in page and "<td>2026-09-30</td>" not in page, (language, path)
    assert (await client.get(f"{SITES}/items/gs-001")).json()["properties"]["last_update"] == "2026-09-30"
    # The collection's validity: since the oldest plan came into force, with no end while any plan is open.
    page = (await client.get(f"{HALLE}/collections/planning-zones", params={"f": "html"},
                             headers={"accept-language": "de"})).text
    assert "<td>seit 01.02.1994</td>" in page, page


@pytest.mark.parametrize(("path", "headers", "status", "words", "lead"), [
    (f"{HALLE}/collections/nowhere", {"accept": BROWSER}, 404, "collectionId",
     "Hier gibt es keine Sammlung mit dieser Kennung."),
    (f"{SITES}/items?f=html&bbox=1,2", {}, 400, "bbox", "Der Wert des Parameters bbox ist nicht verständlich."),
    (f"{SITES}/items?f=html&zoom=3", {}, 400, "zoom", "Diese Adresse kennt keinen Parameter zoom."),
    ("/nowhere", {"accept": BROWSER}, 404, "nothing at /nowhere", "Unter dieser Adresse gibt es nichts."),
    (f"{HALLE}/keys", {"accept": BROWSER}, 401, "needs an API key", None),
])
async def test_a_browser_reads_an_error_as_a_page_and_a_client_as_json(client, path, headers, status, words, lead):
    """Errors were JSON even for a browser asking for HTML: a planner following a stale link saw raw JSON. A read
    asking for HTML gets the same as a page (same status, the description, where, the way back), in German for a
    German browser: what happened in a sentence of its own, then the API's description as the details; a client
    asking for JSON or nothing, and every write, keeps the JSON body."""
    r = await client.get(path, headers={**headers, "accept-language": "de-DE,de;q=0.9"})
    assert r.status_code == status and r.headers["content-type"].startswith("text/html"), r.text
    page = html.unescape(r.text)
    assert words in page and 'href="http://testserver/api?f=html"' in page, page
    if lead:
        assert f'<p class="lead">{lead}</p>' in page and "Einzelheiten (auf Englisch):" in page, page
    if "parameter" in r.text:
        assert "Wo: Parameter <code>" in page
    assert {400: "Die Anfrage ist nicht verständlich", 401: "Dafür ist ein Schlüssel nötig",
            404: "Nicht gefunden"}[status] in page
    assert r.headers["cache-control"] == "no-store" and "nonce-" in r.headers["content-security-policy"]
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    for accept in ("application/json", "*/*", ""):
        plain = path.replace("f=html&", "")
        r = await client.get(plain, headers={"accept": accept} if accept else {})
        assert r.status_code == status and r.headers["content-type"] == "application/json", (plain, accept)
        assert words in str(r.json())
    r = await client.post(f"{HALLE}/collections/nowhere/items", headers={"accept": BROWSER}, json={})
    assert r.headers["content-type"] == "application/json"
