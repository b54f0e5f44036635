"""bbox is an exact intersection test; the regional view lines up sources from 25832 and 25833."""

from __future__ import annotations

import json
from pathlib import Path

from pyproj import Transformer

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
TO_LONLAT = {epsg: Transformer.from_crs(epsg, 4326, always_xy=True) for epsg in (25832, 25833)}


def bbox_around(epsg: int, x: float, y: float, half: float = 20.0) -> str:
    t = TO_LONLAT[epsg]
    (x1, x2), (y1, y2) = t.transform([x - half, x + half], [y - half, y + half])
    return f"{min(x1, x2)},{min(y1, y2)},{max(x1, x2)},{max(y1, y2)}"


async def ids(client, url: str) -> set[str]:
    r = await client.get(url)
    assert r.status_code == 200, r.text
    return {f["id"] for f in r.json()["features"]}


async def test_bbox_inside_a_hole_does_not_select_the_polygon(client):
    # The Dölauer Heide LSG has a clearing (hole) around (701911, 5709564) in EPSG:25832.
    url = "/municipalities/halle/collections/ecological-zones/items?bbox="
    assert "lsg0034hal" not in await ids(client, url + bbox_around(25832, 701911, 5709564))
    # 600 m further west the same small box lies on the protected area itself.
    assert "lsg0034hal" in await ids(client, url + bbox_around(25832, 701311, 5709564))


async def test_bbox_near_but_outside_a_polygon_does_not_select_it(client):
    # The Reidetal LSG is a slanted quadrilateral; this box is inside its bounding box but off the shape.
    url = "/municipalities/halle/collections/ecological-zones/items?bbox="
    sx, sy = 712052, 5711081
    assert "lsg-reidetal" not in await ids(client, url + bbox_around(25832, sx + 380, sy + 750, 10))
    assert "lsg-reidetal" in await ids(client, url + bbox_around(25832, sx + 500, sy, 10))


async def test_bbox_counts_match_numbermatched(client):
    url = "/region/collections/commercial-sites/items?bbox=11.9,51.3,12.5,51.6"
    fc = (await client.get(url)).json()
    assert fc["numberMatched"] == len(fc["features"]) == 11  # Halle and Leipzig, not Magdeburg


async def test_regional_collection_has_every_municipality(client):
    fc = (await client.get("/region/collections/commercial-sites/items")).json()
    assert fc["numberMatched"] == 15
    by_muni = {}
    for f in fc["features"]:
        muni, _, fid = f["id"].partition(":")
        assert f["properties"]["municipality"] == muni
        by_muni.setdefault(muni, set()).add(fid)
    assert set(by_muni) == {"halle", "leipzig", "magdeburg"}
    only_leipzig = (await client.get("/region/collections/commercial-sites/items?municipality=leipzig")).json()
    assert only_leipzig["numberMatched"] == 5
    # The queryables list the slugs as an enum; a misspelt one is named, not answered with an empty page.
    for wrong in ("Leipzig", "leipzg"):
        r = await client.get(f"/region/collections/commercial-sites/items?municipality={wrong}")
        assert r.status_code == 400 and r.json()["parameter"] == "municipality", r.text
        assert "halle, leipzig, magdeburg" in r.json()["description"] and repr(wrong) in r.json()["description"]
    regional_meta = (await client.get("/region/collections/ecological-zones")).json()
    assert regional_meta["municipalities"] == ["halle", "leipzig", "magdeburg"]


async def test_sources_in_25832_and_25833_line_up(client):
    """Each feature's first vertex, transformed independently from its source file, equals the API's."""
    for muni, epsg in (("leipzig", 25833), ("halle", 25832), ("magdeburg", 25832)):
        source = json.loads((DEMO / f"{muni}-commercial-sites.geojson").read_text(encoding="utf-8"))
        assert source["crs"]["properties"]["name"].endswith(str(epsg))
        for feat in source["features"]:
            served = (await client.get(f"/region/collections/commercial-sites/items/{muni}:{feat['id']}")).json()
            geom, got = feat["geometry"], served["geometry"]
            first = geom["coordinates"][0][0] if geom["type"] == "Polygon" else geom["coordinates"][0][0][0]
            got_first = got["coordinates"][0][0] if got["type"] == "Polygon" else got["coordinates"][0][0][0]
            lon, lat = TO_LONLAT[epsg].transform(*first)
            assert abs(got_first[0] - lon) < 2e-7 and abs(got_first[1] - lat) < 2e-7, (muni, feat["id"])


async def test_regional_item_ids(client):
    ok = await client.get("/region/collections/planning-zones/items/leipzig:bp-nord-1")
    assert ok.status_code == 200 and ok.json()["properties"]["municipality"] == "leipzig"
    for bad in ("bp-nord-1", "nowhere:bp-nord-1", "halle:bp-nord-1", ":"):
        r = await client.get(f"/region/collections/planning-zones/items/{bad}")
        assert r.status_code == 404 and r.json()["parameter"] == "featureId"
