"""The deterministic generator, and the OpenAPI 3.0 documents GIS clients read."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import shapely
from openapi_schema_validator import OAS30Validator
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
    as_of = next(p for p in items["parameters"] if p["name"] == "asOf")
    assert "in the service's time zone, Europe/Berlin, when none is given" in as_of["description"]
    changes = doc["paths"]["/collections/{collectionId}/changes"]["get"]
    assert "Europe/Berlin" in next(p for p in changes["parameters"] if p["name"] == "since")["description"]
    region = (await client.get("/region/api")).json()
    validate(region)
    assert region["servers"][0]["url"].endswith("/region")


@pytest.mark.parametrize("root", ["/municipalities/halle", "/region"])
async def test_answers_have_the_shapes_their_openapi_documents_give(client, root):
    """A neighbour's generated client trusts the documented schemas: every read the root's document gives a
    schema for answers with a body that fits it (OpenAPI 3.0 schema rules, `nullable` included)."""
    doc = (await client.get(f"{root}/api")).json()
    values = {"{collectionId}": "commercial-sites", "{featureId}": "gs-001" if "halle" in root else "halle:gs-001",
              "{tileMatrixSetId}": "WebMercatorQuad"}
    checked = set()
    for path, item in doc["paths"].items():
        content = item.get("get", {}).get("responses", {}).get("200", {}).get("content", {})
        typed = [(media, body["schema"]) for media, body in content.items() if body.get("schema")]
        if not typed or path == "/api" or "{jobId}" in path:  # import jobs: test_import checks theirs
            continue
        concrete = path
        for name, value in values.items():
            concrete = concrete.replace(name, value)
        assert "{" not in concrete, path
        r = await client.get(root + concrete.rstrip("/"), headers={"Accept": typed[0][0]})
        assert r.status_code == 200, (concrete, r.text[:200])
        schema = {**typed[0][1], "components": doc["components"]}
        errors = sorted(OAS30Validator(schema).iter_errors(r.json()), key=lambda e: list(e.path))
        assert not errors, (concrete, [f"{list(e.path)}: {e.message[:200]}" for e in errors[:5]])
        checked.add(path)
    # A delete's entry in the change feed has no feature.
    change = {"$ref": "#/components/schemas/Change", "components": doc["components"]}
    assert not list(OAS30Validator(change).iter_errors(
        {"changeId": 7, "op": "delete", "at": "2026-11-22T10:00:00+00:00", "id": "gs-001", "feature": None}))
    # A selection of properties still fits the collection's own items schema.
    own = doc["paths"]["/collections/commercial-sites/items"]["get"]["responses"]["200"]["content"]
    schema = {**own["application/geo+json"]["schema"], "components": doc["components"]}
    selected = (await client.get(f"{root}/collections/commercial-sites/items?properties=name")).json()
    assert selected["features"] and not list(OAS30Validator(schema).iter_errors(selected))
    assert {"/", "/conformance", "/collections", "/collections/{collectionId}", "/collections/{collectionId}/items",
            "/collections/commercial-sites/items", "/collections/{collectionId}/items/{featureId}",
            "/tileMatrixSets/{tileMatrixSetId}", "/collections/{collectionId}/tiles/{tileMatrixSetId}",
            "/tiles/{tileMatrixSetId}/tilejson.json"} <= checked


async def test_the_headers_the_document_names_are_the_headers_answers_carry(client):
    """ETag, Cache-Control and Content-Crs are documented where a read answers with them, and only there; the
    successful answers say what they are."""
    doc = (await client.get("/api")).json()
    values = {"{municipality}": "halle", "{collectionId}": "commercial-sites", "{featureId}": "gs-001",
              "{tileMatrixSetId}": "WebMercatorQuad", "{styleId}": "default", "{name}": "commercial-site",
              "{process_id}": "statistics", "{tileMatrix}": "12", "{tileRow}": "1373", "{tileCol}": "2183"}
    checked = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert all(a.get("description") not in (None, "Successful Response") for a in op["responses"].values()
                       if "$ref" not in a), (method, path)
            if method != "get":
                continue
            concrete = path
            for name, value in values.items():
                concrete = concrete.replace(name, value)
            if "{" in concrete:  # a job or a key: nothing to read in the demo
                continue
            r = await client.get(concrete, headers={"Accept": "application/json"})
            if r.status_code == 401:  # the keys: a municipality's admin reads them
                continue
            documented = op["responses"][str(r.status_code)].get("headers", {})
            for header in ("ETag", "Cache-Control", "Content-Crs"):
                sent = header.lower() in r.headers and (header != "Cache-Control" or "etag" in r.headers)
                assert sent == (header in documented), (path, header, r.status_code, dict(r.headers))
            checked += 1
    assert checked > 60


def test_json_schema_types_become_openapi_3_0():
    from service.openapi import _to_30

    assert _to_30({"type": ["string", "null"]}) == {"type": "string", "nullable": True}
    assert _to_30({"type": ["string", "number", "null"]}) == {
        "nullable": True, "anyOf": [{"type": "string"}, {"type": "number"}]}
    # A schema's own alternatives stay, next to the types.
    assert _to_30({"type": ["string", "number"], "anyOf": [{"minLength": 1}, {"minimum": 0}]}) == {
        "anyOf": [{"minLength": 1}, {"minimum": 0}], "allOf": [{"anyOf": [{"type": "string"}, {"type": "number"}]}]}
    assert _to_30({"type": "array", "prefixItems": [{"type": "number"}] * 2, "minItems": 2}) == {
        "type": "array", "items": {"type": "number"}, "minItems": 2}
