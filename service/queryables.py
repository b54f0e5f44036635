"""Queryables: the names a collection's filters and `sortby` may use, derived from its layer type.

Typed layer types name every property, so their queryables are the contract's properties. Generic layers
accept any property; theirs are the keys the collection actually holds with one JSON type throughout,
read once per collection version.
"""

from __future__ import annotations

from typing import Any

from service.catalog import Collection
from service.cql import Queryable
from service.db import connection

# What a queryable's JSON Schema keeps from the layer type's property schema.
SCHEMA_KEYS = ("title", "description", "type", "format", "enum", "minimum", "maximum", "maxLength", "x-labels")
JSON_KINDS = {"string": "string", "number": "number", "boolean": "boolean"}


def _kind(spec: dict[str, Any]) -> str:
    if spec.get("format") == "date":
        return "date"
    return {"integer": "number", "number": "number", "boolean": "boolean"}.get(spec.get("type", ""), "string")


def build(c: Collection, observed: dict[str, str] | None = None) -> dict[str, Queryable]:
    layer = c.layer_type
    geometry: dict[str, Any] = {"title": "Geometry", "x-ogc-role": "primary-geometry",
                                "format": "geometry-multipolygon" if layer.multi_polygon else "geometry-any"}
    out = {
        "id": Queryable("id", "string", {"title": "Feature id", "type": "string", "x-ogc-role": "id"},
                        column="({muni} || ':' || f.fid)" if c.regional else "f.fid", needs_muni=c.regional),
        "geometry": Queryable("geometry", "geometry", geometry, column="f.geom"),
    }
    if c.regional:
        out["municipality"] = Queryable("municipality", "string",
                                        {"title": "Municipality (slug)", "type": "string",
                                         "enum": sorted({m for _, m in c.members})},
                                        column="{muni}", needs_muni=True)
    validity = dict(zip(layer.validity or (), ("f.valid_from", "f.valid_to"), strict=False))
    for name, spec in layer.schema.get("properties", {}).items():
        schema = {k: v for k, v in spec.items() if k in SCHEMA_KEYS}
        kind = _kind(spec)
        if kind == "date":
            schema["x-ogc-role"] = "temporal"
        out[name] = Queryable(name, kind, schema, column=validity.get(name, ""))
    for name, kind in (observed or {}).items():
        if name not in out:
            out[name] = Queryable(name, kind, {"type": kind, "title": name})
    return out


async def observed(request: Any, pool: Any, c: Collection) -> dict[str, str]:
    """For a generic collection: each property key with a single JSON type across its features (cached by
    collection version, so one scan per change)."""
    if not c.layer_type.open_properties:
        return {}
    cache = request.app.state.count_cache
    key = ("observed-properties", tuple(c.members), c.version)
    if key not in cache:
        async with connection(pool) as conn:
            rows = await conn.fetch(
                "SELECT e.key, array_agg(DISTINCT jsonb_typeof(e.value)) AS kinds FROM feature f, "
                "jsonb_each(f.properties) e WHERE f.collection_id = ANY($1::int[]) AND "
                "jsonb_typeof(e.value) <> 'null' GROUP BY e.key", [pk for pk, _ in c.members])
        cache[key] = {r["key"]: JSON_KINDS[r["kinds"][0]] for r in rows
                      if len(r["kinds"]) == 1 and r["kinds"][0] in JSON_KINDS}
    return cache[key]


def document(c: Collection, queryables: dict[str, Queryable], url: str) -> dict[str, Any]:
    """/collections/{id}/queryables as JSON Schema (OGC API – Features Part 3)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": url,
        "type": "object",
        "title": f"{c.title} – queryables",
        "description": "Names usable in `filter` (CQL2), `sortby` and as `name=value` query parameters. "
                       "Dates compare by day.",
        "properties": {name: q.schema for name, q in queryables.items()},
        "additionalProperties": False,
    }
