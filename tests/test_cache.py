"""Caching that is never stale: ETags and 304s, and tiles that follow every data change at once."""

from __future__ import annotations

import asyncio

import asyncpg
import mapbox_vector_tile
import pytest

from service.tiles import matrix_sets
from tests.conftest import announced, new_key

HALLE = "/municipalities/halle"
SITES = f"{HALLE}/collections/commercial-sites"
T = matrix_sets()["WebMercatorQuad"].tile(11.95, 51.49, 12)  # the Saale at the Peißnitzinsel (site gs-005)
TILE = f"{HALLE}/tiles/WebMercatorQuad/{T.z}/{T.y}/{T.x}"


async def site_ids(client) -> set[str]:
    r = await client.get(TILE)
    if r.status_code == 204:
        return set()
    layer = mapbox_vector_tile.decode(r.content).get("commercial-sites", {"features": []})
    return {f["properties"]["id"] for f in layer["features"]}


# The last ones name no version of their own: their ETag is their bytes' hash (service.revalidate).
METADATA = ["/", HALLE, f"{HALLE}/conformance", "/api", f"{SITES}/queryables", f"{SITES}/schema", "/schemas",
            f"{HALLE}/tiles", f"{HALLE}/tiles/WebMercatorQuad/tilejson.json", f"{HALLE}/styles/default",
            f"{HALLE}/tileMatrixSets/UTM32ETRS89Quad", "/processes"]


@pytest.mark.parametrize("path", [TILE, f"{SITES}/items?limit=2", f"{SITES}/items/gs-001", SITES,
                                  f"{HALLE}/collections", *METADATA])
async def test_etag_and_304(client, path):
    first = await client.get(path)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, no-cache"
    again = await client.get(path, headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = await client.get(path, headers={"if-none-match": '"something-else"'})
    assert other.status_code == 200


async def test_metadata_etags_agree_with_head_vary_by_accept_and_turn_private_with_a_credential(client, db_url):
    neighbour = await new_key(db_url, "leipzig", "viewer", "revalidate")  # sees what everybody sees of Halle
    for path in (f"{HALLE}/styles/default", HALLE):
        get = await client.get(path)
        head = await client.head(path)
        assert head.status_code == 200 and head.headers["etag"] == get.headers["etag"], path
        assert "Accept" in get.headers["vary"].split(", "), get.headers["vary"]
        keyed = await client.get(path, headers={"x-api-key": neighbour, "if-none-match": get.headers["etag"]})
        assert keyed.status_code == 304 and keyed.headers["cache-control"] == "private, no-cache"
    page = await client.get(HALLE, headers={"accept": "text/html"})  # each page has a nonce of its own
    assert page.status_code == 200 and "etag" not in page.headers
    for unversioned in ("/health", f"{SITES}/changes", f"{SITES}/export?f=geojson"):
        assert "etag" not in (await client.get(unversioned)).headers, unversioned


async def test_a_second_request_is_served_from_the_tile_cache(app, client):
    await client.get(TILE)
    hits = app.state.tile_cache.hits
    await client.get(TILE)
    assert app.state.tile_cache.hits == hits + 1


async def copy_site(app, conn, fid: str, new_fid: str, dx: float, dy: float) -> None:
    """Insert a moved copy of a site as psql would (no GeoTwin actor); wait until the app heard of it."""
    before = app.state.catalog_cache.generation
    await conn.execute("INSERT INTO feature (collection_id, fid, geom, properties) "
                       "SELECT collection_id, $2, ST_Translate(geom, $3, $4), properties FROM feature "
                       "WHERE fid = $1", fid, new_fid, dx, dy)
    await announced(app, before)


async def test_tiles_follow_a_write_from_another_process(app, client, db_url):
    """A change made outside the service (psql, the CLI) reaches the tiles as soon as it is announced."""
    assert "gs-005" in await site_ids(client)
    old_etag = (await client.get(TILE)).headers["etag"]
    conn = await asyncpg.connect(db_url)
    try:
        before = app.state.catalog_cache.generation
        await conn.execute("UPDATE feature SET fid = 'gs-005-sold' WHERE fid = 'gs-005'")
        await announced(app, before)
        ids = await site_ids(client)
        assert "gs-005" not in ids and "gs-005-sold" in ids
        stale = await client.get(TILE, headers={"if-none-match": old_etag})
        assert stale.status_code == 200  # the old ETag no longer matches

        await copy_site(app, conn, "gs-005-sold", "gs-new", 50, 50)
        assert "gs-new" in await site_ids(client)
        before = app.state.catalog_cache.generation
        await conn.execute("DELETE FROM feature WHERE fid = 'gs-new'")
        await announced(app, before)
        assert "gs-new" not in await site_ids(client)  # a deleted site is gone from the map at once
        assert (await client.get(f"{SITES}/items/gs-new")).status_code == 404
    finally:
        before = app.state.catalog_cache.generation
        await conn.execute("UPDATE feature SET fid = 'gs-005' WHERE fid = 'gs-005-sold'")
        await conn.close()
        await announced(app, before)
    assert "gs-005" in await site_ids(client)


async def test_count_and_extent_follow_a_write_from_another_process(app, client, db_url):
    """psql (or QGIS editing the table) inserts a site well east of Halle: the collection's count and extent,
    TileJSON's bounds (outside which map clients ask for no tiles) and Halle's extent take it in."""
    async def state() -> tuple[int, list[float], list[float], list[float]]:
        doc = (await client.get(SITES)).json()
        tilejson = (await client.get(f"{SITES}/tiles/WebMercatorQuad/tilejson.json")).json()
        root = (await client.get("/")).json()
        return (doc["numberOfFeatures"], doc["extent"]["spatial"]["bbox"][0], tilejson["bounds"],
                next(m["bbox"] for m in root["municipalities"] if m["id"] == "halle"))

    count, extent, bounds, halle = await state()
    assert extent[2] < 12.5
    tilejson = f"{SITES}/tiles/WebMercatorQuad/tilejson.json"
    etag = (await client.get(tilejson)).headers["etag"]
    conn = await asyncpg.connect(db_url)
    try:
        await copy_site(app, conn, "gs-005", "gs-far", 60000, 0)
        now = await state()
        assert now[0] == count + 1
        assert now[1][2] > 12.5 and now[2][2] > 12.5 and now[3][2] > 12.5, now
        # A map client revalidating its TileJSON gets the new bounds, not a 304.
        assert (await client.get(tilejson, headers={"if-none-match": etag})).status_code == 200
        before = app.state.catalog_cache.generation
        await conn.execute("DELETE FROM feature WHERE fid = 'gs-far'")
        await announced(app, before)
        assert await state() == (count, extent, bounds, halle)
        assert (await client.get(tilejson, headers={"if-none-match": etag})).status_code == 304
    finally:
        await conn.execute("DELETE FROM feature WHERE fid = 'gs-far'")
        await conn.close()


async def test_without_the_listener_every_request_reads_the_catalog(app, client, db_url):
    cache = app.state.catalog_cache
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'geotwin-listen'")
        for _ in range(100):
            if not cache.listening:
                break
            await asyncio.sleep(0.05)
        assert not cache.listening
        await conn.execute("UPDATE feature SET fid = 'gs-005-x' WHERE fid = 'gs-005'")
        assert "gs-005-x" in await site_ids(client)  # no announcement needed: read fresh
    finally:
        await conn.execute("UPDATE feature SET fid = 'gs-005' WHERE fid = 'gs-005-x'")
        await conn.close()
    for _ in range(200):  # the listener reconnects by itself
        if cache.listening:
            break
        await asyncio.sleep(0.05)
    assert cache.listening
    assert "gs-005" in await site_ids(client)


async def test_warm_tiles_are_answered_before_routing_and_identically(app, client, monkeypatch):
    first = await client.get(TILE)  # through the router: renders and fills the cache
    calls = []
    from service.routers import tiles as tiles_router

    real = tiles_router.serve_tile
    monkeypatch.setattr(tiles_router, "serve_tile", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = await client.get(TILE, headers={"origin": "https://example.org"})
    assert calls == [], "a warm tile went through the router"
    assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
    for header in ("content-type", "cache-control", "vary"):
        assert second.headers[header] == first.headers[header]
    assert second.headers["access-control-allow-origin"] == "*"  # the fast path adds CORS itself
    assert (await client.get(TILE, headers={"if-none-match": first.headers["etag"]})).status_code == 304
    head = await client.head(TILE)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(first.content))
    # A query the fast path does not know goes to the router (and its 400).
    assert (await client.get(TILE + "?foo=1")).status_code == 400
    assert calls == [1]


def test_the_tile_cache_holds_no_more_memory_than_its_bound():
    """Many small and empty tiles (a zoomed-out pan over empty country) must not carry the cache past its
    configured size: entries count with their keys and bookkeeping, not only their bytes."""
    import tracemalloc

    from service.cache import BytesCache, etag_for

    bound = 2 * 2**20
    cache = BytesCache(bound)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):
            key = (HALLE, "*", (3, 7, 11), f"WebMercatorQuad/16/{i}/{i}", "mvt")
            cache.put(key, b"" if i % 2 else b"x" * (i % 2000), etag_for(*key))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < bound * 1.25, f"{held / 2**20:.1f} MB held by a cache bound to {bound / 2**20:.0f} MB"
    assert cache.get((HALLE, "*", (3, 7, 11), "WebMercatorQuad/16/49999/49999", "mvt")) is not None, \
        "the newest tile is kept"
    assert cache.get((HALLE, "*", (3, 7, 11), "WebMercatorQuad/16/0/0", "mvt")) is None, "the oldest is evicted"
