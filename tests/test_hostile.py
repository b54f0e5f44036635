"""Hostile input: each case gets a clear 4xx naming what and where, nothing is written, and the service is
healthy afterwards. (Malformed and oversized bodies, NaN, self-intersections and zip bombs are also in
test_publishing and test_import; this corpus adds what an attacker would try next.)"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from service.main import create_app
from tests.conftest import app_client, fingerprint, new_key, serve_in_thread, settings_for

SITES = "/municipalities/halle/collections/commercial-sites"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
INJECTIONS = ["x'; DROP TABLE feature; --", "1 OR 1=1", "name\"; DELETE FROM feature; --", "%27%3B--",
              "$1", "' UNION SELECT secret_hash FROM api_key --"]


def square(x: float, y: float, d: float = 0.004) -> list:
    return [[[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]]


def site(geometry: dict, fid: str = "hostile-1") -> dict:
    return {"type": "Feature", "id": fid, "geometry": geometry,
            "properties": {"name": "Angriff", "area_gross_ha": 1, "zoning": "GE", "availability": "verfuegbar",
                           "servicing": "erschlossen"}}


@pytest.fixture(scope="module")
def hostile_db(demo_db):
    return demo_db("geotwin_hostile")


@pytest.fixture(scope="module")
async def api(cluster, hostile_db):
    key = await new_key(hostile_db, "halle", "editor", "Hostile")
    async with app_client(cluster, "geotwin_hostile") as (_, client):
        yield client, {"X-API-Key": key, "Content-Type": "application/geo+json"}


def million_vertices() -> dict:
    n = 1_000_000
    ring = [[11.9 + 0.01 * (i / n), 51.4 + 0.001 * (i % 2)] for i in range(n)]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


BODIES = [
    ("deeply nested JSON", b'{"type": "Feature", "properties": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, None),
    ("invalid UTF-8", json.dumps(site({"type": "Polygon", "coordinates": square(11.99, 51.47)})).encode()
     .replace(b"Angriff", b"Angr\xff\xfeiff"), 400, None),
    ("a million vertices", json.dumps(site(million_vertices())).encode(), 422, "geometry"),
    ("Infinity", json.dumps(site({"type": "Polygon", "coordinates": square(11.99, 51.47)})).encode()
     .replace(b"11.99", b"1e400", 1), None, None),
    ("self-intersection", json.dumps(site({"type": "Polygon", "coordinates": [
        [[12, 51], [12.01, 51.01], [12.01, 51], [12, 51.01], [12, 51]]]})).encode(), 422, "geometry"),
    ("empty polygon", json.dumps(site({"type": "Polygon", "coordinates": []})).encode(), 422, "geometry"),
    ("mixed collection", json.dumps(site({"type": "GeometryCollection", "geometries": [
        {"type": "Point", "coordinates": [12, 51]}, {"type": "Polygon", "coordinates": square(12, 51)}]})).encode(),
     422, "geometry"),
    ("latitude beyond the pole", json.dumps(site({"type": "Polygon", "coordinates": square(12, 95)})).encode(),
     422, "geometry"),
    ("UTM coordinates far outside zone 32", json.dumps(site({"type": "Polygon", "coordinates": square(
        5e7, 5.7e6, 100)})).encode(), 422, "geometry"),
    ("lon/lat sent as EPSG:4326 without swapping", json.dumps(site({"type": "Polygon", "coordinates": square(
        11.99, 151.47)})).encode(), 422, "geometry"),
    ("an id that is an injection", json.dumps(site({"type": "Polygon", "coordinates": square(11.99, 51.47)},
                                                   fid=INJECTIONS[0])).encode(), None, None),
]


@pytest.mark.parametrize(("case", "body", "status", "prop"), BODIES, ids=[b[0] for b in BODIES])
async def test_hostile_bodies_are_refused_and_write_nothing(api, hostile_db, case, body, status, prop):
    client, headers = api
    before = await fingerprint(hostile_db)
    r = await client.post(f"{SITES}/items", headers=headers, content=body)
    if case == "an id that is an injection":  # a strange id is just an id: stored as text, nothing else
        assert r.status_code == 201, r.text[:300]
        assert (await client.get(f"{SITES}/items", params={"limit": 1000})).status_code == 200
        await client.delete(r.headers["location"], headers={**headers, "If-Match": r.headers["etag"]})
        return
    if status is None:
        assert 400 <= r.status_code < 500, (case, r.status_code, r.text[:300])
    else:
        assert r.status_code == status, (case, r.text[:300])
    body_json = r.json()
    assert body_json["description"]
    if prop:
        assert body_json.get("property") == prop, body_json
    assert await fingerprint(hostile_db) == before, case
    assert (await client.get("/health")).status_code == 200


async def test_clockwise_rings_are_accepted_and_stored_right_handed(api, hostile_db):
    """RFC 7946: parsers SHOULD NOT reject rings against the right-hand rule; GeoTwin stores them
    right-handed (exterior counter-clockwise) so every client gets one orientation back."""
    client, headers = api
    clockwise = [list(reversed(square(11.99, 51.47)[0]))]
    r = await client.post(f"{SITES}/items", headers=headers,
                          content=json.dumps(site({"type": "Polygon", "coordinates": clockwise}, "clockwise")))
    assert r.status_code == 201, r.text
    stored = (await client.get(f"{SITES}/items/clockwise")).json()["geometry"]["coordinates"][0][0]
    area2 = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(stored, stored[1:], strict=False))
    assert area2 > 0  # counter-clockwise


@pytest.mark.parametrize("value", INJECTIONS)
async def test_injections_in_every_parameter_are_inert(api, hostile_db, value):
    client, _ = api
    before = await fingerprint(hostile_db)
    probes = [
        (f"/municipalities/{value}/collections", {}),
        (f"/municipalities/halle/collections/{value}/items", {}),
        (f"{SITES}/items/{value}", {}),
        (f"{SITES}/items", {"sortby": value}),
        (f"{SITES}/items", {"properties": value}),
        (f"{SITES}/items", {"filter": f"name = '{value}'"}),
        (f"{SITES}/items", {"filter": value}),
        (f"{SITES}/items", {value: "1"}),
        (f"{SITES}/items", {"zoning": value}),
        (f"{SITES}/items", {"bbox": value}),
        (f"{SITES}/items", {"datetime": value}),
        (f"{SITES}/items", {"crs": value}),
        (f"{SITES}/items", {"filter-crs": value, "filter": "S_INTERSECTS(geometry, POINT(12 51))"}),
        (f"/municipalities/halle/tiles/{value}/13/2723/4370", {}),
        (f"{SITES}/export", {"f": value}),
    ]
    for path, params in probes:
        r = await client.get(path, params=params)
        assert r.status_code < 500, (path, params, r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert r.json()["description"], (path, params)
    assert await fingerprint(hostile_db) == before
    quoted = value.replace("'", "''")  # CQL2's own escape: the whole text is one string literal
    rows = (await client.get(f"{SITES}/items", params={"filter": f"name = '{quoted}'"})).json()
    assert rows["numberMatched"] == 0, rows  # a literal is only ever a value


def test_a_client_that_never_finishes_its_body_gets_408_and_others_are_served(cluster, hostile_db):
    settings = settings_for(cluster, "geotwin_hostile", body_timeout_s=1.0)
    base, server, thread = serve_in_thread(create_app(settings))
    key = asyncio.run(new_key(hostile_db, "halle", "editor", "Slow"))
    try:
        port = int(base.rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall((f"POST {SITES}/items HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n"
                      "Content-Type: application/geo+json\r\nContent-Length: 1000\r\n\r\n{\"type\":").encode())
        import httpx

        started = time.monotonic()
        for _ in range(5):  # meanwhile everybody else is served
            assert httpx.get(f"{base}{SITES}/items", timeout=5).status_code == 200
        slow.settimeout(10)
        answer = slow.recv(4096).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 408"), answer[:200]
        assert "stopped arriving" in answer
        assert time.monotonic() - started < 8
        slow.close()
    finally:
        server.should_exit = True
        thread.join(10)
