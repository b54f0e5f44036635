"""The conflict analysis (OGC API – Processes): a hand-computed fixture in Leipzig's EPSG:25833, and the whole
region against Shapely in each site's official CRS."""

from __future__ import annotations

import json

import pytest
import shapely
from shapely.geometry import shape

from tests.conftest import app_client, new_key, openapi_misfits

EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
X0, Y0 = 330_000.0, 5_680_000.0  # south-east of Leipzig, EPSG:25833: no demo feature near


def square(x: float, y: float, w: float, h: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]]}


@pytest.fixture(scope="module")
def ana_db(demo_db):
    return demo_db("geotwin_ana")


@pytest.fixture(scope="module")
async def ana(cluster, ana_db):
    key = await new_key(ana_db, "leipzig", "editor", "Test")
    async with app_client(cluster, "geotwin_ana") as (_, client):
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/geo+json",
                   "Content-Crs": f"<{EPSG}25833>"}
        site = {"type": "Feature", "id": "hand-1", "geometry": square(X0, Y0, 200, 200),
                "properties": {"name": "Handgerechnet", "area_gross_ha": 4, "zoning": "GE",
                               "availability": "verfuegbar", "servicing": "erschlossen"}}
        zones = {"type": "FeatureCollection", "features": [
            {"type": "Feature", "id": "hand-half", "geometry": square(X0 + 100, Y0 - 50, 300, 300),
             "properties": {"official_id": "T1", "name": "Östliche Hälfte", "category": "NSG"}},
            {"type": "Feature", "id": "hand-near", "geometry": square(X0 + 450, Y0, 100, 100),
             "properties": {"official_id": "T2", "name": "250 m östlich", "category": "LSG"}},
        ]}
        for path, body in (("commercial-sites", site), ("ecological-zones", zones)):
            r = await client.post(f"/municipalities/leipzig/collections/{path}/items", headers=headers,
                                  content=json.dumps(body))
            assert r.status_code == 201, r.text
        yield client


async def run(client, **inputs) -> dict:
    r = await client.post("/processes/conflicts/execution", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    return r.json()


async def test_hand_computed_fixture_in_utm33(ana):
    result = await run(ana, sites="/municipalities/leipzig/collections/commercial-sites",
                       sitesFilter="name = 'Handgerechnet'",
                       constraints="/municipalities/leipzig/collections/ecological-zones", buffers={"LSG": 300})
    (site,) = result["sites"]
    assert site["crs"] == "EPSG:25833"
    assert site["areaHa"] == pytest.approx(4.0, abs=0.01)
    assert site["conflictHa"] == pytest.approx(2.0, abs=0.01) and site["freeHa"] == pytest.approx(2.0, abs=0.01)
    (conflict,) = site["conflicts"]
    assert conflict["category"] == "NSG" and conflict["share"] == pytest.approx(0.5, abs=0.001)
    (near,) = site["nearby"]
    assert near["name"] == "250 m östlich" and near["distanceM"] == pytest.approx(250, abs=0.05)
    tighter = await run(ana, sites="/municipalities/leipzig/collections/commercial-sites",
                        sitesFilter="name = 'Handgerechnet'",
                        constraints="/municipalities/leipzig/collections/ecological-zones", buffers={"LSG": 200})
    assert tighter["sites"][0]["nearby"] == []


async def test_region_wide_conflicts_match_shapely_in_each_sites_crs(ana):
    result = await run(ana, sites="/region/collections/commercial-sites",
                       constraints="/region/collections/ecological-zones", defaultBuffer=300)
    crs_of = {"halle": 25832, "magdeburg": 25832, "leipzig": 25833}
    layers = {}
    for code in (25832, 25833):
        for name in ("commercial-sites", "ecological-zones"):
            r = await ana.get(f"/region/collections/{name}/items", params={"crs": EPSG + str(code), "limit": 1000})
            layers[(name, code)] = {f["id"]: shape(f["geometry"]) for f in r.json()["features"]}
    assert len(result["sites"]) == len(layers[("commercial-sites", 25832)])
    checked_conflicts = checked_nearby = 0
    for site in result["sites"]:
        code = crs_of[site["id"].split(":")[0]]
        geom = layers[("commercial-sites", code)][site["id"]]
        zones = layers[("ecological-zones", code)]
        assert site["areaHa"] == pytest.approx(geom.area / 10_000, abs=0.01)
        hits = {zid: z for zid, z in zones.items() if z.intersects(geom)}
        assert {c["id"] for c in site["conflicts"]} == set(hits)
        for c in site["conflicts"]:
            assert c["overlapHa"] == pytest.approx(geom.intersection(hits[c["id"]]).area / 10_000, abs=0.01)
            checked_conflicts += 1
        union = shapely.union_all(list(hits.values())) if hits else None
        expected_conflict = geom.intersection(union).area / 10_000 if union is not None else 0
        assert site["conflictHa"] == pytest.approx(expected_conflict, abs=0.01)
        near = {zid for zid, z in zones.items() if zid not in hits and geom.distance(z) <= 300}
        assert {n["id"] for n in site["nearby"]} == near
        checked_nearby += len(near)
    assert checked_conflicts >= 5 and checked_nearby >= 1, (checked_conflicts, checked_nearby)


async def test_geojson_output_has_sites_and_overlaps(ana):
    r = await ana.post("/processes/conflicts/execution", params={"f": "geojson"}, json={"inputs": {
        "sites": "/region/collections/commercial-sites", "constraints": "/region/collections/ecological-zones"}})
    doc = r.json()
    kinds = {f["properties"]["kind"] for f in doc["features"]}
    assert r.headers["content-type"].startswith("application/geo+json") and kinds == {"site", "overlap"}


@pytest.mark.parametrize(("query", "words"), [("defaultBuffer=nan", "finite"), ("defaultBuffer=-1", "0"),
                                                ("sitez=x", "unknown query parameter 'sitez'")])
async def test_the_conflict_map_names_a_bad_parameter(ana, query, words):
    r = await ana.get(f"/processes/conflicts/map?{query}")
    assert r.status_code == 400 and r.json()["parameter"] == query.split("=")[0] and words in r.json()["description"]


@pytest.mark.parametrize("inputs, parameter", [
    ({"sites": "halle", "constraints": "/region/collections/ecological-zones"}, "sites"),
    ({"sites": "/region/collections/ecological-zones", "constraints": "/region/collections/ecological-zones"},
     "sites"),
    ({"sites": "/region/collections/commercial-sites", "constraints": "/region/collections/nope"}, "constraints"),
    ({"sites": "/region/collections/commercial-sites", "constraints": "/region/collections/ecological-zones",
      "defaultBuffer": -5}, "defaultBuffer"),
    ({"sites": "/region/collections/commercial-sites", "constraints": "/region/collections/ecological-zones",
      "buffers": {"NSG": "far"}}, "buffers"),
    ({"sites": "/region/collections/commercial-sites", "constraints": "/region/collections/ecological-zones",
      "sitesFilter": "colour = 'red'"}, "sitesFilter"),
    ({"sites": "/region/collections/commercial-sites", "constraints": "/region/collections/ecological-zones",
      "radius": 3}, "radius"),
    ({"sites": "/municipalities/halle/collections/internal-notes",
      "constraints": "/region/collections/ecological-zones"}, "sites"),
])
async def test_bad_inputs_are_named(ana, inputs, parameter):
    r = await ana.post("/processes/conflicts/execution", json={"inputs": inputs})
    assert r.status_code in (400, 404), r.text
    assert r.json()["parameter"] == parameter


async def test_process_list_and_description(ana):
    listing = (await ana.get("/processes")).json()
    assert [p["id"] for p in listing["processes"]] == ["conflicts", "statistics", "site-search"]
    description = (await ana.get("/processes/conflicts")).json()
    assert {"sites", "constraints", "buffers"} <= set(description["inputs"])
    assert (await ana.get("/processes/nope")).status_code == 404


async def test_an_execute_request_may_leave_out_inputs(ana):
    """`inputs` is optional in OGC API – Processes' execute schema: without it a process runs on its defaults.
    A body that is no object, or inputs that are none, is a 400 naming which."""
    whole = await ana.post("/processes/statistics/execution", json={"inputs": {}})
    bare = await ana.post("/processes/statistics/execution", json={})
    assert bare.status_code == 200 and bare.json() == whole.json(), bare.text
    for body, where, words in (([], "body", "not an array"), (None, "body", "not null"),
                               ("inputs", "body", "not a string"), ({"inputs": []}, "inputs", "by name")):
        r = await ana.post("/processes/statistics/execution", content=json.dumps(body),
                           headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["parameter"] == where and words in r.json()["description"], r.text


async def test_statistics_match_python_over_the_region(ana):
    r = await ana.post("/processes/statistics/execution", json={"inputs": {}})
    assert r.status_code == 200, r.text
    stats = r.json()
    crs_of = {"halle": 25832, "magdeburg": 25832, "leipzig": 25833}
    sites, zones = [], []
    for code in (25832, 25833):
        for name, into in (("commercial-sites", sites), ("ecological-zones", zones)):
            features = (await ana.get(f"/region/collections/{name}/items",
                                      params={"crs": EPSG + str(code), "limit": 1000})).json()["features"]
            into += [f for f in features if crs_of[f["id"].split(":")[0]] == code]
    for dimension in ("availability", "zoning", "servicing"):
        expected: dict[tuple[str, str], list[float]] = {}
        for f in sites:
            for muni in (f["id"].split(":")[0], "region"):
                cell = expected.setdefault((muni, f["properties"].get(dimension)), [0, 0.0])
                cell[0] += 1
                cell[1] += shape(f["geometry"]).area / 10_000
        got = {(row["municipality"], row["value"]): row for row in stats["sites"][dimension]}
        assert set(got) == set(expected), dimension
        for k, (n, area) in expected.items():
            assert got[k]["count"] == n and got[k]["areaHa"] == pytest.approx(area, abs=0.01), (dimension, k)
    by_category: dict[tuple[str, str], list] = {}
    for f in zones:
        by_category.setdefault((f["id"].split(":")[0], f["properties"]["category"]), []).append(shape(f["geometry"]))
    got = {(row["municipality"], row["category"]): row["areaHa"] for row in stats["protection"]}
    assert set(got) == set(by_category)
    for k, shapes in by_category.items():
        assert got[k] == pytest.approx(shapely.union_all(shapes).area / 10_000, abs=0.01), k
    csv = await ana.post("/processes/statistics/execution", params={"f": "csv"}, json={"inputs": {
        "municipalities": ["halle"]}})
    lines = csv.text.strip().splitlines()
    assert lines[0] == "table,municipality,value,count,area_ha"
    assert all(",halle," in ln or ",region," in ln for ln in lines[1:])
    bad = await ana.post("/processes/statistics/execution", json={"inputs": {"municipalities": ["atlantis"]}})
    assert bad.status_code == 400 and bad.json()["parameter"] == "municipalities"


async def _region_sites(ana, code: int) -> dict[str, dict]:
    r = await ana.get("/region/collections/commercial-sites/items", params={"crs": EPSG + str(code), "limit": 1000})
    return {f["id"]: f for f in r.json()["features"]}


async def search(ana, **inputs) -> dict:
    r = await ana.post("/processes/site-search/execution", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    return r.json()


async def test_site_search_filters_and_ranks_like_python(ana):
    crs_of = {"halle": 25832, "magdeburg": 25832, "leipzig": 25833}
    by_crs = {code: await _region_sites(ana, code) for code in (25832, 25833)}
    sites = {fid: by_crs[crs_of[fid.split(":")[0]]][fid] for fid in by_crs[25832]}

    def ok(p: dict) -> bool:
        return (p["availability"] == "verfuegbar" and p["zoning"] in ("GE", "GI")
                and (p.get("area_net_ha") or 0) >= 15)
    expected = sorted((f for f in sites.values() if ok(f["properties"])),
                      key=lambda f: (-f["properties"]["area_net_ha"], f["id"]))
    got = await search(ana, minAreaHa=15, zoning=["GE", "GI"], availability=["verfuegbar"])
    assert expected and len(expected) < len(sites)
    assert [s["id"] for s in got["sites"]] == [f["id"] for f in expected] and got["numberMatched"] == len(expected)

    # Within 5 km of Halle's Star Park, nearest first, distances in each site's CRS.
    star = shapely.Point(712052, 5711081)  # EPSG:25832 (shared/DOMAIN.md)
    from pyproj import Transformer
    to33 = Transformer.from_crs(25832, 25833, always_xy=True)
    dist = {}
    for fid, f in sites.items():
        point = star if crs_of[fid.split(":")[0]] == 25832 else shapely.Point(*to33.transform(star.x, star.y))
        dist[fid] = shape(f["geometry"]).distance(point) / 1000
    near = await search(ana, near={"point": [12.056, 51.511], "km": 5}, rankBy="distance")
    assert 0 < len(near["sites"]) < len(sites)
    assert [s["id"] for s in near["sites"]] == sorted((k for k, d in dist.items() if d <= 5), key=dist.get)
    for s in near["sites"]:
        assert s["distanceKm"] == pytest.approx(dist[s["id"]], abs=0.01)

    # Paged: two at a time, complete and in order.
    pages, offset = [], 0
    while True:
        page = await search(ana, limit=2, offset=offset, rankBy="price")
        pages += page["sites"]
        if not page["links"]:
            break
        offset = page["links"][0]["offset"]
    prices = [s["properties"].get("price_eur_m2") for s in pages]
    assert len(pages) == len(sites) and [p for p in prices if p is not None] == sorted(p for p in prices if p)


async def test_site_search_net_after_conflicts_and_near_a_feature(ana):
    zones = (await ana.get("/region/collections/ecological-zones/items",
                           params={"crs": EPSG + "25832", "limit": 1000})).json()["features"]
    sites = await _region_sites(ana, 25832)
    union = shapely.union_all([shape(z["geometry"]) for z in zones])
    got = await search(ana, netAfterConflicts="/region/collections/ecological-zones", limit=1000)
    checked = 0
    for s in got["sites"]:
        if s["id"].startswith("leipzig:"):
            continue  # measured in 25833 there; the hand fixture covers that
        geom = shape(sites[s["id"]]["geometry"])
        share = geom.intersection(union).area / geom.area
        if s["netHa"] is not None:
            assert s["usableHa"] == pytest.approx(s["netHa"] * (1 - share), abs=0.01), s["id"]
            checked += share > 0
    assert checked >= 2
    zone_id = next(z["id"] for z in zones if z["id"].startswith("halle:"))
    near = await search(ana, near={"feature": f"/region/collections/ecological-zones/items/{zone_id}", "km": 3})
    zone = shape(next(z for z in zones if z["id"] == zone_id)["geometry"])
    expected = {fid for fid, f in sites.items() if not fid.startswith("leipzig:")
                and shape(f["geometry"]).distance(zone) <= 3000}
    assert expected and {s["id"] for s in near["sites"] if not s["id"].startswith("leipzig:")} == expected


@pytest.mark.parametrize("inputs, parameter", [
    ({"minAreaHa": -1}, "minAreaHa"),
    ({"zoning": ["XX"]}, "zoning"),
    ({"rankBy": "distance"}, "rankBy"),
    ({"near": {"point": [12, 51]}}, "near"),
    ({"near": {"point": [200, 51], "km": 1}}, "near"),
    ({"near": {"feature": "/region/collections/ecological-zones/items/nope:x", "km": 1}}, "near"),
    ({"limit": 0}, "limit"),
    ({"order": "up"}, "order"),
])
async def test_site_search_bad_inputs_are_named(ana, inputs, parameter):
    r = await ana.post("/processes/site-search/execution", json={"inputs": inputs})
    assert r.status_code in (400, 404), r.text
    assert r.json()["parameter"] == parameter


async def test_conflicts_as_csv(ana):
    import csv
    import io

    r = await ana.post("/processes/conflicts/execution", params={"f": "csv"}, json={"inputs": {
        "sites": "/municipalities/leipzig/collections/commercial-sites", "sitesFilter": "name = 'Handgerechnet'",
        "constraints": "/municipalities/leipzig/collections/ecological-zones"}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert row["site"] == "hand-1" and float(row["conflict_ha"]) == pytest.approx(2.0, abs=0.01)
    assert row["conflicts"].startswith("NSG Östliche Hälfte") and "250 m" in row["nearby"]


async def test_the_output_format_is_asked_for_in_the_body_as_the_standard_says(ana):
    """OGC API - Processes asks for an output's format in the execute request (`outputs`); GeoTwin read only
    `f=`, so a client asking for CSV that way got JSON. The summary's sums come to the square metre."""
    hand = {"sites": "/municipalities/leipzig/collections/commercial-sites", "sitesFilter": "name = 'Handgerechnet'",
            "constraints": "/municipalities/leipzig/collections/ecological-zones"}
    r = await ana.post("/processes/conflicts/execution", json={
        "inputs": hand, "outputs": {"result": {"format": {"mediaType": "text/csv"}}}, "response": "raw"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
    assert "hand-1" in r.text
    r = await ana.post("/processes/conflicts/execution", json={
        "inputs": hand, "outputs": {"result": {"format": {"mediaType": "application/geo+json"}}}})
    assert r.json()["type"] == "FeatureCollection"
    region = await run(ana, sites="/region/collections/commercial-sites",
                       constraints="/region/collections/ecological-zones")
    for key in ("areaHa", "conflictHa", "freeHa"):
        assert region["summary"][key] == round(region["summary"][key], 4)
        assert region["summary"][key] == pytest.approx(sum(s[key] for s in region["sites"]), abs=1e-4)


@pytest.mark.parametrize("outputs, f, media", [
    (None, None, "application/json"),
    ({"result": {"format": {"mediaType": "application/geo+json"}}}, None, "application/geo+json"),
    (None, "csv", "text/csv"),
])
async def test_a_results_document_holds_the_raw_result_as_its_value(ana, outputs, f, media):
    """`response: document` (OGC API – Processes 1.0, /req/core/process-execute-sync-document) was a 400: a
    client that asks for it gets {"result": {"value": …, "mediaType": …}}, the raw answer's content inside."""
    body = {"inputs": {"sites": "/municipalities/leipzig/collections/commercial-sites",
                       "sitesFilter": "name = 'Handgerechnet'",
                       "constraints": "/municipalities/leipzig/collections/ecological-zones"}}
    body |= {"outputs": outputs} if outputs else {}
    params = {"f": f} if f else {}
    raw = await ana.post("/processes/conflicts/execution", params=params, json=body | {"response": "raw"})
    doc = await ana.post("/processes/conflicts/execution", params=params, json=body | {"response": "document"})
    assert doc.status_code == 200 and doc.headers["content-type"] == "application/json", doc.text
    assert "content-disposition" not in doc.headers
    assert not await openapi_misfits(ana, "/api", "post", "/processes/{process_id}/execution", "200", doc.json())
    result = doc.json()["result"]
    assert result["mediaType"] == media
    if media == "text/csv":
        assert result["value"] == raw.text.lstrip("\ufeff") and "hand-1" in result["value"]
    else:
        assert result["value"] == raw.json()


@pytest.mark.parametrize("body, params, parameter, words", [
    ({"outputs": {"result": {"format": {"mediaType": "image/png"}}}}, {}, "outputs",
     "the result comes as application/json, application/geo+json, text/csv, not 'image/png'"),
    ({"outputs": {"map": {}}}, {}, "outputs", "no output 'map'; outputs: result"),
    ({"outputs": "csv"}, {}, "outputs", 'outputs is {"result"'),
    ({"outputs": {"result": {"format": {"mediaType": "text/csv"}}}}, {"f": "json"}, "f", "ask for different formats"),
    ({"response": "documents"}, {}, "response", "response is raw (the result as it is, the default) or document"),
    ({"outputs": {"result": {"transmissionMode": "reference"}}}, {}, "outputs",
     "the result is sent by value, not by 'reference'"),
    ({"input": {}}, {}, "input", "unknown member 'input' of the body; it takes inputs, outputs, response"),
    ({}, {"fromat": "csv"}, "fromat", "unknown query parameter 'fromat'"),
])
async def test_what_an_execute_request_holds_besides_inputs_is_checked(ana, body, params, parameter, words):
    inputs = {"sites": "/region/collections/commercial-sites", "constraints": "/region/collections/ecological-zones"}
    r = await ana.post("/processes/conflicts/execution", params=params, json={"inputs": inputs} | body)
    assert (r.status_code, r.json().get("parameter")) == (400, parameter), r.text
    assert words in r.json()["description"], r.json()
