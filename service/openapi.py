"""OpenAPI 3.0 documents: the whole service's, and one per API root (what GDAL/QGIS read as service-desc)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from service import apischemas
from service.access import cost, required
from service.catalog import Collection, Dataset

# The error body every 4xx/5xx answer carries (service.errors): what was wrong and where.
EXCEPTION = {
    "type": "object", "required": ["code", "description"],
    "properties": {
        "code": {"type": "string", "description": "e.g. InvalidParameterValue, NotFound, InvalidData"},
        "description": {"type": "string"},
        "parameter": {"type": "string", "description": "the query or path parameter at fault"},
        "property": {"type": "string", "description": "the feature property (or geometry) at fault"},
        "index": {"type": "integer", "description": "the feature's position in the body or file"},
        "deletedAt": {"type": "string", "format": "date-time",
                      "description": "a feature that is no longer there: when it was deleted"},
        "links": {"type": "array", "items": {"type": "object", "required": ["href", "rel"], "properties": {
            "href": {"type": "string"}, "rel": {"type": "string"}, "type": {"type": "string"},
            "title": {"type": "string"}}}, "description": "e.g. a deleted feature's versions (version-history)"},
    },
}
ANSWERS = {
    "304": "Not modified: the representation still has the ETag given in If-None-Match",
    "400": "A parameter or the body is not understood; the body names which",
    "401": "The credential sent (X-API-Key, a key as Basic password, or a bearer token) is not valid or empty",
    "403": "The credential does not carry the role this needs",
    "404": "No such resource",
    "406": "None of the media types in Accept (or f) is offered",
    "408": "The client stopped sending its body",
    "409": "Conflicts with what is stored (an id that exists, a job that is not done)",
    "410": "The history no longer reaches back that far (`geotwin history prune`), or the database was restored "
           "from an older backup (`HistoryRewound`); the body names the parameter",
    "412": "If-Match names a version that is no longer current",
    "413": "The body is larger than the configured limit",
    "415": "The body's Content-Type is not one this accepts",
    "422": "The feature or file does not fit the collection's layer type; the body names where",
    "428": "Changing a feature or a collection needs If-Match with its current ETag",
    "429": "Over the rate limit for writes or expensive requests; see Retry-After",
    "503": "The database is not reachable or the request took too long; see Retry-After",
}
WRITES = {"post", "put", "patch"}

# The headers answers carry (a generated client reads them; Swagger UI lists them under each answer).
_TEXT = {"type": "string"}
ETAG = {"description": "The representation's version: send it as If-None-Match to get 304 while it is "
                       "unchanged", "schema": _TEXT}
FEATURE_ETAG = {"description": "The feature's version: send it as If-Match to replace, change or delete the "
                               "feature (412 once somebody else did), or as If-None-Match to get 304 while it is "
                               "unchanged", "schema": _TEXT}
CACHE_CONTROL = {"description": "`public, no-cache`, or `private, no-cache` when asked with a credential: keep "
                                "the answer, but revalidate it (its ETag) before each use", "schema": _TEXT}
CONTENT_CRS = {"description": "The coordinates' CRS, as `<URI>` (the `crs` parameter's, CRS84 by default)",
               "schema": _TEXT}
WRITTEN_CRS = {"description": "The coordinates' CRS, as `<URI>`: the one the request's Content-Crs named (CRS84 "
                             "without it)", "schema": _TEXT}
LOCATION = {"description": "The new feature's URL; for a FeatureCollection, the items' URL", "schema": _TEXT}
RETRY_AFTER = {"description": "Seconds to wait before asking again", "schema": _TEXT}
# GET answers that carry no ETag: health and metrics (no-store), pages alone, the history and change feed
# (no-cache, read by position), downloads.
UNVERSIONED = ("/health", "/ready", "/metrics", "/viewer", "/chart", "/map", "/versions", "/changes", "/export")
# Declared, so that a generated client asks for it; the service answers 428 without it.
IF_MATCH = {"name": "If-Match", "in": "header", "required": True, "schema": {"type": "string"},
            "description": "The ETag of the feature or collection as you last read it (`*`: whatever it is now); "
                           "412 when it has changed since"}
# GEOTWIN_API__IF_MATCH=optional: features may be changed without it (QGIS's editing); the last writer wins.
IF_MATCH_OPTIONAL = {**IF_MATCH, "required": False,
                     "description": IF_MATCH["description"] + "; without it, the change is made whatever the "
                                                               "feature is now (this deployment allows that)"}


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
        if len(types) == 1:
            out["type"] = types[0]
        else:  # OpenAPI 3.0 names one type per schema
            del out["type"]
            kinds = [{"type": t} for t in types]
            if "anyOf" in out:  # keep the schema's own alternatives: both must hold
                out["allOf"] = [*out.get("allOf", []), {"anyOf": kinds}]
            else:
                out["anyOf"] = kinds
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if isinstance(out.get("prefixItems"), list):  # a tuple: OpenAPI 3.0 only counts the items
        kinds = out.pop("prefixItems")
        out["items"] = kinds[0] if all(k == kinds[0] for k in kinds) else {}
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
        _document_answers(doc, app.state.settings.api.if_match == "optional")
        _document_shapes(doc)
        _document_headers(doc)
        _document_crs(doc, app.state.crs.uris)
        _document_zone(doc, app.state.settings.api.time_zone)
        app.state.openapi_30 = doc
    return app.state.openapi_30


def _document_answers(doc: dict[str, Any], if_match_optional: bool = False) -> None:
    """Every answer an operation can give, as the service gives them: errors are 400 with the OGC exception
    body (FastAPI documents 422 for its validation; the service answers those 400), 401 for a bad credential
    anywhere, 403 where service.access asks for a role, 429 where it counts requests, and the credentials
    themselves as security schemes."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for fastapi_only in ("HTTPValidationError", "ValidationError"):
        schemas.pop(fastapi_only, None)
    schemas["Exception"] = EXCEPTION
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Exception"}},
             # a read asking for HTML (f=html, or a browser's Accept) gets the same as a page (service.errorpage)
             "text/html": {"schema": {"type": "string"}}}
    components["responses"] = {code: {"description": text, "content": error} if code != "304" else
                               {"description": text} for code, text in ANSWERS.items()}
    components["securitySchemes"] = {
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "A key from `geotwin keys create` or POST …/keys"},
        "basic": {"type": "http", "scheme": "basic",
                  "description": "A key as the password, any user name (for clients that know only these)"},
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "A token of the OpenID Connect issuer the deployment trusts "
                                  "(GEOTWIN_AUTH__OIDC_ISSUER; without it, tokens are refused)"},
    }
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            needs = required(method.upper(), path)
            codes = {"400", "401", "503"}
            if "{" in path:
                codes.add("404")
            if method == "get":
                codes |= {"304", "406"}
            if method in WRITES:
                codes |= {"408", "413", "415", "422"}
            if method in ("put", "patch", "delete") and ("/items/" in path or path.endswith("/{collectionId}")):
                optional = "/items/" in path and if_match_optional
                codes |= {"412"} if optional else {"412", "428"}
                params = op.setdefault("parameters", [])
                if not any(p.get("name") == "If-Match" for p in params):
                    params.append(IF_MATCH_OPTIONAL if optional else IF_MATCH)
            if method == "get" and path.endswith(("/items", "/export", "/changes")):
                codes.add("410")  # asOf, after or since before the history's cut; after(At) past a restore
            if method == "post" or (method in ("delete", "patch") and "/items/" not in path):
                codes.add("409")
            if needs is not None or (method == "delete" and path.startswith("/jobs/")):
                codes.add("403")
            if cost(method.upper(), path) is not None:
                codes.add("429")
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            if any(p.get("name") == "f" and "html" in str(p.get("schema")) for p in op.get("parameters", [])):
                for answer in ("200", "201"):
                    if answer in responses:
                        responses[answer].setdefault("content", {}).setdefault("text/html", {})
            for code in sorted(codes):
                responses.setdefault(code, {"$ref": f"#/components/responses/{code}"})
            # Reads need no credential (one may show a member's internal collections); the rest need one.
            op["security"] = ([{"apiKey": []}, {"basic": []}, {"bearer": []}] if needs is not None
                              else [{}, {"apiKey": []}, {"basic": []}, {"bearer": []}])
            if needs is not None:
                role, _ = needs
                who = "a platform administrator" if role == "platform" else f"the municipality's {role}"
                op["description"] = (op.get("description", "") + f"\n\nNeeds a credential of {who}.").strip()


def _document_shapes(doc: dict[str, Any]) -> None:
    """What each answer and body looks like (service.apischemas), wherever an API root has the operation."""
    doc["components"]["schemas"].update(_to_30(apischemas.schemas()))
    for path, item in doc["paths"].items():
        below = apischemas.below_root(path)
        for method, op in item.items():
            answer = apischemas.RESPONSES.get((method, below))
            if answer:
                code, media_type, name = answer
                content = op["responses"].setdefault(code, {"description": "Successful Response"}).setdefault(
                    "content", {})
                content[media_type] = {"schema": apischemas.ref(name)}
            body = apischemas.BODIES.get((method, below))
            if body and "requestBody" in op:
                media_type, schema = body
                op["requestBody"]["content"][media_type] = {"schema": schema}


def _document_headers(doc: dict[str, Any]) -> None:
    """What each successful answer says in its headers (version, caching, CRS, where a new feature is), and
    a description of its own in place of FastAPI's "Successful Response"."""
    components = doc["components"]["responses"]
    components["304"]["headers"] = {"ETag": ETAG, "Cache-Control": CACHE_CONTROL}
    components["412"]["headers"] = {"ETag": {"description": "The current version: read it again, reapply your "
                                                            "change and send this as If-Match", "schema": _TEXT}}
    for code in ("429", "503"):
        components[code]["headers"] = {"Retry-After": RETRY_AFTER}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            feature = path.endswith("/items/{featureId}")
            for code, answer in op.get("responses", {}).items():
                if not code.startswith("2") or "$ref" in answer:
                    continue
                if answer.get("description") in (None, "", "Successful Response"):
                    answer["description"] = op.get("summary", "")
                headers = answer.setdefault("headers", {})
                if method == "get" and not path.endswith(UNVERSIONED):
                    headers.update({"ETag": FEATURE_ETAG if feature else ETAG, "Cache-Control": CACHE_CONTROL})
                    if feature or path.endswith("/items"):
                        headers["Content-Crs"] = CONTENT_CRS
                elif method == "get" and path.endswith("/export"):
                    headers["Content-Crs"] = CONTENT_CRS
                elif method == "post" and path.endswith("/items"):
                    headers.update({"Location": LOCATION, "ETag": {**FEATURE_ETAG, "description": "For a single "
                                    "feature, its version (see GET …/items/{featureId})"},
                                    "Content-Crs": {**WRITTEN_CRS, "description": "For a single feature: "
                                                    + WRITTEN_CRS["description"]}})
                elif method in ("put", "patch") and feature:
                    headers.update({"ETag": {**FEATURE_ETAG, "description": "The feature's new version"},
                                    "Content-Crs": WRITTEN_CRS})
                if not headers:
                    del answer["headers"]


def _document_crs(doc: dict[str, Any], offered: list[str]) -> None:
    """The CRS parameters name the CRSs this deployment offers (settings: GEOTWIN_API__CRS), and the writes of
    features their Content-Crs (OGC API – Features Part 4, service.routers.edit)."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for p in op.get("parameters", []) if isinstance(op, dict) else []:
                if p.get("in") == "query" and p.get("name") in ("crs", "bbox-crs", "filter-crs"):
                    p["schema"] = {**p.get("schema", {}), "type": "string", "enum": offered}
            if (method == "post" and path.endswith("/items")) or (method in ("put", "patch")
                                                                   and path.endswith("/items/{featureId}")):
                op.setdefault("parameters", []).append({
                    "name": "Content-Crs", "in": "header", "required": False,
                    "schema": {"type": "string", "enum": [f"<{uri}>" for uri in offered]},
                    "description": "The CRS of the body's coordinates, as `<URI>` (default CRS84: longitude, "
                                   "latitude). The answer's feature comes back in the same CRS."})


def _document_zone(doc: dict[str, Any], zone: str) -> None:
    """Name the deployment's time zone (GEOTWIN_API__TIME_ZONE) where a parameter reads a time without one."""
    for item in doc["paths"].values():
        for op in item.values():
            for p in op.get("parameters", []) if isinstance(op, dict) else []:
                if "the service's time zone" in p.get("description", ""):
                    p["description"] = p["description"].replace("the service's time zone",
                                                                f"the service's time zone, {zone},")


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
        schemas = full["components"]["schemas"]
        for cid, c in sorted(dataset.collections.items()):
            paths[f"/collections/{cid}/items"] = {"get": _collection_items(generic, cid, c, schemas)}
    return {
        "openapi": "3.0.3",
        "info": {**full["info"], "title": f"{full['info']['title']} – {dataset.title}",
                 "description": dataset.description},
        "servers": [{"url": root_url}],
        "paths": paths,
        "components": full.get("components", {}),
    }


def _flat(schemas: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """An object schema with its references and `allOf` parts merged into one (a copy). Client generators
    (openapi-python-client) cannot merge two definitions of one property, such as a feature's general
    `properties` and a layer type's, so a collection's own schemas are written out whole."""
    if "$ref" in schema:
        return _flat(schemas, schemas[schema["$ref"].rsplit("/", 1)[-1]])
    out = copy.deepcopy({k: v for k, v in schema.items() if k != "allOf"})
    for part in schema.get("allOf", []):
        part = _flat(schemas, part)
        out.setdefault("type", part.get("type"))
        out["properties"] = {**out.get("properties", {}), **part.get("properties", {})}
        if part.get("required"):
            out["required"] = sorted({*out.get("required", []), *part["required"]})
    return out


def _collection_items(generic: dict[str, Any], cid: str, c: Collection, schemas: dict[str, Any]) -> dict[str, Any]:
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
    properties = _to_30(apischemas.layer_properties(c.layer_type))
    properties.pop("required", None)  # `properties=name` leaves the others out, required or not
    if c.regional:
        properties = {**properties, "properties": {**properties.get("properties", {}), "municipality": specs[
            "municipality"]}}
    feature = _flat(schemas, apischemas.ref("Item"))
    feature["properties"]["properties"] = properties
    items = _flat(schemas, apischemas.ref("Items"))
    items["properties"]["features"] = {"type": "array", "items": feature}
    op["responses"]["200"]["content"]["application/geo+json"] = {"schema": items}
    return op
