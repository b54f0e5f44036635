"""The service root: which municipalities publish here, the regional root, and the layer-type schemas."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from service.catalog import Catalog
from service.deps import JSON_ONLY, HtmlOrJson, current_catalog
from service.errors import NotFound
from service.i18n import N_
from service.layertypes import registry
from service.openapi import service_openapi
from service.params import check_known
from service.responses import (
    JSON,
    OPENAPI,
    SCHEMA,
    base_url,
    html_response,
    json_response,
    link,
    negotiate,
    self_links,
)

router = APIRouter(tags=["platform"])

# N_: the root page shows it in the page's language (service/i18n.py); the JSON keeps it as it is.
DESCRIPTION = N_("Planning, commercial-land and ecology layers of the municipalities, as OGC API – Features. Each "
                 "municipality has its own API root; the region combines them.")


PROCESSES_CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/job-list",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/dismiss",
]


@router.get("/", operation_id="platform.getRoot", summary="Municipalities, the region and the layer types")
async def root(request: Request, f: HtmlOrJson = None) -> Response:
    check_known(request.query_params, {"f"})
    catalog = await current_catalog(request)
    base, fmt = base_url(request), negotiate(request)
    doc = {
        "title": request.app.state.settings.api.title,
        "description": DESCRIPTION,
        "links": [
            *self_links(base + "/", fmt, title="service root"),
            link(f"{base}/api", "service-desc", OPENAPI, "the whole service (OpenAPI 3.0)"),
            link(f"{base}/region", "child", JSON, "regional view: all municipalities"),
            link(f"{base}/schemas", "describedby", JSON, "layer types (JSON Schema)"),
            link(f"{base}/viewer", "alternate", "text/html", "map viewer"),
            link(f"{base}/processes", "http://www.opengis.net/def/rel/ogc/1.0/processes", JSON,
                 "planning tools (OGC API – Processes)"),
            link(f"{base}/jobs", "http://www.opengis.net/def/rel/ogc/1.0/job-list", JSON,
                 "your asynchronous process runs"),
            link(f"{base}/processes/statistics/chart", "alternate", "text/html",
                 "statistics of commercial land and protection, with charts"),
            link(f"{base}/conformance", "conformance", JSON, "conformance classes of the service root"),
        ],
        "municipalities": _municipalities(catalog, base),
        "region": {"id": "region", "title": "Region", "collections": sorted(catalog.region.collections),
                   "links": [link(f"{base}/region", "child", JSON, "regional API root")]},
    }
    if fmt == "html":
        return html_response(request, "root.html", doc=doc, layer_types=registry())
    return json_response(doc)


@router.get("/municipalities", operation_id="platform.getMunicipalities",
            summary="The municipalities that publish here, each with its API root",
            responses={303: {"description": "HTML asked for: the service root's page, which lists them"}})
async def municipalities(request: Request, f: HtmlOrJson = None) -> Response:
    """What the service root lists, on its own: where a client lands that goes up from an API root. A browser
    is sent to the root page, which shows them on a map."""
    check_known(request.query_params, {"f"})
    base = base_url(request)
    if negotiate(request) == "html":
        return RedirectResponse(f"{base}/", status_code=303, headers={"Vary": "Accept"})
    catalog = await current_catalog(request)
    return json_response({"municipalities": _municipalities(catalog, base),
                          "links": [link(f"{base}/municipalities", "self", JSON, "the municipalities"),
                                    link(f"{base}/", "up", JSON, "service root")]})


def _municipalities(catalog: Catalog, base: str) -> list[dict]:
    return [
        {"id": m.slug, "title": m.name, "ags": m.ags, "state": m.state,
         "crs": f"http://www.opengis.net/def/crs/EPSG/0/{m.crs}", "bbox": list(m.bbox) if m.bbox else None,
         "collections": len(catalog.datasets[m.slug].collections),
         "links": [link(f"{base}/municipalities/{m.slug}", "child", JSON, f"API root of {m.name}")]}
        for m in catalog.municipalities.values()
    ]


@router.get("/conformance", operation_id="platform.getConformance",
            summary="Conformance classes of the service root (the planning tools); each API root has its own",
            dependencies=JSON_ONLY)
async def conformance(request: Request) -> Response:
    check_known(request.query_params, {"f"})
    return json_response({"conformsTo": PROCESSES_CONFORMANCE})


@router.get("/viewer", operation_id="platform.getViewer", summary="Map viewer (HTML)",
            response_class=Response, responses={200: {"content": {"text/html": {}}}})
async def viewer(request: Request,
                 root: Annotated[str | None, Query(description="API root to open, e.g. /municipalities/halle")] = None
                 ) -> Response:
    check_known(request.query_params, {"root"})
    return html_response(request, "viewer.html")


@router.get("/schemas", operation_id="platform.getLayerTypes", summary="The layer types (data contracts)",
            dependencies=JSON_ONLY)
async def layer_types(request: Request) -> Response:
    check_known(request.query_params, {"f"})
    base = base_url(request)
    return json_response({
        "layerTypes": [
            {"name": lt.name, "title": lt.title, "version": lt.version,
             "links": [link(f"{base}/schemas/{lt.name}", "describedby", SCHEMA, lt.title)]}
            for lt in registry().values()
        ],
        "links": [link(f"{base}/schemas", "self", JSON)],
    })


@router.get("/schemas/{name}", operation_id="platform.getLayerType",
            summary="One layer type as JSON Schema (2020-12)", response_class=Response,
            responses={200: {"content": {SCHEMA: {}}}}, dependencies=JSON_ONLY)
async def layer_type(request: Request,
                     name: Annotated[str, Path(description="layer type, e.g. `commercial-site`")]) -> Response:
    check_known(request.query_params, {"f"})
    lt = registry().get(name.removesuffix(".schema.json").removesuffix(".json"))
    if lt is None:
        raise NotFound(f"no layer type {name!r}; known: {', '.join(registry())}", parameter="name")
    return json_response(lt.schema, media_type=SCHEMA)


@router.get("/api", operation_id="platform.getApi", summary="The whole service's API definition",
            response_class=Response, responses={200: {"content": {OPENAPI: {}, "text/html": {}}}})
async def api(request: Request, f: HtmlOrJson = None) -> Response:
    check_known(request.query_params, {"f"})
    if negotiate(request) == "html":
        return html_response(request, "swagger.html", spec_url=f"{base_url(request)}/api?f=json", dataset=None)
    return json_response(service_openapi(request.app), media_type=OPENAPI)

