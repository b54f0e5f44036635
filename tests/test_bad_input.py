"""Bad input: 404 for what does not exist, 400 naming the parameter for what is malformed, never a 500."""

from __future__ import annotations

import random
import string

import pytest

SITES = "/municipalities/halle/collections/commercial-sites"

NOT_FOUND = [
    ("/municipalities/nowhere", "municipality"),
    ("/municipalities/nowhere/collections/commercial-sites/items", "municipality"),
    ("/municipalities/halle/collections/nope", "collectionId"),
    ("/municipalities/halle/collections/nope/items", "collectionId"),
    (f"{SITES}/items/does-not-exist", "featureId"),
    ("/region/collections/charging-stations", "collectionId"),  # generic layers have no regional collection
    ("/schemas/no-such-type", "name"),
]

BAD = [
    ("bbox=1,2,3", "bbox"),
    ("bbox=a,b,c,d", "bbox"),
    ("bbox=0,0,200,1", "bbox"),
    ("bbox=11,52,12,51", "bbox"),
    ("bbox=13,51,12,52", "bbox"),
    ("bbox=nan,1,2,3", "bbox"),
    ("bbox=1,2,3,inf", "bbox"),
    ("bbox=", "bbox"),
    ("limit=0", "limit"),
    ("limit=-1", "limit"),
    ("limit=abc", "limit"),
    ("limit=1.5", "limit"),
    ("limit=99999999999999999999", "limit"),
    ("offset=-1", "offset"),
    ("offset=x", "offset"),
    ("datetime=yesterday", "datetime"),
    ("datetime=2020-13-01", "datetime"),
    ("datetime=2020-01-01/2019-01-01", "datetime"),
    ("datetime=../..", "datetime"),
    ("datetime=2020-01-01T10:00:00", "datetime"),
    ("datetime=", "datetime"),
    ("datetime=2020-01-01/2020-02-01/2020-03-01", "datetime"),
    ("foo=1", "foo"),
    ("f=xml", "f"),
    ("zoning=XX", "zoning"),
    ("area_net_ha=abc", "area_net_ha"),
    ("area_net_ha=nan", "area_net_ha"),
    ("rail_siding=yes", "rail_siding"),
    ("limit=1&limit=2", "limit"),
    ("municipality=halle", "municipality"),  # only regional collections know the municipality property
]


@pytest.mark.parametrize(("path", "parameter"), NOT_FOUND)
async def test_not_found(client, path, parameter):
    r = await client.get(path)
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == "NotFound" and body["parameter"] == parameter and body["description"]


@pytest.mark.parametrize(("query", "parameter"), BAD)
async def test_bad_parameters(client, query, parameter):
    r = await client.get(f"{SITES}/items?{query}")
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["parameter"] == parameter, body
    assert body["description"]


@pytest.mark.parametrize("path", ["/municipalities/halle", "/municipalities/halle/collections",
                                  f"{SITES}", f"{SITES}/items/gs-001", "/region/conformance"])
async def test_unknown_parameter_on_other_endpoints(client, path):
    r = await client.get(f"{path}?limti=10")
    assert r.status_code == 400 and r.json()["parameter"] == "limti"


async def test_unknown_path_is_json_404(client):
    r = await client.get("/no/such/path")
    assert r.status_code == 404 and r.json()["code"] == "NotFound"


async def test_fuzzed_parameters_never_500(client):
    rng = random.Random(20261122)
    alphabet = string.printable + "äöüß€\u202e\x00"
    names = ["bbox", "limit", "offset", "datetime", "f", "zoning", "area_net_ha", "rail_siding", "name"]
    paths = [f"{SITES}/items", "/region/collections/planning-zones/items",
             "/municipalities/halle/collections/charging-stations/items"]
    for _ in range(300):
        params = {rng.choice(names): "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))}
        r = await client.get(rng.choice(paths), params=params)
        assert r.status_code < 500, (params, r.text)
    for fid in ["", "%00", "a" * 5000, "../../etc/passwd", "ä:ö", "1;DROP TABLE feature"]:
        r = await client.get(f"{SITES}/items/{fid}")
        assert r.status_code in (404, 307), (fid, r.status_code)  # "" is "/items/": redirected to the list
