"""OGC API – Tiles: tilesets, tiles in both matrix sets, formats, empty and invalid tiles, TileJSON, styles."""

from __future__ import annotations

import json
from pathlib import Path

import mapbox_vector_tile
import morecantile
import pytest
from pyproj import Transformer

from service.tiles import matrix_sets
from tests.conftest import new_key

HALLE = "/municipalities/halle"
LEIPZIG = "/municipalities/leipzig"
MVT = "application/vnd.mapbox-vector-tile"
DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


def tile_of(tms_id: str, lon: float, lat: float, z: int) -> morecantile.Tile:
    return matrix_sets()[tms_id].tile(lon, lat, z)


def url(root: str, tms_id: str, t: morecantile.Tile, collection: str | None = None) -> str:
    base = f"{root}/collections/{collection}" if collection else root
    return f"{base}/tiles/{tms_id}/{t.z}/{t.y}/{t.x}"


async def get_mvt(client, path: str) -> dict:
    r = await client.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text[:200])
    assert r.headers["content-type"] == MVT
    return mapbox_vector_tile.decode(r.content)


async def test_tile_matrix_sets(client):
    ids = {t["id"] for t in (await client.get(f"{HALLE}/tileMatrixSets")).json()["tileMatrixSets"]}
    assert ids == {"WebMercatorQuad", "WorldCRS84Quad", "UTM32ETRS89Quad"}
    utm = (await client.get(f"{HALLE}/tileMatrixSets/UTM32ETRS89Quad")).json()
    assert utm["crs"].endswith("/25832")
    assert utm["tileMatrices"][0]["pointOfOrigin"] == [-46133.17, 6301219.54]


async def test_tileset_metadata_links_the_template_and_lists_layers(client):
    doc = (await client.get(f"{HALLE}/tiles/WebMercatorQuad")).json()
    assert doc["dataType"] == "vector"
    assert {layer["id"] for layer in doc["layers"]} == {"planning-zones", "commercial-sites", "ecological-zones",
                                                         "charging-stations"}
    item = next(link for link in doc["links"] if link["rel"] == "item" and link["type"] == MVT)
    assert item["href"].endswith(f"{HALLE}/tiles/WebMercatorQuad/{{tileMatrix}}/{{tileRow}}/{{tileCol}}?f=mvt")
    sites = next(layer for layer in doc["layers"] if layer["id"] == "commercial-sites")
    assert sites["minTileMatrix"] == "10"
    lists = (await client.get(f"{HALLE}/collections/commercial-sites/tiles")).json()
    assert len(lists["tilesets"]) == 3


async def test_tileset_metadata_limits_the_tiles_to_the_data(client):
    """tileMatrixSetLimits cover the data and no more; a registered matrix set is named by its OGC URI."""
    path = f"{HALLE}/collections/commercial-sites"
    west, south, east, north = (await client.get(path)).json()["extent"]["spatial"]["bbox"][0]
    sites = (await client.get(f"{path}/items?limit=100")).json()["features"]
    for tms_id in ("WebMercatorQuad", "WorldCRS84Quad", "UTM32ETRS89Quad"):
        doc = (await client.get(f"{path}/tiles/{tms_id}")).json()
        limits = {int(m["tileMatrix"]): m for m in doc["tileMatrixSetLimits"]}
        assert sorted(limits) == list(range(int(doc["layers"][0]["minTileMatrix"]),
                                            int(doc["layers"][0]["maxTileMatrix"]) + 1))
        for z, m in limits.items():
            for site in sites:
                lon, lat = site["geometry"]["coordinates"][0][0][0]  # a vertex of each site
                t = tile_of(tms_id, lon, lat, z)
                assert m["minTileCol"] <= t.x <= m["maxTileCol"] and m["minTileRow"] <= t.y <= m["maxTileRow"], \
                    (tms_id, z, site["id"])
            if tms_id != "UTM32ETRS89Quad":  # north-west and south-east corners give the limits exactly
                nw, se = tile_of(tms_id, west, north, z), tile_of(tms_id, east, south, z)
                assert (m["minTileCol"], m["minTileRow"], m["maxTileCol"], m["maxTileRow"]) == (nw.x, nw.y, se.x, se.y)
        beyond = limits[14]
        r = await client.get(f"{path}/tiles/{tms_id}/14/{beyond['maxTileRow'] + 1}/{beyond['maxTileCol'] + 1}")
        assert r.status_code == 204
    web = (await client.get(f"{path}/tiles/WebMercatorQuad")).json()
    assert web["tileMatrixSetURI"] == "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
    dataset = (await client.get(f"{HALLE}/tiles/WebMercatorQuad")).json()  # from the lowest layer's zoom up
    assert dataset["tileMatrixSetLimits"][0]["tileMatrix"] == min(
        (layer["minTileMatrix"] for layer in dataset["layers"]), key=int)


async def test_tileset_lists_name_the_crs_and_the_tiling_scheme(client):
    for doc in ((await client.get(f"{HALLE}/collections/commercial-sites/tiles")).json(),
                (await client.get("/region/tiles")).json()):
        for item in doc["tilesets"]:
            assert item["crs"].startswith("http://www.opengis.net/def/crs/EPSG/0/") or (
                item["crs"] == "http://www.opengis.net/def/crs/OGC/1.3/CRS84" and "WorldCRS84Quad" in item["title"])
            scheme = next(link for link in item["links"]
                          if link["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme")
            assert (await client.get(scheme["href"])).json()["id"] == scheme["title"]
    sets = (await client.get(f"{HALLE}/tileMatrixSets")).json()["tileMatrixSets"]
    assert {s["id"]: s.get("uri") for s in sets} == {
        "WebMercatorQuad": "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad",
        "WorldCRS84Quad": "http://www.opengis.net/def/tilematrixset/OGC/1.0/WorldCRS84Quad", "UTM32ETRS89Quad": None}


async def test_dataset_tile_has_one_layer_per_collection(client):
    t = tile_of("WebMercatorQuad", 12.056, 51.511, 13)  # Star Park
    layers = await get_mvt(client, url(HALLE, "WebMercatorQuad", t))
    assert {"commercial-sites", "planning-zones", "ecological-zones"} <= set(layers)
    names = {f["properties"]["name"] for f in layers["commercial-sites"]["features"]}
    assert "Star Park – Teilfläche A" in names
    feature = next(f for f in layers["commercial-sites"]["features"] if f["properties"]["id"] == "gs-001")
    assert feature["properties"]["availability"] == "vermarktet" and feature["properties"]["area_net_ha"] == 38.5


def _expected_tile_xy(tms_id: str, t: morecantile.Tile, x: float, y: float, src_epsg: int) -> tuple[float, float]:
    """Where a source coordinate must land in the tile's 4096 grid (computed here with pyproj/morecantile)."""
    tms = matrix_sets()[tms_id]
    to_tms = Transformer.from_crs(src_epsg, tms.crs._pyproj_crs, always_xy=True)
    tx, ty = to_tms.transform(x, y)
    b = tms.xy_bounds(t)
    return (tx - b.left) / (b.right - b.left) * 4096, (ty - b.bottom) / (b.top - b.bottom) * 4096


@pytest.mark.parametrize(("root", "muni", "src_epsg", "fid", "tms_id", "z"), [
    (LEIPZIG, "leipzig", 25833, "gs-101", "UTM32ETRS89Quad", 9),  # 25833 source in the 25832 grid
    (LEIPZIG, "leipzig", 25833, "gs-101", "WebMercatorQuad", 14),
    (HALLE, "halle", 25832, "gs-006", "WebMercatorQuad", 14),
    (HALLE, "halle", 25832, "gs-006", "UTM32ETRS89Quad", 9),
    (LEIPZIG, "leipzig", 25833, "gs-101", "WorldCRS84Quad", 13),
    (HALLE, "halle", 25832, "gs-006", "WorldCRS84Quad", 13),
])
async def test_features_sit_where_their_source_coordinates_say(client, root, muni, src_epsg, fid, tms_id, z):
    """Every vertex inside the tile is one of the source's corners, put there independently with pyproj."""
    source = json.loads((DEMO / f"{muni}-commercial-sites.geojson").read_text(encoding="utf-8"))
    feat = next(f for f in source["features"] if f["id"] == fid)
    ring = feat["geometry"]["coordinates"][0][:-1]
    cx, cy = sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)
    lon, lat = Transformer.from_crs(src_epsg, 4326, always_xy=True).transform(cx, cy)
    t = tile_of(tms_id, lon, lat, z)
    layers = await get_mvt(client, url(root, tms_id, t, "commercial-sites"))
    got = next(f for f in layers["commercial-sites"]["features"] if f["properties"]["id"] == fid)
    expected = [_expected_tile_xy(tms_id, t, x, y, src_epsg) for x, y in ring]
    inside = [(x, y) for x, y in _points(got["geometry"]) if 0 < x < 4096 and 0 < y < 4096]
    assert inside, "no vertex of the site inside its own tile"
    for gx, gy in inside:
        assert min(abs(gx - ex) + abs(gy - ey) for ex, ey in expected) <= 2, (gx, gy, expected)


async def test_geojson_tiles_are_clipped_and_simplified(client):
    t = tile_of("WebMercatorQuad", 11.905, 51.503, 15)  # inside the Dölauer Heide
    r = await client.get(url(HALLE, "WebMercatorQuad", t, "ecological-zones"),
                         headers={"accept": "application/geo+json"})
    assert r.headers["content-type"] == "application/geo+json"
    fc = r.json()
    b = matrix_sets()["WebMercatorQuad"].bounds(t)
    for f in fc["features"]:
        for lon, lat in _points(f["geometry"]):
            assert b.left - 1e-6 <= lon <= b.right + 1e-6 and b.bottom - 1e-6 <= lat <= b.top + 1e-6
    ids = {f["id"] for f in fc["features"]}
    assert "lsg0034hal" in ids
    low = await client.get(url(HALLE, "WebMercatorQuad", tile_of("WebMercatorQuad", 11.905, 51.503, 9),
                                "ecological-zones") + "?f=geojson")
    lsg_low = next(f for f in low.json()["features"] if f["id"] == "lsg0034hal")
    assert len(_points(lsg_low["geometry"])) < 33 + 13  # shell and hole in the source: fewer after simplifying


def _points(geometry: dict) -> list[tuple[float, float]]:
    out = []

    def walk(c):
        if isinstance(c[0], (int, float)):
            out.append((c[0], c[1]))
        else:
            for part in c:
                walk(part)
    walk(geometry["coordinates"])
    return out


async def test_empty_and_invalid_tiles(client):
    atlantic = tile_of("WebMercatorQuad", -30.0, 45.0, 10)
    r = await client.get(url(HALLE, "WebMercatorQuad", atlantic))
    assert r.status_code == 204 and r.content == b""
    r = await client.get(url(HALLE, "WebMercatorQuad", atlantic) + "?f=geojson")
    assert r.status_code == 204
    for path, parameter in [(f"{HALLE}/tiles/WebMercatorQuad/3/8/0", "tileRow"),
                            (f"{HALLE}/tiles/WebMercatorQuad/3/0/8", "tileCol"),
                            (f"{HALLE}/tiles/WebMercatorQuad/-1/0/0", "tileMatrix"),
                            (f"{HALLE}/tiles/WebMercatorQuad/21/0/0", "tileMatrix"),
                            (f"{HALLE}/tiles/NoSuchGrid/3/0/0", "tileMatrixSetId"),
                            (f"{HALLE}/collections/nope/tiles/WebMercatorQuad/3/0/0", "collectionId")]:
        r = await client.get(path)
        assert r.status_code == 404 and r.json()["parameter"] == parameter, path
    r = await client.get(f"{HALLE}/tiles/WebMercatorQuad/3/x/0")
    assert r.status_code == 400 and r.json()["parameter"] == "tileRow"
    r = await client.get(f"{HALLE}/tiles/WebMercatorQuad/3/0/0?f=png")
    assert r.status_code == 400 and r.json()["parameter"] == "f"


async def test_layers_start_at_their_minimum_zoom(client):
    t9 = tile_of("WebMercatorQuad", 12.056, 51.511, 9)
    layers = await get_mvt(client, url(HALLE, "WebMercatorQuad", t9))
    assert "ecological-zones" in layers and "commercial-sites" not in layers and "planning-zones" not in layers
    t10 = tile_of("WebMercatorQuad", 12.056, 51.511, 10)
    assert "commercial-sites" in await get_mvt(client, url(HALLE, "WebMercatorQuad", t10))


async def test_regional_tiles_carry_the_municipality(client):
    t = tile_of("WebMercatorQuad", 12.43, 51.40, 12)  # Leipzig-Nord
    layers = await get_mvt(client, url("/region", "WebMercatorQuad", t))
    assert set(layers) <= {"planning-zones", "commercial-sites", "ecological-zones"}
    assert {f["properties"]["municipality"] for f in layers["commercial-sites"]["features"]} == {"leipzig"}


async def test_tilejson_layer_ids_equal_the_tile_layers(client):
    tj = (await client.get(f"{HALLE}/tiles/WebMercatorQuad/tilejson.json")).json()
    assert tj["tilejson"] == "3.0.0"
    assert tj["tiles"][0].endswith(f"{HALLE}/tiles/WebMercatorQuad/{{z}}/{{y}}/{{x}}")
    ids = {layer["id"] for layer in tj["vector_layers"]}
    t = tile_of("WebMercatorQuad", 12.056, 51.511, 13)
    assert set(await get_mvt(client, url(HALLE, "WebMercatorQuad", t))) <= ids
    assert {"planning-zones", "commercial-sites", "ecological-zones", "charging-stations"} == ids
    sites = next(layer for layer in tj["vector_layers"] if layer["id"] == "commercial-sites")
    assert sites["fields"]["area_net_ha"] == "Number" and sites["minzoom"] == 10
    one = (await client.get(f"{HALLE}/collections/ecological-zones/tiles/WebMercatorQuad/tilejson.json")).json()
    assert [layer["id"] for layer in one["vector_layers"]] == ["ecological-zones"]
    assert (await client.get(f"{HALLE}/tiles/UTM32ETRS89Quad/tilejson.json")).status_code == 404


async def test_styles_colour_by_code_with_legends(client):
    style = (await client.get(f"{HALLE}/styles/default")).json()
    assert style["version"] == 8
    assert style["sources"]["geotwin"]["url"].endswith(f"{HALLE}/tiles/WebMercatorQuad/tilejson.json")
    source_layers = {layer.get("source-layer") for layer in style["layers"]} - {None}
    assert source_layers == {"planning-zones", "commercial-sites", "ecological-zones", "charging-stations"}
    fill = next(layer for layer in style["layers"] if layer["id"] == "planning-zones-fill")
    assert fill["paint"]["fill-color"][:2] == ["match", ["get", "land_use"]]
    legend = style["metadata"]["geotwin:legend"]
    assert legend["commercial-sites"]["property"] == "availability"
    assert {i["value"] for i in legend["ecological-zones"]["items"]} >= {"NSG", "LSG", "FFH", "UESG"}
    assert any("verfügbar" in i["label"] for i in legend["commercial-sites"]["items"])
    one = (await client.get(f"{HALLE}/collections/commercial-sites/styles/default")).json()
    assert {layer.get("source-layer") for layer in one["layers"]} - {None} == {"commercial-sites"}
    assert (await client.get(f"{HALLE}/styles/fancy")).status_code == 404
    # Each style list (a dataset's, a collection's) links the styles that are there, and is linked from the
    # document above it.
    for base in (HALLE, f"{HALLE}/collections/commercial-sites", "/region/collections/ecological-zones"):
        above = (await client.get(base)).json()["links"]
        assert f"http://testserver{base}/styles" in {x["href"] for x in above if x["rel"].endswith("/styles")}
        listed = (await client.get(f"{base}/styles")).json()
        href = listed["styles"][0]["links"][0]["href"]
        assert href == f"http://testserver{base}/styles/default"
        assert (await client.get(href)).status_code == 200
    missing = await client.get(f"{HALLE}/collections/nowhere/styles")
    assert missing.status_code == 404 and missing.json()["parameter"] == "collectionId"


async def test_head_and_cors_on_tiles(client):
    t = tile_of("WebMercatorQuad", 12.056, 51.511, 13)
    path = url(HALLE, "WebMercatorQuad", t)
    head = await client.head(path, headers={"origin": "https://example.org"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["access-control-allow-origin"] == "*"
    assert head.headers["content-type"] == MVT


async def test_low_zoom_tiles_use_the_pre_simplified_geometry(db_url):
    """The database keeps the low-zoom geometry itself, for shapes with many vertices only, on any write."""
    import asyncpg

    class Rollback(Exception):
        """Leaves the demo data as it was."""

    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            pk = await conn.fetchval("SELECT id FROM collection WHERE slug = 'ecological-zones' LIMIT 1")
            full, lod1, lod2, lod3, wm_gap = await conn.fetchrow(
                "INSERT INTO feature (collection_id, fid, geom) VALUES ($1, 'round', "
                "ST_Buffer(ST_SetSRID(ST_MakePoint(700000, 5700000), 25832), 1000, 64)) "
                "RETURNING ST_NPoints(geom), ST_NPoints(geom_lod1), ST_NPoints(geom_lod2), ST_NPoints(geom_lod3), "
                "ST_HausdorffDistance(ST_Transform(geom_lod1, 3857), geom_wm1)", pk)
            rectangle = await conn.fetchval("SELECT geom_lod1 IS NULL FROM feature WHERE fid = 'gs-001'")
            raise Rollback
    except Rollback:
        pass
    finally:
        await conn.close()
    assert full == 257 and lod1 < lod2 < lod3 <= full
    assert wm_gap < 0.01  # the Web Mercator twin is the same shape, reprojected
    assert rectangle  # a rectangle keeps reading geom


async def test_complex_shapes_render_from_their_levels_in_the_right_place(app, client, db_url):
    """A 257-vertex zone at z9 (level 1, already in Web Mercator) and at z15 (full geometry) lands on the same
    spot; the z9 version has fewer vertices."""
    import asyncpg

    from tests.test_cache import announced

    conn = await asyncpg.connect(db_url)
    lon, lat = 11.96, 51.47
    try:
        before = app.state.catalog_cache.generation
        await conn.execute(
            "INSERT INTO feature (collection_id, fid, geom, properties) SELECT c.id, 'round-zone', "
            "ST_Buffer(ST_Transform(ST_SetSRID(ST_MakePoint($1, $2), 4326), 25832), 1500, 64), "
            "'{\"official_id\": \"R1\", \"name\": \"Rund\", \"category\": \"LSG\"}'::jsonb "
            "FROM collection c JOIN municipality m ON m.id = c.municipality_id "
            "WHERE m.slug = 'halle' AND c.slug = 'ecological-zones'", lon, lat)
        await announced(app, before)
        from pyproj import Geod

        geod = Geod(ellps="GRS80")
        to_lonlat = Transformer.from_crs(3857, 4326, always_xy=True)
        counts = {}
        edge_lon, edge_lat, _ = geod.fwd(lon, lat, 90, 1500)  # a z15 tile on the rim, not inside the circle
        for z, slack, (tlon, tlat) in ((9, 24 + 25 + 5, (lon, lat)), (15, 5, (edge_lon, edge_lat))):
            t = tile_of("WebMercatorQuad", tlon, tlat, z)
            layers = await get_mvt(client, url(HALLE, "WebMercatorQuad", t, "ecological-zones"))
            feat = next(f for f in layers["ecological-zones"]["features"] if f["properties"]["id"] == "round-zone")
            b = matrix_sets()["WebMercatorQuad"].xy_bounds(t)
            inside = [(x, y) for x, y in _points(feat["geometry"]) if 0 < x < 4096 and 0 < y < 4096]
            assert inside, z
            for x, y in inside:
                plon, plat = to_lonlat.transform(b.left + x / 4096 * (b.right - b.left),
                                                 b.bottom + y / 4096 * (b.top - b.bottom))
                distance = geod.inv(lon, lat, plon, plat)[2]
                assert abs(distance - 1500) < slack, (z, distance)
            counts[z] = len(_points(feat["geometry"]))
        assert counts[9] < 257
    finally:
        before = app.state.catalog_cache.generation
        await conn.execute("DELETE FROM feature WHERE fid = 'round-zone'")
        await conn.close()
        await announced(app, before)



class CountingPool:
    """The real pool, counting the connections taken from it."""

    def __init__(self, pool):
        self.pool, self.taken = pool, 0

    def acquire(self, **kw):
        self.taken += 1
        return self.pool.acquire(**kw)

    def __getattr__(self, name):  # everything else (the pool gauges read its size) as the pool itself
        return getattr(self.pool, name)


async def test_vector_tiles_are_made_on_connections_that_plan_each_statement_once(app, client, db_url):
    """MVT tiles run on the tile pool (generic plans: no 0.2 ms of planning per tile); GeoJSON tiles, whose
    clip was slower with a generic plan, stay on the primary pool (custom plans, as everything else)."""
    async with app.state.tile_pool.acquire() as conn:
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    async with app.state.pool.acquire() as conn:
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
    key = await new_key(db_url, "halle", "viewer")
    tiles, primary = CountingPool(app.state.tile_pool), CountingPool(app.state.pool)
    app.state.tile_pool, app.state.pool = tiles, primary
    try:
        t = tile_of("WebMercatorQuad", 12.057, 51.512, 15)  # a tile no other test asks for: not in the tile cache
        # Through the fast path (a plain URL) and through the router (with an API key: the application decides).
        layers = await get_mvt(client, url(HALLE, "WebMercatorQuad", t))
        assert layers and tiles.taken == 1
        r = await client.get(url(HALLE, "WebMercatorQuad", t, "planning-zones"), headers={"X-Api-Key": key})
        assert r.status_code == 200 and r.headers["content-type"] == MVT and tiles.taken == 2
        taken = primary.taken
        r = await client.get(url(HALLE, "WebMercatorQuad", t) + "?f=geojson")
        assert r.status_code == 200 and r.json()["features"]
        assert tiles.taken == 2 and primary.taken > taken
    finally:
        app.state.tile_pool, app.state.pool = tiles.pool, primary.pool


@pytest.mark.parametrize("tms_id", ["WebMercatorQuad", "UTM32ETRS89Quad"])
def test_geojson_tiles_skip_the_clip_only_inside_the_outline(tms_id):
    """What lies in `Footprint.inner` is sent unclipped, so that rectangle must lie inside the tile's exact
    outline: checked for tiles from zoom 4 to 16 across Germany (the outline's edges bend in UTM; from zoom 8
    on the rectangle covers over 80 % of the tile: UTM 32 turns it by up to ~5° at Germany's edges)."""
    import shapely

    from service.sql.tiles import footprint
    from service.tiles import tile_ref

    for lon, lat in [(6.0, 47.3), (12.0, 51.5), (15.0, 54.9), (9.9, 53.5)]:
        for z in range(4, 17, 2):
            t = tile_of(tms_id, lon, lat, z)
            fp = footprint(tile_ref(tms_id, t.z, t.y, t.x))
            assert fp is not None
            outline, inner = shapely.from_wkb(fp.outline), shapely.box(*fp.inner)
            assert z < 8 or inner.area > 0.8 * outline.area, (z, lon, lat)
            assert shapely.covered_by(inner, outline.buffer(1e-6 * outline.length)), (z, lon, lat)
