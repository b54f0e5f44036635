"""What the OpenAPI documents say the service answers and accepts: GeoJSON (geojson-pydantic's models), tile
matrix sets (morecantile's), the OGC API resources around them (landing page, conformance, collections, tile
sets, TileJSON) and the history, so that a neighbour's generated client knows each answer's shape.

`SCHEMAS` are the components; `RESPONSES` and `BODIES` say which operation answers or takes which, by method
and path below an API root. `layer_properties` turns a layer type into the schema of a collection's
`properties`, for the per-collection items operations of a root's own document.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from geojson_pydantic import Feature, FeatureCollection
from morecantile.models import TileMatrixSet
from pydantic.json_schema import models_json_schema

from service.layertypes import LayerType

REF = "#/components/schemas/{model}"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _array(items: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **more}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", **({"required": required} if required else {}), "properties": properties}


STRING = {"type": "string"}
URI = {"type": "string", "format": "uri"}
LINKS = _array(ref("Link"))
BBOX = _array({"type": "number"}, minItems=4, maxItems=6)
NULL = {"type": "object", "nullable": True, "enum": [None]}  # OpenAPI 3.0's way to say "or null" next to a $ref

OGC = {
    "Link": _obj(["href", "rel"], href=URI, rel=STRING, type=STRING, title=STRING, hreflang=STRING,
                 templated={"type": "boolean", "description": "href is a URI template ({tileMatrix} …)"}),
    "LandingPage": _obj(["links"], title=STRING, description=STRING, links=LINKS),
    "ConfClasses": _obj(["conformsTo"], conformsTo=_array(URI)),
    "Collection": _obj(
        ["id", "links"], id=STRING, title=STRING, description=STRING, keywords=_array(STRING), links=LINKS,
        itemType={"type": "string", "enum": ["feature"]}, crs=_array(URI), storageCrs=URI,
        extent=_obj([], spatial=_obj(["bbox"], bbox=_array(BBOX), crs=URI),
                    temporal=_obj(["interval"], interval=_array(_array({"type": "string", "format": "date-time",
                                                                         "nullable": True}, minItems=2,
                                                                        maxItems=2)), trs=URI)),
        layerType=_obj(["name", "version", "schema"], name=STRING, version=STRING, schema=URI),
        license=STRING, attribution=STRING,
        numberOfFeatures={"type": "integer", "description": "features in the collection now"}),
    "Collections": _obj(["links", "collections"], links=LINKS, collections=_array(ref("Collection"))),
    "Items": {"allOf": [ref("FeatureCollection"), _obj(
        [], links=LINKS, timeStamp={"type": "string", "format": "date-time"},
        numberMatched={"type": "integer", "description": "features that match the query, on all pages"},
        numberReturned={"type": "integer"})]},
    "Item": {"allOf": [ref("Feature"), _obj([], links=LINKS)]},
    "Change": _obj(
        ["changeId", "op", "at", "feature"], changeId={"type": "integer"},
        op={"type": "string", "enum": ["insert", "update", "delete"]},
        at={"type": "string", "format": "date-time"},
        id={"type": "string", "description": "the feature (in the change feed)"},
        actor={"type": "string", "description": "who wrote it (key or token subject); shown to the municipality's "
                                                "own members only"},
        feature={"anyOf": [ref("Feature"), NULL], "description": "the state after the change; null after a delete"}),
    "Changes": _obj(["collection", "latestChangeId", "numberReturned", "changes", "links"], collection=STRING,
                    latestChangeId={"type": "integer"}, numberReturned={"type": "integer"},
                    changes=_array(ref("Change")), links=LINKS),
    "Versions": _obj(["id", "versions", "links"], id=STRING,
                     historyFrom={"type": "string", "format": "date-time", "nullable": True,
                                  "description": "the history was pruned before this time"},
                     versions=_array(ref("Change")), links=LINKS),
    "TileMatrixSets": _obj(["tileMatrixSets"], tileMatrixSets=_array(_obj(
        ["links"], id=STRING, title=STRING, uri=URI, crs=URI, links=LINKS))),
    "TileSets": _obj(["tilesets"], links=LINKS, tilesets=_array(_obj(
        ["dataType", "crs", "links"], title=STRING, dataType={"type": "string", "enum": ["vector"]}, crs=URI,
        tileMatrixSetURI=URI, links=LINKS))),
    "TileSet": _obj(
        ["dataType", "crs", "links"], title=STRING, dataType={"type": "string", "enum": ["vector"]}, crs=URI,
        tileMatrixSetURI=URI, links=LINKS,
        tileMatrixSetLimits=_array(_obj(["tileMatrix", "minTileRow", "maxTileRow", "minTileCol", "maxTileCol"],
                                        tileMatrix=STRING, minTileRow={"type": "integer"},
                                        maxTileRow={"type": "integer"}, minTileCol={"type": "integer"},
                                        maxTileCol={"type": "integer"})),
        boundingBox=_obj(["lowerLeft", "upperRight"], lowerLeft=_array({"type": "number"}),
                         upperRight=_array({"type": "number"}), crs=URI),
        layers=_array(_obj(["id"], id={"type": "string", "description": "the layer's name inside the tiles"},
                           title=STRING, dataType=STRING, geometryDimension={"type": "integer"},
                           minTileMatrix=STRING, maxTileMatrix=STRING,
                           propertiesSchema={"type": "object"}))),
    "TileJSON": _obj(
        ["tilejson", "tiles", "vector_layers"], tilejson=STRING, name=STRING, description=STRING,
        attribution=STRING, tiles=_array(STRING), minzoom={"type": "integer"}, maxzoom={"type": "integer"},
        bounds=_array({"type": "number"}, minItems=4, maxItems=4), center=_array({"type": "number"}),
        vector_layers=_array(_obj(["id", "fields"], id=STRING, description=STRING,
                                  fields={"type": "object", "additionalProperties": STRING},
                                  minzoom={"type": "integer"}, maxzoom={"type": "integer"}))),
    # OGC API – Processes
    "ProcessSummary": _obj(["id", "version", "links"], id=STRING, version=STRING, title=STRING,
                           description=STRING, jobControlOptions=_array(STRING),
                           outputTransmission=_array(STRING), links=LINKS),
    "ProcessList": _obj(["processes", "links"], processes=_array(ref("ProcessSummary")), links=LINKS),
    "Process": {"allOf": [ref("ProcessSummary"), _obj(
        [], inputs={"type": "object", "additionalProperties": _obj([], title=STRING, description=STRING,
                                                                   schema={"type": "object"})},
        outputs={"type": "object", "additionalProperties": _obj([], title=STRING, description=STRING,
                                                                schema={"type": "object"})})]},
    "StatusInfo": _obj(
        ["jobID", "type", "status", "links"], jobID=STRING, type={"type": "string", "enum": ["process"]},
        processID=STRING, message=STRING,
        status={"type": "string", "enum": ["accepted", "running", "successful", "failed", "dismissed"]},
        created={"type": "string", "format": "date-time"}, started={"type": "string", "format": "date-time"},
        finished={"type": "string", "format": "date-time"}, progress={"type": "integer"},
        inputs={"type": "object"}, links=LINKS),
    "JobList": _obj(["jobs", "links"], jobs=_array(ref("StatusInfo")), links=LINKS),
    "Results": {"type": "object", "description": "the results document (`response: document`): each output by "
                                                 "its id, its value inline with its media type",
                "additionalProperties": _obj(["value", "mediaType"], value={}, mediaType=STRING)},
    # Imports (GeoTwin's own: an upload becomes a job of the collection)
    "ImportStarted": _obj(["id", "status", "links"], id=STRING, status={"type": "string", "enum": ["queued"]},
                          links=LINKS),
    "ImportJob": _obj(
        ["id", "collection", "status"], id=STRING, collection=STRING,
        status={"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
        source={"type": "string", "description": "the uploaded file's name"}, options={"type": "object"},
        stage={"type": "string", "nullable": True, "enum": ["reading", "converting", "checking", None],
               "description": "what a running import does: an XPlanGML file is `reading` (processed: its features "
                              "read so far, total 0) and then `converting` (processed: its zones converted); every "
                              "file is then `checking` (its features checked and moved in)"},
        processed={"type": "integer", "nullable": True, "description": "what the stage has done so far"},
        total={"type": "integer", "nullable": True,
               "description": "what the stage has to do: the file's features (its zones); 0 while that is not yet "
                              "known (an XPlanGML file being read)"},
        progress={"type": "number", "nullable": True, "description": "processed / total, 0 to 1; null while the "
                                                                     "total is not known"},
        created={"type": "string", "format": "date-time"},
        finished={"type": "string", "format": "date-time", "nullable": True},
        error={"type": "string", "nullable": True},
        report={"allOf": [ref("ImportReport")], "nullable": True}),
    "ImportReport": _obj(
        ["source", "total", "processed", "imported", "rejected", "problems", "issues"],
        source=STRING, driver={"type": "string", "description": "GDAL's name for the file's format"},
        crs={"type": "string", "description": "the CRS the coordinates were read in"},
        total={"type": "integer"}, processed={"type": "integer"},
        imported={"type": "integer", "description": "0 when any feature was rejected: all or nothing"},
        rejected={"type": "integer", "description": "features with at least one problem"},
        problems={"type": "integer", "description": "all problems found; `issues` lists the first 1,000"},
        ignoredFields=_array(STRING, description="the file's fields the layer type does not have: not imported"),
        shortenedFields={"type": "object", "additionalProperties": STRING,
                         "description": "property -> the Shapefile field (cut to 10 characters) read as it"},
        linearized={"type": "integer", "description": "geometries with circular arcs, read as straight segments"},
        skipped={"type": "object", "additionalProperties": {"type": "integer"},
                 "description": "an XPlanGML file's objects that are no planning zones (building lines, "
                                "presentation objects …), by class: not imported"},
        issues=_array(_obj(["index", "fid", "property", "message"], index={
            "type": "integer", "description": "the feature's position in the file, from 0 (-1: the whole file)"},
            fid=STRING, property={"type": "string", "description": "the property, or `geometry` or `id`"},
            message=STRING))),
}


@cache
def _libraries() -> dict[str, Any]:
    """GeoJSON from geojson-pydantic and the tile matrix set from morecantile, as JSON Schema 2020-12 (the
    caller turns them into OpenAPI 3.0). geojson-pydantic's generic `properties` model is any object."""
    _, defs = models_json_schema([(Feature, "serialization"), (FeatureCollection, "serialization"),
                                  (TileMatrixSet, "serialization")], ref_template=REF)
    schemas = defs["$defs"]
    schemas.pop("BaseModel", None)
    return _clean(schemas, REF.format(model="BaseModel"), {"type": "object"})


def _clean(node: Any, target: str, by: dict[str, Any]) -> Any:
    """`target` references replaced `by`; morecantile's misspelt `exemples` (not a schema keyword) dropped."""
    if isinstance(node, list):
        return [_clean(n, target, by) for n in node]
    if isinstance(node, dict):
        if node.get("$ref") == target:
            return dict(by)
        return {k: _clean(v, target, by) for k, v in node.items()
                if not (k == "exemples" and isinstance(v, list))}
    return node


def schemas() -> dict[str, Any]:
    libraries = _libraries()
    assert not set(libraries) & set(OGC), "component names collide"
    return {**libraries, **OGC}


# (method, path below an API root) → (status, media type, component) of the answer.
RESPONSES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("get", "/"): ("200", "application/json", "LandingPage"),
    ("get", "/conformance"): ("200", "application/json", "ConfClasses"),
    ("get", "/collections"): ("200", "application/json", "Collections"),
    ("get", "/collections/{collectionId}"): ("200", "application/json", "Collection"),
    ("get", "/collections/{collectionId}/items"): ("200", "application/geo+json", "Items"),
    ("get", "/collections/{collectionId}/items/{featureId}"): ("200", "application/geo+json", "Item"),
    ("get", "/collections/{collectionId}/items/{featureId}/versions"): ("200", "application/json", "Versions"),
    ("get", "/collections/{collectionId}/changes"): ("200", "application/json", "Changes"),
    ("get", "/tileMatrixSets"): ("200", "application/json", "TileMatrixSets"),
    ("get", "/tileMatrixSets/{tileMatrixSetId}"): ("200", "application/json", "TileMatrixSet"),
    ("get", "/tiles"): ("200", "application/json", "TileSets"),
    ("get", "/tiles/{tileMatrixSetId}"): ("200", "application/json", "TileSet"),
    ("get", "/tiles/{tileMatrixSetId}/tilejson.json"): ("200", "application/json", "TileJSON"),
    ("get", "/collections/{collectionId}/tiles"): ("200", "application/json", "TileSets"),
    ("get", "/collections/{collectionId}/tiles/{tileMatrixSetId}"): ("200", "application/json", "TileSet"),
    ("get", "/collections/{collectionId}/tiles/{tileMatrixSetId}/tilejson.json"):
        ("200", "application/json", "TileJSON"),
    ("get", "/processes"): ("200", "application/json", "ProcessList"),
    ("get", "/processes/{process_id}"): ("200", "application/json", "Process"),
    ("get", "/jobs"): ("200", "application/json", "JobList"),
    ("get", "/jobs/{job_id}"): ("200", "application/json", "StatusInfo"),
    ("delete", "/jobs/{job_id}"): ("200", "application/json", "StatusInfo"),
    ("post", "/processes/{process_id}/execution"): ("201", "application/json", "StatusInfo"),  # Prefer: respond-async
    ("post", "/collections/{collectionId}/imports"): ("202", "application/json", "ImportStarted"),
    ("get", "/collections/{collectionId}/imports/{jobId}"): ("200", "application/json", "ImportJob"),
}
# (method, path below an API root) → (media type, schema) of the body.
BODIES: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("post", "/collections/{collectionId}/items"):
        ("application/geo+json", {"oneOf": [ref("Feature"), ref("FeatureCollection")]}),
    ("put", "/collections/{collectionId}/items/{featureId}"): ("application/geo+json", ref("Feature")),
}
ROOTS = ("/municipalities/{municipality}", "/region")


def below_root(path: str) -> str:
    """The path below its API root: /municipalities/{municipality}/tiles → /tiles, /region → /."""
    for prefix in ROOTS:
        if path == prefix or path.startswith(prefix + "/"):
            return path[len(prefix):] or "/"
    return path


def layer_properties(layer_type: LayerType) -> dict[str, Any]:
    """A layer type's JSON Schema as the schema of a feature's `properties`, without what OpenAPI 3.0's schemas
    lack (`$schema`, `$id`, `propertyNames`) or do not need (our `x-geotwin`)."""
    return {k: v for k, v in layer_type.schema.items() if not k.startswith(("$", "x-")) and k != "propertyNames"}
