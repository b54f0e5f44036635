"""OGC API – Features endpoints, built once per kind of root: each municipality and the region."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from service import cql, documents, export, queryables
from service.cache import etag_for
from service.catalog import Collection
from service.crs import CRS84
from service.db import connection, stored_json
from service.deps import JSON_ONLY, CollectionId, FeatureId, HtmlOrJson, Scope
from service.errors import HistoryPruned, InvalidParameter, NotFound
from service.head import answering_head
from service.openapi import root_openapi
from service.params import (
    MAX_NUMBER,
    check_known,
    parse_bbox,
    parse_bool,
    parse_crs,
    parse_datetime,
    parse_int,
    parse_limit,
    parse_properties,
    parse_sortby,
    property_filter,
)
from service.responses import (
    GEOJSON,
    HTML,
    OPENAPI,
    SCHEMA,
    base_url,
    feature_etag,
    html_response,
    json_response,
    link,
    negotiate,
    not_modified,
    representation,
    segment,
    variant,
    with_etag,
)
from service.routers.history import parse_instant
from service.sql.features import ItemsQuery, Output, count_sql, item_sql, items_sql
from service.sql.history import DELETED_AT

ITEMS_PARAMS = {"f", "limit", "offset", "bbox", "bbox-crs", "datetime", "crs", "filter", "filter-lang", "filter-crs",
                "sortby", "properties", "skipGeometry", "asOf"}
EXPORT_PARAMS = ITEMS_PARAMS - {"limit", "offset", "skipGeometry"}


def _root(request: Request, scope: Scope) -> str:
    return base_url(request) + scope.dataset.path


def build_router(kind: str, prefix: str, scope_dep: Callable[..., Awaitable[Scope]]) -> APIRouter:
    """The Features endpoints under `prefix`, resolved by `scope_dep` (municipality or region)."""
    router = APIRouter(prefix=prefix, tags=[kind])
    ScopeDep = Annotated[Scope, Depends(scope_dep)]

    @router.get("", operation_id=f"{kind}.getLandingPage", summary="Landing page")
    async def landing_page(request: Request, scope: ScopeDep, f: HtmlOrJson = None) -> Response:
        check_known(request.query_params, {"f"})
        fmt = negotiate(request)
        doc = documents.landing(_root(request, scope), scope.dataset, fmt, request.app.state.settings.api.title)
        if fmt == "html":
            viewer = f"{base_url(request)}/viewer?{urlencode({'root': scope.dataset.path})}"
            return html_response(request, "landing.html", doc=doc, dataset=scope.dataset,
                                 root=_root(request, scope), viewer=viewer)
        return json_response(doc)

    @router.get("/conformance", operation_id=f"{kind}.getConformance", summary="Conformance classes")
    async def conformance(request: Request, scope: ScopeDep, f: HtmlOrJson = None) -> Response:
        check_known(request.query_params, {"f"})
        doc = {"conformsTo": documents.conformance(kind == "municipality",
                                                   request.app.state.settings.api.if_match == "required")}
        if negotiate(request) == "html":
            return html_response(request, "conformance.html", doc=doc, dataset=scope.dataset,
                                 root=_root(request, scope))
        return json_response(doc)

    @router.get("/api", operation_id=f"{kind}.getApi", summary="This root's API definition (OpenAPI 3.0)",
                response_class=Response, responses={200: {"content": {OPENAPI: {}, HTML: {}}}})
    async def api(request: Request, scope: ScopeDep, f: HtmlOrJson = None) -> Response:
        check_known(request.query_params, {"f"})
        root = _root(request, scope)
        if negotiate(request) == "html":
            return html_response(request, "swagger.html", spec_url=f"{root}/api?f=json", dataset=scope.dataset)
        return json_response(root_openapi(request.app, scope.dataset, root, prefix), media_type=OPENAPI)

    @router.get("/collections", operation_id=f"{kind}.getCollections", summary="The collections")
    async def collections(request: Request, scope: ScopeDep, f: HtmlOrJson = None) -> Response:
        check_known(request.query_params, {"f"})
        fmt, root = negotiate(request), _root(request, scope)
        etag = etag_for(root, "collections", variant(request, fmt),
                        [(c.id, c.version) for c in scope.dataset.collections.values()])
        if (cached := not_modified(request, etag)) is not None:
            return cached
        doc = documents.collections(root, base_url(request), scope.dataset, request.app.state.crs.uris, fmt)
        if fmt == "html":
            return with_etag(html_response(request, "collections.html", doc=doc, dataset=scope.dataset, root=root),
                             etag)
        return with_etag(json_response(doc), etag)

    @router.get("/collections/{collectionId}", operation_id=f"{kind}.describeCollection",
                summary="Collection metadata")
    async def describe_collection(request: Request, scope: ScopeDep, collection_id: CollectionId,
                                  f: HtmlOrJson = None) -> Response:
        check_known(request.query_params, {"f"})
        c = scope.collection(collection_id)
        fmt, root = negotiate(request), _root(request, scope)
        etag = etag_for(root, c.id, c.version, variant(request, fmt))
        if (cached := not_modified(request, etag)) is not None:
            return cached
        doc = documents.collection(root, base_url(request), c, request.app.state.crs.uris, fmt)
        if fmt == "html":
            return with_etag(html_response(request, "collection.html", doc=doc, dataset=scope.dataset, root=root,
                                           collection=c), etag)
        return with_etag(json_response(doc), etag)

    @router.get("/collections/{collectionId}/schema", operation_id=f"{kind}.getCollectionSchema",
                summary="JSON Schema of the collection's features", response_class=Response,
                responses={200: {"content": {SCHEMA: {}}}}, dependencies=JSON_ONLY)
    async def collection_schema(request: Request, scope: ScopeDep, collection_id: CollectionId) -> Response:
        check_known(request.query_params, {"f"})
        c = scope.collection(collection_id)
        url = f"{_root(request, scope)}/collections/{c.id}/schema"
        extra = {"municipality": {"type": "string", "title": "Municipality (slug)"}} if c.regional else None
        return json_response(c.layer_type.feature_schema(c.title, url, extra), media_type=SCHEMA)

    @router.get("/collections/{collectionId}/queryables", operation_id=f"{kind}.getQueryables",
                summary="What filters and sortby may use (JSON Schema)", response_class=Response,
                responses={200: {"content": {SCHEMA: {}}}}, dependencies=JSON_ONLY)
    async def get_queryables(request: Request, scope: ScopeDep, collection_id: CollectionId) -> Response:
        check_known(request.query_params, {"f"})
        c = scope.collection(collection_id)
        known = queryables.build(c, await queryables.observed(request, scope.pool, c))
        url = f"{_root(request, scope)}/collections/{c.id}/queryables"
        return json_response(queryables.document(c, known, url), media_type=SCHEMA)

    @router.get("/collections/{collectionId}/items", operation_id=f"{kind}.getFeatures",
                summary="Features of a collection",
                description="Paged with `limit`/`offset` (follow the `next` link). Filter with `bbox`, `datetime`, "
                            "`filter` (CQL2) or `name=value` for any queryable (see `/queryables`); on regional "
                            "collections also `municipality=<slug>`. Coordinates in `crs` (see the collection's "
                            "`crs` list; the answer's `Content-Crs` header names it).",
                response_class=Response, responses={200: {"content": {GEOJSON: {}, HTML: {}}}})
    async def get_features(
        request: Request, scope: ScopeDep, collection_id: CollectionId, f: HtmlOrJson = None,
        limit: Annotated[int | None, Query(ge=1, le=MAX_NUMBER, description="Page size (default 100; larger values are "
                                                             "served as the maximum, 10000)")] = None,
        offset: Annotated[int | None, Query(ge=0, le=MAX_NUMBER, description="Features to skip")] = None,
        bbox: Annotated[str | None, Query(description="minx,miny,maxx,maxy in `bbox-crs` (default CRS84: "
                                                      "minLon,minLat,maxLon,maxLat); selects features that "
                                                      "intersect it")] = None,
        bbox_crs: Annotated[str | None, Query(alias="bbox-crs", description="CRS of `bbox` (a URI from the "
                                              "collection's `crs` list), e.g. "
                                              "http://www.opengis.net/def/crs/EPSG/0/25832")] = None,
        datetime_: Annotated[str | None, Query(alias="datetime", description="Instant or interval "
                                               "(`2020-01-01`, `2020-01-01/..`) tested against validity")] = None,
        crs: Annotated[str | None, Query(description="CRS of the returned coordinates (a URI from the "
                                                     "collection's `crs` list; default CRS84)")] = None,
        filter_: Annotated[str | None, Query(alias="filter", description="A CQL2 filter, e.g. "
                                             "`availability = 'available' AND area_net_ha >= 5`")] = None,
        filter_lang: Annotated[str | None, Query(alias="filter-lang", description="Language of `filter`",
                                                 json_schema_extra={"enum": ["cql2-text", "cql2-json"]})] = None,
        filter_crs: Annotated[str | None, Query(alias="filter-crs", description="CRS of geometry literals in "
                                                "`filter` (default CRS84)")] = None,
        sortby: Annotated[str | None, Query(description="Comma-separated queryables, `-` for descending: "
                                                        "`-area_net_ha,name`")] = None,
        properties: Annotated[str | None, Query(description="Only these properties (comma-separated)")] = None,
        skip_geometry: Annotated[str | None, Query(alias="skipGeometry", description="true: features without "
                                                   "geometry", json_schema_extra={"enum": ["true", "false"]})] = None,
        as_of: Annotated[str | None, Query(alias="asOf", description="the collection as it was at this RFC 3339 "
                                           "time, or at the start of this date (in the service's time zone "
                                           "when none is given; from the change log)")] = None,
    ) -> Response:
        c = scope.collection(collection_id)
        query = await _items_query(request, scope, c)
        return await _serve_items(request, scope, c, query)

    @router.get("/collections/{collectionId}/export", operation_id=f"{kind}.exportFeatures",
                summary="Download the collection (or a selection) as one file",
                description="`f`: " + ", ".join(f"{k} ({f.title})" for k, f in export.FORMATS.items())
                            + ". Takes the items parameters (`bbox`, `filter`, `datetime`, `crs`, `properties`, "
                            "`sortby`, `asOf`, `name=value`), without paging. Streamed: any size. A HEAD makes the "
                            "same checks and answers with the same headers but without `Content-Length`, "
                            "writing no file.",
                response_class=Response, responses={200: {"content": {f.media_type.split(";")[0]: {}
                                                                      for f in export.FORMATS.values()}}})
    async def export_features(
        request: Request, scope: ScopeDep, collection_id: CollectionId,
        f: Annotated[str | None, Query(description="file format", json_schema_extra={
            "enum": list(export.FORMATS)})] = None,
    ) -> Response:
        c = scope.collection(collection_id)
        name = "geojson" if f is None else f
        fmt = export.FORMATS.get(name)
        if fmt is None:
            raise InvalidParameter(f"f must be one of {', '.join(export.FORMATS)}; got {name!r}", parameter="f")
        query = await _items_query(request, scope, c, for_export=True)
        cols = export.columns(c, await queryables.observed(request, scope.pool, c))
        if query.output.properties is not None:
            cols = [(n, k) for n, k in cols if n in query.output.properties]
        label = f"{scope.dataset.slug}-{c.id}"
        headers = {"Content-Disposition": f'attachment; filename="{label}.{fmt.extension}"'}
        if name == "xlsx":
            async with connection(scope.pool) as conn:
                matched = await _number_matched(request, conn, c, query, 0)
            if matched > export.XLSX_MAX_ROWS:
                raise InvalidParameter(
                    f"a worksheet holds at most {export.XLSX_MAX_ROWS:,} rows and this selection has "
                    f"{matched:,} features: filter it (bbox, filter) or choose f=csv or f=gpkg", parameter="f")
        geometry = "MultiPolygon" if c.layer_type.multi_polygon else "Unknown"
        if name == "shp":
            geometry = await export.shapefile_geometry(scope.pool, c)
        if answering_head(request):
            # Every check a GET makes, and its headers but the size: writing a million features to learn it is
            # not what a link checker or a download manager's HEAD is worth.
            response = StreamingResponse(export.nothing(), media_type=fmt.media_type, headers=headers)
            return _content_crs(response, query.output)
        written = export.Written()  # the file-based formats' size, known before the first byte goes out
        if name == "geojson":
            body = export.geojson_stream(scope.pool, query)
        elif name == "csv":
            body = export.csv_stream(scope.pool, query, cols)
        elif name == "xlsx":
            body = await export.started(export.xlsx_stream(scope.pool, query, cols, fmt, c.id, written))
        else:
            body = await export.started(export.gdal_stream(scope.pool, query, cols, fmt, c.id, geometry, written))
        if written.size is not None:
            headers["Content-Length"] = str(written.size)
        response = StreamingResponse(body, media_type=fmt.media_type, headers=headers)
        return _content_crs(response, query.output)

    @router.get("/collections/{collectionId}/items/{featureId:fid}", operation_id=f"{kind}.getFeature",
                summary="One feature", response_class=Response,
                responses={200: {"content": {GEOJSON: {}, HTML: {}}}})
    async def get_feature(request: Request, scope: ScopeDep, collection_id: CollectionId,
                          feature_id: FeatureId, f: HtmlOrJson = None,
                          crs: Annotated[str | None, Query(description="CRS of the returned coordinates "
                                                                       "(default CRS84)")] = None,
                          properties: Annotated[str | None, Query(description="Only these properties")] = None,
                          skip_geometry: Annotated[str | None, Query(alias="skipGeometry")] = None) -> Response:
        check_known(request.query_params, {"f", "crs", "properties", "skipGeometry"})
        c = scope.collection(collection_id)
        members, fid = c.members, feature_id
        if c.regional:
            muni, _, fid = feature_id.partition(":")
            members = [mem for mem in c.members if mem[1] == muni]
        fmt = negotiate(request)
        out = _output(request, c, fmt)
        sql, args = item_sql(members, c.regional, c.layer_type.multi_polygon, fid, out)
        readable = bool(members and fid and "\x00" not in fid)
        async with connection(scope.pool) as conn:
            row = await conn.fetchrow(sql, *args) if readable else None
            # A link to a feature deleted since: when, and where its versions are (a regional id's are in its
            # municipality's collection, which is public, as every collection of the region is).
            deleted = await conn.fetchrow(DELETED_AT, members[0][0], fid) if row is None and readable else None
        if row is None:
            items = f"{base_url(request)}/municipalities/{members[0][1]}/collections/{deleted['slug']}/items" \
                if deleted and c.regional else f"{_root(request, scope)}/collections/{c.id}/items"
            raise _no_feature(c, feature_id, fid, deleted["at"] if deleted else None, items)
        # The ETag is the feature's version (what If-Match on a write compares), tagged per representation.
        etag = feature_etag(row[1], row[2], representation(variant(request, fmt), list(request.query_params.items())))
        if (cached := not_modified(request, etag)) is not None:
            return cached
        row = row[0]
        root = _root(request, scope)
        url = f"{root}/collections/{c.id}/items/{segment(feature_id)}"
        links = [link(f"{url}?f=json", "self" if fmt == "json" else "alternate", GEOJSON, "this feature"),
                 link(f"{url}?f=html", "self" if fmt == "html" else "alternate", HTML, "this feature as HTML"),
                 link(f"{root}/collections/{c.id}", "collection", "application/json", c.title)]
        feature = stored_json(row)
        feature["links"] = links
        if fmt == "html":
            keys = c.layer_type.ordered_keys(set(feature["properties"]))
            return with_etag(html_response(request, "item.html", feature=feature, keys=keys, collection=c,
                                           dataset=scope.dataset, root=root), etag)
        return _content_crs(with_etag(json_response(feature, media_type=GEOJSON), etag), out)

    return router


def _output(request: Request, c: Collection, fmt: str) -> Output:
    """How features are written. HTML pages draw their map in CRS84 whatever `crs` says."""
    params = request.query_params
    crs = parse_crs(params.get("crs"), request.app.state.crs, "crs")
    known = None if c.layer_type.open_properties else (
        set(c.layer_type.property_kinds()) | ({"municipality"} if c.regional else set()))
    return Output(crs=None if fmt == "html" else crs, properties=parse_properties(params.get("properties"), known),
                  skip_geometry=parse_bool(params.get("skipGeometry"), "skipGeometry"))


def _content_crs(response: Response, out: Output) -> Response:
    response.headers["Content-Crs"] = (out.crs.header if out.crs else f"<{CRS84}>")
    return response


async def _items_query(request: Request, scope: Scope, c: Collection, for_export: bool = False) -> ItemsQuery:
    """Parse the items parameters; anything not understood is a 400 naming the parameter. For an export,
    `f` names the file format, and there is no paging."""
    params = request.query_params
    base = EXPORT_PARAMS if for_export else ITEMS_PARAMS
    layer = c.layer_type
    named = set(layer.property_kinds())
    extra = {"municipality"} if c.regional else set()
    if layer.open_properties:
        # Generic layers: any other parameter is an equality filter on the property of that name.
        extra |= set(params.keys()) - base
    check_known(params, base | named | extra)
    settings = request.app.state.settings.api
    offered = request.app.state.crs
    bbox_crs = parse_crs(params.get("bbox-crs"), offered, "bbox-crs")
    if bbox_crs is not None and params.get("bbox") is None:
        raise InvalidParameter("bbox-crs is given without bbox", parameter="bbox-crs")
    query = ItemsQuery(
        members=c.members, regional=c.regional, multi=c.layer_type.multi_polygon,
        bbox=parse_bbox(params.get("bbox"), bbox_crs), bbox_crs=bbox_crs,
        interval=parse_datetime(params.get("datetime"), settings.zone),
        limit=0 if for_export else parse_limit(params.get("limit"), settings.default_limit, settings.max_limit),
        offset=0 if for_export else parse_int(params.get("offset"), "offset", 0, 0),
        output=_output(request, c, "json" if for_export else negotiate(request)),
        as_of=parse_instant(params.get("asOf"), "asOf", settings.zone),
    )
    if query.as_of and c.history_from and query.as_of < c.history_from:
        raise HistoryPruned(f"the history of {c.id!r} reaches back to {c.history_from.isoformat()}; asOf is earlier",
                            parameter="asOf", historyFrom=c.history_from.isoformat())
    if "filter" in params or "sortby" in params:
        known = queryables.build(c, await queryables.observed(request, scope.pool, c))
        filter_crs = parse_crs(params.get("filter-crs"), offered, "filter-crs") or offered.find(CRS84)
        if "filter" in params:
            query.filter = cql.parse(params["filter"], params.get("filter-lang"), filter_crs, known, settings.zone)
        query.sortby = parse_sortby(params.get("sortby"), known)
    else:
        for name in ("filter-lang", "filter-crs"):
            if name in params:
                raise InvalidParameter(f"{name} is given without filter", parameter=name)
    for name in set(params.keys()) - base:
        if name == "municipality" and c.regional:
            query.members = [m for m in c.members if m[1] == params[name]]
            if not query.members:  # the queryables list the slugs: `Leipzig` is a typo, not an empty answer
                raise InvalidParameter(f"municipality must be one of {', '.join(m[1] for m in c.members)}; got "
                                       f"{params[name]!r}", parameter=name)
            continue
        kind, value = property_filter(layer, name, params[name])
        if kind == "json":
            query.equals[name] = value
        else:
            query.text_equals[name] = value
    return query


async def _serve_items(request: Request, scope: Scope, c: Collection, query: ItemsQuery) -> Response:
    fmt = negotiate(request)
    etag = etag_for(scope.dataset.path, c.id, c.version, sorted(request.query_params.multi_items()),
                    variant(request, fmt))
    if (cached := not_modified(request, etag)) is not None:
        return cached
    rows: list[Any] = []
    matched = 0
    if query.members:
        async with connection(scope.pool) as conn:
            sql, args = items_sql(query)
            rows = [r[0] for r in await conn.fetch(sql, *args)]
            matched = await _number_matched(request, conn, c, query, len(rows))
    links = _page_links(request, _root(request, scope), c, query, len(rows), matched, fmt)
    meta = {"type": "FeatureCollection", "numberMatched": matched, "numberReturned": len(rows),
            "timeStamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), "links": links}
    if fmt == "html":
        features = stored_json("[" + ",".join(rows) + "]")
        # No features (a filter, or a date before the first import): the table still shows what it would hold.
        present = {k for f in features for k in f["properties"]} or set(c.layer_type.schema.get("properties", {}))
        columns = (["municipality"] if c.regional else []) + c.layer_type.ordered_keys(present - {"municipality"})
        root = _root(request, scope)
        downloads = export.download_links(f"{root}/collections/{c.id}", request.query_params.multi_items(),
                                          "the selection")
        kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("asOf", "offset")]
        return with_etag(html_response(request, "items.html", meta=meta, features=features, columns=columns,
                                       collection=c, dataset=scope.dataset, root=root, query=query,
                                       downloads=downloads, kept=kept, current="?" + urlencode(kept)), etag)
    body = orjson.dumps(meta)[:-1] + b',"features":[' + ",".join(rows).encode() + b"]}"
    return _content_crs(with_etag(Response(body, media_type=GEOJSON), etag), query.output)


def _no_feature(c: Collection, feature_id: str, fid: str, deleted: datetime | None, items: str) -> NotFound:
    """No such feature; for one deleted since, when, and its versions (in `items`, as `fid`)."""
    if deleted is None:
        return NotFound(f"no feature {feature_id!r} in collection {c.id!r}", parameter="featureId")
    versions = f"{items}/{segment(fid)}/versions"
    at = deleted.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return NotFound(f"no feature {feature_id!r} in collection {c.id!r}: it was deleted at {at}; its versions: "
                    f"{versions}", parameter="featureId", deletedAt=at,
                    links=[link(versions, "version-history", "application/json", "the feature's versions")])


async def _number_matched(request: Request, conn: Any, c: Collection, query: ItemsQuery, returned: int) -> int:
    """Exact, without a count on every page: the stored count when unfiltered, the page itself when it is
    the whole answer, otherwise counted once per filter and collection version and remembered."""
    if not query.filtered and len(query.members) == len(c.members):
        return c.feature_count
    if query.offset == 0 and returned < query.limit:
        return returned
    sql, args = count_sql(query)
    key = (c.version, sql, orjson.dumps(args, default=repr))
    counts = request.app.state.count_cache
    if key not in counts:
        counts[key] = await conn.fetchval(sql, *args)
    return counts[key]


def _page_links(request: Request, root: str, c: Collection, query: ItemsQuery, returned: int, matched: int,
                fmt: str) -> list[dict[str, str]]:
    url = f"{root}/collections/{c.id}/items"
    params = {k: v for k, v in request.query_params.items() if k not in ("offset", "f")}
    params["limit"] = str(query.limit)

    def href(offset: int, f: str) -> str:
        return f"{url}?{urlencode({**params, 'offset': offset, 'f': f})}"

    links = [link(href(query.offset, "json"), "self" if fmt == "json" else "alternate", GEOJSON, "this page"),
             link(href(query.offset, "html"), "self" if fmt == "html" else "alternate", HTML, "this page as HTML"),
             link(f"{root}/collections/{c.id}", "collection", "application/json", c.title)]
    if query.offset + returned < matched:
        links.append(link(href(query.offset + query.limit, fmt), "next", GEOJSON if fmt == "json" else HTML,
                          "next page"))
    if query.offset > 0:
        links.append(link(href(max(0, query.offset - query.limit), fmt), "prev",
                          GEOJSON if fmt == "json" else HTML, "previous page"))
    return links
