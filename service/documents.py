"""The JSON documents of an API root: landing page, conformance, collection metadata."""

from __future__ import annotations

from typing import Any

from service.catalog import Collection, Dataset
from service.crs import CRS84, epsg_uri
from service.export import download_links
from service.models import STORAGE_SRID
from service.responses import GEOJSON, HTML, JSON, OPENAPI, SCHEMA, link, self_links

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/collections",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/property-property",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/temporal-functions",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/dataset-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/oas30",
]
# OGC API - Features - Part 4 (Create, Replace, Update and Delete), declared by the municipalities' roots, which
# take writes: the Standard's URIs (its classes shared with OGC API - Common - Part 5 are named there) and those
# of its drafts, which clients and servers still use. Optimistic locking with ETags only while writes need
# If-Match (428 without it; GEOTWIN_API__IF_MATCH=optional takes them without).
EDITING = [
    "http://www.opengis.net/spec/ogcapi-common-5/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-common-5/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/features",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
]
ETAG_LOCKING = [
    "http://www.opengis.net/spec/ogcapi-common-5/1.0/conf/optimistic-locking-etags",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/optimistic-locking-etags",
]


def conformance(writable: bool, if_match_required: bool) -> list[str]:
    """The classes a root conforms to: the region only reads, a municipality's root also takes writes."""
    return CONFORMANCE + (EDITING + (ETAG_LOCKING if if_match_required else []) if writable else [])


QUERYABLES = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
TILESETS_VECTOR = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
TILING_SCHEMES = "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"
STYLES = "http://www.opengis.net/def/rel/ogc/1.0/styles"


def landing(root: str, dataset: Dataset, fmt: str, api_title: str) -> dict[str, Any]:
    return {
        "title": f"{api_title} – {dataset.title}",
        "description": dataset.description,
        "links": [
            *self_links(root, fmt, title="landing page"),
            link(f"{root}/api", "service-desc", OPENAPI, "the API definition (OpenAPI 3.0)"),
            link(f"{root}/api?f=html", "service-doc", HTML, "the API documentation"),
            link(f"{root}/conformance", "conformance", JSON, "conformance classes"),
            link(f"{root}/conformance", "http://www.opengis.net/def/rel/ogc/1.0/conformance", JSON,
                 "conformance classes"),
            link(f"{root}/collections", "data", JSON, "the collections"),
            link(f"{root}/collections", "http://www.opengis.net/def/rel/ogc/1.0/data", JSON, "the collections"),
            link(f"{root}/tiles", TILESETS_VECTOR, JSON, "vector tiles of all collections (one layer each)"),
            link(f"{root}/tileMatrixSets", TILING_SCHEMES, JSON, "tile matrix sets"),
            link(f"{root}/styles", STYLES, JSON, "map styles"),
            link(root.removesuffix(dataset.path) + ("/" if dataset.regional else "/municipalities"), "up", JSON,
                 "service root" if dataset.regional else "all municipalities"),
        ],
    }


def _extent(c: Collection) -> dict[str, Any]:
    extent: dict[str, Any] = {}
    if c.bbox:
        extent["spatial"] = {"bbox": [list(c.bbox)], "crs": CRS84}
    if c.temporal:
        start, end = c.temporal
        extent["temporal"] = {
            "interval": [[start.isoformat() + "T00:00:00Z" if start else None,
                          end.isoformat() + "T23:59:59Z" if end else None]],
            "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian",
        }
    return extent


def collection(root: str, base: str, c: Collection, crs: list[str], fmt: str | None = None) -> dict[str, Any]:
    """Collection metadata; `fmt` set for the collection's own document (adds self/alternate)."""
    url = f"{root}/collections/{c.id}"
    schema_url = f"{base}/schemas/{c.layer_type.name}"
    links = [
        link(f"{url}/items?f=json", "items", GEOJSON, "the features as GeoJSON"),
        link(f"{url}/items?f=html", "items", HTML, "the features as HTML"),
        # The feature schema, so clients know every field before the first page. Relation types compare
        # case-insensitively (RFC 8288), but GDAL's OAPIF driver matches only "describedBy": both spellings.
        link(f"{url}/schema", "describedby", SCHEMA, "schema of the features (JSON Schema)"),
        link(f"{url}/schema", "describedBy", SCHEMA, "schema of the features (JSON Schema)"),
        link(f"{url}/schema", "http://www.opengis.net/def/rel/ogc/1.0/schema", SCHEMA,
             "schema of the features (JSON Schema)"),
        link(f"{url}/queryables", QUERYABLES, SCHEMA, "what filters and sortby may use (JSON Schema)"),
        link(schema_url, "profile", SCHEMA, f"the layer-type contract {c.layer_type.name} {c.layer_type.version}"),
        link(f"{url}/tiles", TILESETS_VECTOR, JSON, "vector tiles of this collection"),
        link(f"{url}/styles/default", "stylesheet", "application/vnd.mapbox.style+json", "MapLibre style"),
        link(f"{url}/styles", STYLES, JSON, "map styles of this collection"),
        *download_links(url, [], "the whole collection"),
    ]
    if fmt:
        links = self_links(url, fmt, title="collection") + links
    else:
        links.insert(0, link(url, "self", JSON, c.title))
    doc: dict[str, Any] = {
        "id": c.id,
        "title": c.title,
        "description": c.description,
        "itemType": "feature",
        "keywords": c.keywords,
        "crs": crs,
        "storageCrs": epsg_uri(STORAGE_SRID),
        "extent": _extent(c),
        "layerType": {"name": c.layer_type.name, "version": c.layer_type.version, "schema": schema_url},
        "license": c.licence,
        "attribution": c.attribution,
        "numberOfFeatures": c.feature_count,
        "links": links,
    }
    if c.regional:
        doc["municipalities"] = sorted({m for _, m in c.members})
    return doc


def collections(root: str, base: str, dataset: Dataset, crs: list[str], fmt: str) -> dict[str, Any]:
    return {
        "links": self_links(f"{root}/collections", fmt, title="collections"),
        "crs": crs,
        "collections": [collection(root, base, c, crs) for c in dataset.collections.values()],
    }
