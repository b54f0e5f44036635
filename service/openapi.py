"""OpenAPI 3.0 documents: the whole service's, and one per API root (what GDAL/QGIS read as service-desc)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from service.catalog import Collection, Dataset


def _to_30(node: Any) -> Any:
    """Rewrite the JSON Schema 2020-12 forms FastAPI emits into their OpenAPI 3.0 equivalents."""
    if isinstance(node, list):
        return [_to_30(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_30(v) for k, v in node.items()}
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del out[key]
            if len(rest) == 1:
                out.update(rest[0])
            else:
                out[key] = rest
            out["nullable"] = True
    if isinstance(out.get("type"), list):
        types = [t for t in out["type"] if t != "null"]
        if len(types) < len(out["type"]):
            out["nullable"] = True
        out["type"] = types[0] if len(types) == 1 else types
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if isinstance(out.get("examples"), list) and "in" not in out:
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[bound.replace("exclusiveM", "m")] = out[bound]
            out[bound] = True
    return out


def service_openapi(app: FastAPI) -> dict[str, Any]:
    """The whole service as OpenAPI 3.0 (cached on the app)."""
    if app.state.openapi_30 is None:
        doc = _to_30(copy.deepcopy(app.openapi()))
        doc["openapi"] = "3.0.3"
        app.state.openapi_30 = doc
    return app.state.openapi_30


def root_openapi(app: FastAPI, dataset: Dataset, root_url: str, prefix: str) -> dict[str, Any]:
    """One API root as a stand-alone OGC API: its paths without the prefix, served from `root_url`, with
    the root's collection ids listed, and without the `municipality` path parameter."""
    full = service_openapi(app)
    paths: dict[str, Any] = {}
    for path, item in full["paths"].items():
        if not path.startswith(prefix):
            continue
        item = copy.deepcopy(item)
        for op in item.values():
            params = [p for p in op.get("parameters", []) if p.get("name") != "municipality"]
            for p in params:
                if p.get("name") == "collectionId":
                    p["schema"] = {"type": "string", "enum": sorted(dataset.collections)}
            op["parameters"] = params
        paths[path[len(prefix):] or "/"] = item
    generic = paths.get("/collections/{collectionId}/items", {}).get("get")
    if generic:
        for cid, c in sorted(dataset.collections.items()):
            paths[f"/collections/{cid}/items"] = {"get": _collection_items(generic, cid, c)}
    return {
        "openapi": "3.0.3",
        "info": {**full["info"], "title": f"{full['info']['title']} – {dataset.title}",
                 "description": dataset.description},
        "servers": [{"url": root_url}],
        "paths": paths,
        "components": full.get("components", {}),
    }


def _collection_items(generic: dict[str, Any], cid: str, c: Collection) -> dict[str, Any]:
    """The items operation of one collection, with each of its properties as an equality query parameter:
    GDAL's OAPIF driver reads these to send `-where name = 'x'` to the server instead of filtering locally."""
    op = copy.deepcopy(generic)
    op["operationId"] = f"{op.get('operationId', 'getFeatures')}.{cid}"
    op["summary"] = f"Features of {c.title}"
    params = [p for p in op.get("parameters", []) if p.get("name") != "collectionId"]
    specs = dict(c.layer_type.schema.get("properties", {}))
    if c.regional:
        specs["municipality"] = {"type": "string", "title": "Municipality (slug)",
                                 "enum": sorted({m for _, m in c.members})}
    for name, spec in specs.items():
        schema = {k: spec[k] for k in ("type", "enum", "format") if k in spec}
        params.append({"name": name, "in": "query", "required": False, "schema": schema or {"type": "string"},
                       "description": f"Only features whose {spec.get('title', name)} equals this value"})
    op["parameters"] = params
    return op
