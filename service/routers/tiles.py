"""OGC API – Tiles for every API root: the dataset's tiles (one layer per collection) and each collection's,
in WebMercatorQuad, WorldCRS84Quad and UTM32ETRS89Quad, as Mapbox Vector Tiles or GeoJSON; TileJSON and MapLibre styles.

An empty tile is answered 204 No Content in both formats; a tile outside the matrix set is a 404.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from service.cache import etag_for
from service.catalog import Collection
from service.crs import CRS84, epsg_uri
from service.db import connection
from service.deps import JSON_ONLY, CollectionId, Scope
from service.errors import NotFound
from service.observability import TALLY, TILE_HIT, TILE_MISS
from service.params import check_known
from service.responses import DATA_CACHE, JSON, base_url, etag_matches, json_response, link
from service.sql.tiles import TileLayer, footprint, geojson_sql, mvt_sql
from service.styles import coloured_by, style
from service.tiles import MAX_ZOOM, SRIDS, get_tms, matrix_limits, matrix_sets, min_zoom, tile_ref

MVT = "application/vnd.mapbox-vector-tile"
GEOJSON = "application/geo+json"
TILEJSON = "application/vnd.mapbox.tile+json"
STYLE = "application/vnd.mapbox.style+json"

TmsId = Annotated[str, Path(alias="tileMatrixSetId",
                                 description="WebMercatorQuad, WorldCRS84Quad or UTM32ETRS89Quad")]
TileMatrix = Annotated[int, Path(alias="tileMatrix", description="zoom level")]
TileRow = Annotated[int, Path(alias="tileRow", description="row, counted from the top (north) of the matrix")]
TileCol = Annotated[int, Path(alias="tileCol", description="column, counted from the left (west) of the matrix")]
F = Annotated[Literal["mvt", "json", "geojson"] | None, Query(description="mvt (default) or geojson")]
KIND_NAMES = {"string": "String", "number": "Number", "integer": "Number", "boolean": "Boolean", "date": "String"}


def format_of(f: str | None, accept: str) -> str:
    """mvt or geojson: the `f` parameter wins, then Accept; MVT by default."""
    if f is not None:
        return "mvt" if f == "mvt" else "geojson"
    if MVT in accept or "application/x-protobuf" in accept:
        return "mvt"
    if "geo+json" in accept or "application/json" in accept:
        return "geojson"
    return "mvt"


def tile_format(request: Request) -> str:
    return format_of(request.query_params.get("f"), request.headers.get("accept", ""))


def cache_key(dataset_path: str, owner: str, collections: list[Collection], tile_key: str, fmt: str) -> tuple:
    """What a tile's bytes depend on: whose tile, every source collection's version, which tile, which format."""
    return (dataset_path, owner, tuple(c.version for c in collections), tile_key, fmt)


def tile_headers(etag: str, fmt: str | None) -> dict[str, str]:
    headers = {"ETag": etag, "Cache-Control": DATA_CACHE, "Vary": "Accept"}
    if fmt:
        headers["Content-Type"] = MVT if fmt == "mvt" else GEOJSON
    return headers


def _tile_layers(collections: list[Collection], tms_id: str, z: int) -> list[TileLayer]:
    return [TileLayer(c.id, tuple(c.members), c.regional) for c in collections
            if min_zoom(c.layer_type.name, tms_id) <= z and c.members]


def mvt_pool(state: Any, pool: Any) -> Any:
    """Where a vector tile's query runs: on the primary, the pool that plans each statement once
    (service.db.create_pool, `generic_plans`); on a replica, that replica's pool. GeoJSON tiles stay on
    `pool`: their clip to the tile's outline was slower with a generic plan (z8 zones 3.1 → 4.7 s)."""
    return state.tile_pool if pool is state.pool else pool


async def tile_answer(pool: Any, tile_pool: Any, cache: Any, dataset_path: str, owner: str,
                      collections: list[Collection], tms_id: str, z: int, row: int, col: int, fmt: str,
                      if_none_match: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) for one tile: 304 if the client's copy is current, else from the
    version-keyed cache or PostGIS; 204 when empty. Raises NotFound outside the matrix set. Shared by the
    router and the fast path, so both answer alike. MVT tiles are made on `tile_pool` (see `mvt_pool`)."""
    tile = tile_ref(tms_id, z, row, col)
    key = cache_key(dataset_path, owner, collections, tile.key, fmt)
    hit = cache.get(key)
    etag = hit[1] if hit is not None else etag_for(*key)  # a cached tile keeps its ETag: no hash per hit
    if etag_matches(if_none_match, etag):
        return 304, tile_headers(etag, None), b""
    if hit is not None:
        TALLY.count(TILE_HIT)
        body = hit[0]
    else:
        TALLY.count(TILE_MISS)
        body = await _render(tile_pool if fmt == "mvt" else pool, _tile_layers(collections, tms_id, z), tile, fmt,
                             multi_layer=owner == "*")
        cache.put(key, body, etag)
    if not body:
        return 204, tile_headers(etag, None), b""
    return 200, tile_headers(etag, fmt), body


async def serve_tile(request: Request, scope: Scope, collections: list[Collection], owner: str, tms_id: str,
                     z: int, row: int, col: int) -> Response:
    """One tile through the router (the fast path answers plain tile URLs before routing)."""
    check_known(request.query_params, {"f"})
    status, headers, body = await tile_answer(
        scope.pool, mvt_pool(request.app.state, scope.pool), request.app.state.tile_cache, scope.dataset.path,
        owner, collections, tms_id, z, row, col, tile_format(request), request.headers.get("if-none-match", ""))
    media_type = headers.pop("Content-Type", None)
    return Response(body, status_code=status, headers=headers, media_type=media_type)


async def _render(pool: Any, layers: list[TileLayer], tile, fmt: str, multi_layer: bool) -> bytes:
    fp = footprint(tile)
    if fp is None or not layers:
        return b""
    async with connection(pool) as conn:
        if fmt == "mvt":
            sql, args = mvt_sql(layers, tile, fp)
            return bytes(await conn.fetchval(sql, *args) or b"")
        sql, args = geojson_sql(layers, fp, multi_layer)
        rows = [r[0] for r in await conn.fetch(sql, *args)]
    if not rows:
        return b""
    return b'{"type":"FeatureCollection","features":[' + ",".join(rows).encode() + b"]}"


# One index scan per code (collection_id, properties ->> property: migration 0001), not one per feature.
PRESENT_SQL = """
WITH RECURSIVE codes AS (
  SELECT min(properties ->> '{prop}') AS code FROM feature WHERE collection_id = $1
  UNION ALL
  SELECT (SELECT min(properties ->> '{prop}') FROM feature
          WHERE collection_id = $1 AND properties ->> '{prop}' > codes.code)
  FROM codes WHERE codes.code IS NOT NULL)
SELECT code FROM codes WHERE code IS NOT NULL
"""


async def codes_present(state: Any, pool: Any, c: Collection) -> set[str]:
    """The codes a collection's features use (for its legend), kept by collection and version: a new version is
    a new key, so a legend never names a code the data no longer has, nor misses a new one."""
    prop = coloured_by(c.layer_type)
    if prop is None or not c.members:
        return set()
    known: dict[tuple[str, str], set[str]] | None = getattr(state, "legend_codes", None)
    if known is None:
        known = state.legend_codes = {}
    key = (f"{c.id}@{','.join(str(pk) for pk, _ in c.members)}", c.version)
    if key not in known:
        if len(known) > 1000:
            known.clear()
        found: set[str] = set()
        async with connection(pool) as conn:
            for pk, _ in c.members:  # prop is one of the palettes' own names, never the caller's
                found |= {r["code"] for r in await conn.fetch(PRESENT_SQL.format(prop=prop), pk)}
        known[key] = found
    return known[key]


def _bbox(collections: list[Collection]) -> tuple[float, float, float, float] | None:
    boxes = [c.bbox for c in collections if c.bbox]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _fields(c: Collection) -> dict[str, str]:
    fields = {"id": "String"}
    if c.regional:
        fields["municipality"] = "String"
    fields.update({k: KIND_NAMES.get(v, "String") for k, v in c.layer_type.property_kinds().items()})
    return fields


def tms_uri(base: str, tms_id: str) -> str:
    """A tile set's `tileMatrixSetURI`: the OGC register's URI for a registered matrix set (WebMercatorQuad),
    which clients know without fetching it, else our own definition."""
    return get_tms(tms_id).uri or f"{base}/tileMatrixSets/{tms_id}"


def tms_crs(tms_id: str) -> str:
    """The CRS of a tile matrix set's tiles (WorldCRS84Quad's is CRS84: longitude first)."""
    srid = SRIDS[tms_id]
    return CRS84 if srid == 4326 else epsg_uri(srid)


def tiling_scheme(base: str, tms_id: str) -> dict[str, str]:
    return link(f"{base}/tileMatrixSets/{tms_id}", "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", JSON,
                tms_id)


def tileset_doc(base: str, url: str, title: str, collections: list[Collection], tms_id: str) -> dict[str, Any]:
    """OGC API – Tiles tileset metadata (vector) with the tile URL template, its layers and, for data with an
    extent, the tiles that hold it at each tile matrix."""
    bbox = _bbox(collections)
    template = url + "/{tileMatrix}/{tileRow}/{tileCol}"
    doc: dict[str, Any] = {
        "title": title,
        "dataType": "vector",
        "crs": tms_crs(tms_id),
        "tileMatrixSetURI": tms_uri(base, tms_id),
        "links": [
            link(url, "self", JSON, title),
            tiling_scheme(base, tms_id),
            {**link(template + "?f=mvt", "item", MVT, "Mapbox Vector Tiles"), "templated": True},
            {**link(template + "?f=geojson", "item", GEOJSON, "GeoJSON tiles"), "templated": True},
        ],
        "layers": [{"id": c.id, "title": c.title, "dataType": "vector", "geometryDimension": 2,
                    "minTileMatrix": str(min_zoom(c.layer_type.name, tms_id)),
                    "maxTileMatrix": str(MAX_ZOOM[tms_id]),
                    "propertiesSchema": {"type": "object", "properties": {
                        k: {"type": v.lower()} for k, v in _fields(c).items()}}} for c in collections],
    }
    if tms_id == "WebMercatorQuad":
        doc["links"].append(link(url + "/tilejson.json", "describedby", TILEJSON, "TileJSON 3.0"))
    if bbox:
        doc["boundingBox"] = {"lowerLeft": list(bbox[:2]), "upperRight": list(bbox[2:]), "crs": CRS84}
        limits = matrix_limits(tms_id, bbox, min((min_zoom(c.layer_type.name, tms_id) for c in collections),
                                                 default=0))
        if limits:
            doc["tileMatrixSetLimits"] = limits
    return doc


def tilejson_doc(url: str, title: str, description: str, attribution: str,
                 collections: list[Collection]) -> dict[str, Any]:
    """TileJSON 3.0 for WebMercatorQuad; `vector_layers` ids are the layer names inside the tiles."""
    bbox = _bbox(collections) or (-180.0, -85.0511, 180.0, 85.0511)
    layers = [{"id": c.id, "description": c.title, "fields": _fields(c),
               "minzoom": min_zoom(c.layer_type.name, "WebMercatorQuad"), "maxzoom": MAX_ZOOM["WebMercatorQuad"]}
              for c in collections]
    return {
        "tilejson": "3.0.0",
        "name": title,
        "description": description,
        "attribution": attribution,
        "tiles": [url + "/{z}/{y}/{x}"],
        "minzoom": min((layer["minzoom"] for layer in layers), default=0),
        "maxzoom": MAX_ZOOM["WebMercatorQuad"],
        "bounds": list(bbox),
        "center": [(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2, 10],
        "vector_layers": layers,
    }


def build_tiles_router(kind: str, prefix: str, scope_dep: Callable[..., Awaitable[Scope]]) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=[f"{kind} tiles"])
    ScopeDep = Annotated[Scope, Depends(scope_dep)]

    def root(request: Request, scope: Scope) -> str:
        return base_url(request) + scope.dataset.path

    def target(scope: Scope, collection_id: str | None) -> tuple[list[Collection], str, str, str]:
        """(collections, cache owner, title, url path below the root) of the dataset or one collection."""
        if collection_id is None:
            return list(scope.dataset.collections.values()), "*", scope.dataset.title, ""
        c = scope.collection(collection_id)
        return [c], c.id, c.title, f"/collections/{c.id}"

    @router.get("/tileMatrixSets", operation_id=f"{kind}.getTileMatrixSetsList", summary="Tile matrix sets",
                dependencies=JSON_ONLY)
    async def tile_matrix_sets(request: Request, scope: ScopeDep) -> Response:
        check_known(request.query_params, {"f"})
        base = root(request, scope)
        return json_response({"tileMatrixSets": [
            {"id": tid, "title": tms.title or tid, **({"uri": tms.uri} if tms.uri else {}), "crs": tms_crs(tid),
             "links": [link(f"{base}/tileMatrixSets/{tid}", "self", JSON)]} for tid, tms in matrix_sets().items()]})

    @router.get("/tileMatrixSets/{tileMatrixSetId}", operation_id=f"{kind}.getTileMatrixSet",
                summary="A tile matrix set definition", dependencies=JSON_ONLY)
    async def tile_matrix_set(request: Request, scope: ScopeDep, tms_id: TmsId) -> Response:
        check_known(request.query_params, {"f"})
        return json_response(get_tms(tms_id).model_dump(mode="json", exclude_none=True))

    async def tilesets(request: Request, scope: Scope, collection_id: str | None) -> Response:
        check_known(request.query_params, {"f"})
        collections, _, title, path = target(scope, collection_id)
        base = root(request, scope)
        url = base + path + "/tiles"
        return json_response({"links": [link(url, "self", JSON)], "tilesets": [
            {"title": f"{title} ({tid})", "dataType": "vector", "crs": tms_crs(tid),
             "tileMatrixSetURI": tms_uri(base, tid),
             "links": [link(f"{url}/{tid}", "self", JSON), tiling_scheme(base, tid)]} for tid in matrix_sets()]})

    async def tileset(request: Request, scope: Scope, collection_id: str | None, tms_id: str) -> Response:
        check_known(request.query_params, {"f"})
        get_tms(tms_id)
        collections, _, title, path = target(scope, collection_id)
        url = f"{root(request, scope)}{path}/tiles/{tms_id}"
        return json_response(tileset_doc(root(request, scope), url, title, collections, tms_id))

    async def tilejson(request: Request, scope: Scope, collection_id: str | None, tms_id: str) -> Response:
        check_known(request.query_params, {"f"})
        if tms_id != "WebMercatorQuad":
            get_tms(tms_id)
            raise NotFound("TileJSON describes WebMercatorQuad tiles only", parameter="tileMatrixSetId")
        collections, _, title, path = target(scope, collection_id)
        url = f"{root(request, scope)}{path}/tiles/{tms_id}"
        attribution = "; ".join(sorted({c.attribution for c in collections if c.attribution}))
        doc = tilejson_doc(url, title, scope.dataset.description, attribution, collections)
        return json_response(doc, media_type=JSON)

    async def tile(request: Request, scope: Scope, collection_id: str | None, tms_id: str, z: int, row: int,
                   col: int) -> Response:
        collections, owner, _, _ = target(scope, collection_id)
        return await serve_tile(request, scope, collections, owner, tms_id, z, row, col)

    async def style_doc(request: Request, scope: Scope, collection_id: str | None, style_id: str) -> Response:
        check_known(request.query_params, {"f"})
        if style_id != "default":
            raise NotFound(f"no style {style_id!r}; this API offers 'default'", parameter="styleId")
        collections, _, title, path = target(scope, collection_id)
        tj = f"{root(request, scope)}{path}/tiles/WebMercatorQuad/tilejson.json"
        entries = [(c.id, c.layer_type, c.title, min_zoom(c.layer_type.name, "WebMercatorQuad")) for c in collections]
        present = {c.id: await codes_present(request.app.state, scope.pool, c) for c in collections}
        doc = style(title, tj, entries, _bbox(collections), request.app.state.settings.api.basemap_style_url,
                    present)
        return json_response(doc, media_type=STYLE)

    # The same operations for the whole dataset and for one collection.
    for path, cid in (("", None), ("/collections/{collectionId}", "collection")):
        _register(router, kind, path, cid, ScopeDep, tilesets, tileset, tilejson, tile, style_doc)

    @router.get("/styles", operation_id=f"{kind}.getStyles", summary="Styles", dependencies=JSON_ONLY)
    async def styles(request: Request, scope: ScopeDep) -> Response:
        check_known(request.query_params, {"f"})
        return _style_list(root(request, scope))

    @router.get("/collections/{collectionId}/styles", operation_id=f"{kind}.getCollectionStyles",
                summary="Styles of one collection", dependencies=JSON_ONLY)
    async def collection_styles(request: Request, scope: ScopeDep, collection_id: CollectionId) -> Response:
        check_known(request.query_params, {"f"})
        c = scope.collection(collection_id)
        return _style_list(f"{root(request, scope)}/collections/{c.id}")

    return router


def _style_list(base: str) -> Response:
    """The styles a dataset or a collection offers (OGC API – Styles' list): the one MapLibre style."""
    return json_response({"styles": [{"id": "default", "title": "By land use, availability and protection category",
                                      "links": [link(f"{base}/styles/default", "stylesheet", STYLE)]}],
                          "links": [link(f"{base}/styles", "self", JSON)]})


def _register(router: APIRouter, kind: str, path: str, cid: str | None, ScopeDep: Any, tilesets, tileset, tilejson,
              tile, style_doc) -> None:
    """Declare the tile routes under `path` (the dataset, or one collection when `cid` is set)."""
    op = "Collection" if cid else "Dataset"
    if cid:
        async def _tilesets(request: Request, scope: ScopeDep, collection_id: CollectionId) -> Response:
            return await tilesets(request, scope, collection_id)

        async def _tileset(request: Request, scope: ScopeDep, collection_id: CollectionId, tms_id: TmsId) -> Response:
            return await tileset(request, scope, collection_id, tms_id)

        async def _tilejson(request: Request, scope: ScopeDep, collection_id: CollectionId,
                            tms_id: TmsId) -> Response:
            return await tilejson(request, scope, collection_id, tms_id)

        async def _tile(request: Request, scope: ScopeDep, collection_id: CollectionId, tms_id: TmsId,
                        z: TileMatrix, row: TileRow, col: TileCol, f: F = None) -> Response:
            return await tile(request, scope, collection_id, tms_id, z, row, col)

        async def _style(request: Request, scope: ScopeDep, collection_id: CollectionId,
                         style_id: Annotated[str, Path(alias="styleId")]) -> Response:
            return await style_doc(request, scope, collection_id, style_id)
    else:
        async def _tilesets(request: Request, scope: ScopeDep) -> Response:
            return await tilesets(request, scope, None)

        async def _tileset(request: Request, scope: ScopeDep, tms_id: TmsId) -> Response:
            return await tileset(request, scope, None, tms_id)

        async def _tilejson(request: Request, scope: ScopeDep, tms_id: TmsId) -> Response:
            return await tilejson(request, scope, None, tms_id)

        async def _tile(request: Request, scope: ScopeDep, tms_id: TmsId, z: TileMatrix, row: TileRow,
                        col: TileCol, f: F = None) -> Response:
            return await tile(request, scope, None, tms_id, z, row, col)

        async def _style(request: Request, scope: ScopeDep,
                         style_id: Annotated[str, Path(alias="styleId")]) -> Response:
            return await style_doc(request, scope, None, style_id)

    tile_responses = {200: {"content": {MVT: {}, GEOJSON: {}}},
                      204: {"description": "An empty tile: no feature of the tile's layers lies in it, or the "
                                           "zoom is below each layer's minimum (the tileset's `minTileMatrix`)"}}
    tile_description = (
        "The tile's features, one layer per collection named by its id (as TileJSON's `vector_layers`), clipped "
        "to the tile and simplified for its zoom; every feature, none dropped. Mapbox Vector Tile by default, "
        "GeoJSON with `f=geojson` or `Accept: application/geo+json`. A tile outside the matrix set's limits is "
        "a 404. Anyone may read public tiles from any origin (CORS); the ETag changes with any change to the "
        "tile's collections.")
    router.get(f"{path}/tiles", operation_id=f"{kind}.get{op}Tilesets", summary="Tilesets",
               dependencies=JSON_ONLY)(_tilesets)
    router.get(f"{path}/tiles/{{tileMatrixSetId}}", operation_id=f"{kind}.get{op}Tileset",
               summary="Tileset metadata", dependencies=JSON_ONLY)(_tileset)
    router.get(f"{path}/tiles/{{tileMatrixSetId}}/tilejson.json", operation_id=f"{kind}.get{op}TileJSON",
               summary="TileJSON 3.0 (WebMercatorQuad)", response_class=Response,
               responses={200: {"content": {JSON: {}}}}, dependencies=JSON_ONLY)(_tilejson)
    router.get(f"{path}/tiles/{{tileMatrixSetId}}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}",
               operation_id=f"{kind}.get{op}Tile", summary="A vector tile (MVT or GeoJSON)",
               description=tile_description, response_class=Response, responses=tile_responses)(_tile)
    router.get(f"{path}/styles/{{styleId}}", operation_id=f"{kind}.get{op}Style", summary="MapLibre style",
               response_class=Response, responses={200: {"content": {STYLE: {}}}},
               dependencies=JSON_ONLY)(_style)



