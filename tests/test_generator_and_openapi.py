"""The deterministic generator, and the OpenAPI 3.0 documents GIS clients read."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import shapely
from openapi_spec_validator import validate

from service.cli import _generate
from service.db import connect
from service.generator import CHUNK, Spec, chunk, features
from service.layertypes import registry
from service.main import create_app
from service.migrate import upgrade
from service.sql.write import upsert_municipality
from tests.conftest import settings_for


def test_generator_is_deterministic_at_any_size():
    small = [row for rows in features(Spec("commercial-site", 50, seed=7)) for row in rows]
    large = [row for rows in features(Spec("commercial-site", CHUNK + 50, seed=7)) for row in rows]
    assert len(small) == 50 and len(large) == CHUNK + 50
    assert small == large[:50]
    other = [row for rows in features(Spec("commercial-site", 50, seed=8)) for row in rows]
    assert other != small


def test_generated_features_fit_their_layer_types():
    for layer in ("commercial-site", "planning-zone", "ecological-zone"):
        geoms, props = chunk(Spec(layer, 100, vertices=1000 if layer == "ecological-zone" else 48), 0)
        assert shapely.is_valid(geoms[:200]).all()
        assert all(not registry()[layer].check(p) for p in props[:500]), layer
    eco, _ = chunk(Spec("ecological-zone", 10, vertices=1200), 0)
    assert shapely.get_num_coordinates(eco[1]) >= 1200
    assert np.any(shapely.get_num_interior_rings(eco[:10]) > 0)


async def test_generate_into_the_database(cluster, empty_db):
    """In a database of its own: a generated layer is published like any other (also in the region)."""
    url = empty_db()
    await asyncio.to_thread(upgrade, url)  # Alembic runs its own event loop
    conn = await connect(url)
    await upsert_municipality(conn, "magdeburg", "Magdeburg", "15003000", "Sachsen-Anhalt", 25832)
    await conn.close()
    assert await _generate(url, "magdeburg", "generated-sites", Spec("commercial-site", 25_000, seed=3)) == 25_000

    app = create_app(settings_for(cluster, database=url.rsplit("/", 1)[1]))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            url = "/municipalities/magdeburg/collections/generated-sites/items?limit=2&offset=10000"
            fc = (await c.get(url)).json()
            assert fc["numberMatched"] == 25_000
            expected = [row for rows in features(Spec("commercial-site", 10_002, seed=3)) for row in rows][-2:]
            assert [f["id"] for f in fc["features"]] == [row[0] for row in expected]
            assert fc["features"][0]["properties"] == json.loads(expected[0][2])
            region = (await c.get("/region/collections/commercial-sites/items?limit=1")).json()
            assert region["numberMatched"] == 25_000


async def test_service_openapi_is_valid_3_0(client):
    r = await client.get("/api")
    assert r.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    doc = r.json()
    assert doc["openapi"] == "3.0.3"
    validate(doc)
    ops = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    assert {"municipality.getFeatures", "region.getFeatures", "platform.getLayerType"} <= ops


async def test_root_openapi_is_a_standalone_ogc_api(client):
    doc = (await client.get("/municipalities/halle/api")).json()
    validate(doc)
    assert doc["servers"][0]["url"].endswith("/municipalities/halle")
    assert {"/", "/conformance", "/collections", "/collections/{collectionId}", "/collections/{collectionId}/items",
            "/collections/{collectionId}/items/{featureId}", "/collections/{collectionId}/schema",
            "/api", "/tileMatrixSets", "/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
            "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
            "/styles/{styleId}"} <= set(doc["paths"])
    assert all(not p.startswith("/municipalities") for p in doc["paths"])
    items = doc["paths"]["/collections/{collectionId}/items"]["get"]
    names = {p["name"] for p in items["parameters"]}
    assert {"collectionId", "limit", "offset", "bbox", "datetime"} <= names and "municipality" not in names
    cid = next(p for p in items["parameters"] if p["name"] == "collectionId")
    assert "commercial-sites" in cid["schema"]["enum"] and "internal-notes" not in cid["schema"]["enum"]
    region = (await client.get("/region/api")).json()
    validate(region)
    assert region["servers"][0]["url"].endswith("/region")
