"""The planning tools as OGC API – Processes describes them (`/processes/{id}`: inputs, outputs, how they
run), and what an execute request may ask besides its inputs: the contract that clients read.
`service.routers.processes` runs them."""

from typing import Any

from service.errors import InvalidParameter

JSON = "application/json"
GEOJSON = "application/geo+json"

CONFLICTS = {
    "id": "conflicts", "version": "1.0.0", "title": "Conflicts of commercial sites with protected zones",
    "description": "For each commercial site: every protected zone it overlaps (hectares and share of the site), "
                   "every zone within a buffer distance per category, and the area left free. Areas and "
                   "distances in the site's official CRS (EPSG:25832/25833).",
    "outputTransmission": ["value"],
    "inputs": {
        "sites": {"title": "Commercial sites: a collection path", "schema": {
            "type": "string", "example": "/region/collections/commercial-sites"}},
        "sitesFilter": {"title": "Only the sites matching this CQL2 text filter", "minOccurs": 0,
                        "schema": {"type": "string", "example": "availability = 'verfuegbar'"}},
        "constraints": {"title": "Constraint zones: a polygon collection path", "schema": {
            "type": "string", "example": "/region/collections/ecological-zones"}},
        "categories": {"title": "Only these protection categories", "minOccurs": 0,
                       "schema": {"type": "array", "items": {"type": "string"}}},
        "buffers": {"title": "Buffer distance in metres per category", "minOccurs": 0,
                    "schema": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0,
                                                                          "maximum": 10000}}},
        "defaultBuffer": {"title": "Buffer distance in metres for other categories", "minOccurs": 0,
                          "schema": {"type": "number", "minimum": 0, "maximum": 10000, "default": 300}},
    },
    "outputs": {"result": {"title": "Per site: conflicts, nearby zones, free area", "schema": {"oneOf": [
        {"type": "object", "contentMediaType": JSON}, {"type": "object", "contentMediaType": GEOJSON},
        {"type": "string", "contentMediaType": "text/csv"}]}}},
}


STATISTICS = {
    "id": "statistics", "version": "1.0.0", "title": "Regional statistics of commercial land and protection",
    "description": "Count and area of commercial sites by availability, zoning and servicing, per municipality "
                   "and for the region; protected area per category and municipality (overlapping zones of a "
                   "category count once). Areas in each municipality's official CRS. JSON or CSV (f=csv).",
    "outputTransmission": ["value"],
    "inputs": {"municipalities": {"title": "Only these municipalities (slugs)", "minOccurs": 0,
                                  "schema": {"type": "array", "items": {"type": "string"}}}},
    "outputs": {"result": {"schema": {"oneOf": [{"type": "object", "contentMediaType": JSON},
                                                {"type": "string", "contentMediaType": "text/csv"}]}}},
}
SITE_SEARCH = {
    "id": "site-search", "version": "1.0.0", "title": "Find commercial sites",
    "description": "Available sites with at least N ha (net, or net after conflicts with protected zones), zoning, "
                   "servicing and availability in given sets, within K km of a point or of a feature of another "
                   "layer (a motorway junction, say), ranked by usable area, distance or price; paged.",
    "outputTransmission": ["value"],
    "inputs": {
        "sites": {"title": "Collection path (default: the region's commercial sites)", "minOccurs": 0,
                  "schema": {"type": "string"}},
        "minAreaHa": {"title": "Usable area at least (ha)", "minOccurs": 0, "schema": {"type": "number",
                                                                                       "minimum": 0}},
        "netAfterConflicts": {"title": "Constraint collection path: usable area is the net area minus the share "
                                       "these zones cover", "minOccurs": 0, "schema": {"type": "string"}},
        "zoning": {"minOccurs": 0, "schema": {"type": "array", "items": {"type": "string"}}},
        "servicing": {"minOccurs": 0, "schema": {"type": "array", "items": {"type": "string"}}},
        "availability": {"minOccurs": 0, "schema": {"type": "array", "items": {"type": "string"}}},
        "near": {"title": "Within km of a point [lon, lat] or of a feature (its path)", "minOccurs": 0,
                 "schema": {"type": "object", "properties": {"point": {"type": "array", "items": {"type": "number"}},
                                                             "feature": {"type": "string"},
                                                             "km": {"type": "number", "minimum": 0,
                                                                    "maximum": 500}}}},
        "rankBy": {"minOccurs": 0, "schema": {"type": "string", "enum": ["area", "distance", "price"],
                                              "default": "area"}},
        "order": {"minOccurs": 0, "schema": {"type": "string", "enum": ["asc", "desc"]}},
        "limit": {"minOccurs": 0, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
        "offset": {"minOccurs": 0, "schema": {"type": "integer", "minimum": 0, "default": 0}},
    },
    "outputs": {"result": {"schema": {"type": "object", "contentMediaType": JSON}}},
}
PROCESSES = {"conflicts": CONFLICTS, "statistics": STATISTICS, "site-search": SITE_SEARCH}
for _doc in PROCESSES.values():
    _doc["jobControlOptions"] = ["sync-execute", "async-execute"]

# What an execute request may hold (OGC API - Processes 1.0, execute.yaml); `subscriber` is not offered.
EXECUTE_MEMBERS = {"inputs", "outputs", "response"}
# `raw`: the result as it is (the default); `document`: the standard's results document, {"result": {"value": …,
# "mediaType": …}} (/req/core/process-execute-sync-document, /req/core/job-results-async-document).
RESPONSE_TYPES = ("raw", "document")
FORMAT_OF = {JSON: "json", GEOJSON: "geojson", "text/csv": "csv"}  # an output's media type -> f


def format_asked(spec: dict[str, Any], outputs: Any, f: str | None) -> str | None:
    """The output format (as `f` names it) that `outputs` asks for in the standard's way
    ({"result": {"format": {"mediaType": "text/csv"}}}), or `f` when it asks for none. A media type the
    process does not offer, or one other than `f`'s, is a 400: a client asking for CSV got JSON before."""
    if outputs is None:
        return f
    if not isinstance(outputs, dict) or not all(isinstance(v, dict) for v in outputs.values()):
        raise InvalidParameter('outputs is {"result": {"format": {"mediaType": …}}}', parameter="outputs")
    if unknown := sorted(set(outputs) - set(spec["outputs"])):
        raise InvalidParameter(f"no output {unknown[0][:40]!r}; outputs: {', '.join(spec['outputs'])}",
                               parameter="outputs")
    mode = (outputs.get("result") or {}).get("transmissionMode", "value")
    if mode not in spec["outputTransmission"]:
        raise InvalidParameter(f"outputs: the result is sent by value, not by {str(mode)[:40]!r} "
                               "(the process's outputTransmission)", parameter="outputs")
    result = spec["outputs"]["result"]["schema"]
    offered = [one["contentMediaType"] for one in result.get("oneOf", [result])]
    media = ((outputs.get("result") or {}).get("format") or {}).get("mediaType")
    if media is None:
        return f
    if media not in offered:
        raise InvalidParameter(f"outputs: the result comes as {', '.join(offered)}, not {str(media)[:60]!r}",
                               parameter="outputs")
    if f is not None and f != FORMAT_OF[media]:
        raise InvalidParameter(f"f={f} and outputs' {media} ask for different formats", parameter="f")
    return FORMAT_OF[media]


def response_asked(body: dict[str, Any]) -> str:
    """The execute request's `response`: `raw` (the default) or `document`."""
    response = body.get("response", "raw")
    if response not in RESPONSE_TYPES:
        raise InvalidParameter(f"response is raw (the result as it is, the default) or document (a results "
                               f"document: {{\"result\": {{\"value\": …, \"mediaType\": …}}}}), not "
                               f"{str(response)[:40]!r}", parameter="response")
    return response
