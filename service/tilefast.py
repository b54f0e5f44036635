"""Plain tile requests answered before routing and before any middleware: a warm tile costs a dictionary
lookup, a cold one its SQL, neither a trip through FastAPI's routing and dependencies (about half a
millisecond of a 2 ms tile) nor through the middleware stack (CORS alone wrapped every send: ~10 % of a
z14 tile's Python time). The CORS headers a public tile needs are added here.

Only plain tile URLs (no query, or just `f`) take this path, and only while the catalog snapshot is current
(the listener is up); everything else, and every tile outside its matrix, goes through the router, which
gives the usual JSON errors. Both paths answer through `routers.tiles.tile_answer`, so they agree.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Scope, Send

from service.replicas import read_pool
from service.routers.tiles import format_of, mvt_pool, tile_answer

TILE_PATH = re.compile(r"^(?:/municipalities/(?P<m>[^/]+)|(?P<region>/region))(?:/collections/(?P<c>[^/]+))?"
                       r"/tiles/(?P<tms>[A-Za-z0-9]+)/(?P<z>\d{1,2})/(?P<row>\d{1,9})/(?P<col>\d{1,9})$")


_TILE = "/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}"
ROUTES = {(municipality, collection): ("/municipalities/{municipality}" if municipality else "/region")
          + ("/collections/{collectionId}" if collection else "") + _TILE
          for municipality in (True, False) for collection in (True, False)}

# Headers a web map on another origin may read (the CORS middleware exposes the same ones).
CORS_EXPOSE = ("ETag", "Content-Crs", "Link")


async def answer(app: Any, scope: Scope, send: Send) -> str | None:
    """Answer a plain GET or HEAD tile request with the route template it matched (for the metrics);
    None (nothing sent) leaves it to the application."""
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
        return None
    match = TILE_PATH.match(scope["path"])
    if match is None or not await _answer(app.state, scope, match, send):
        return None
    return ROUTES[(match["region"] is None, match["c"] is not None)]


async def _answer(state: Any, scope: Scope, match: re.Match, send: Send) -> bool:
    catalog = state.catalog_cache.snapshot
    if catalog is None or not state.catalog_cache.listening:
        return False
    query = parse_qsl(scope["query_string"].decode("latin-1")) if scope["query_string"] else []
    if any(k != "f" for k, _ in query) or len(query) > 1 or (query and query[0][1] not in ("mvt", "json",
                                                                                              "geojson")):
        return False
    dataset = catalog.region if match["region"] else catalog.datasets.get(match["m"])
    if dataset is None:
        return False
    if match["c"]:
        collection = dataset.collections.get(match["c"])
        if collection is None:
            return False
        collections, owner = [collection], collection.id
    else:
        collections, owner = list(dataset.collections.values()), "*"
    headers = dict(scope["headers"])
    if b"authorization" in headers or b"x-api-key" in headers:
        return False  # callers with credentials may see internal layers: the application decides
    fmt = format_of(query[0][1] if query else None, headers.get(b"accept", b"").decode("latin-1"))
    pool = read_pool(state, catalog, True, scope)
    try:
        status, out, body = await tile_answer(
            pool, mvt_pool(state, pool), state.tile_cache, dataset.path, owner, collections, match["tms"],
            int(match["z"]), int(match["row"]), int(match["col"]), fmt,
            headers.get(b"if-none-match", b"").decode("latin-1"))
    except Exception:  # noqa: BLE001 - nothing is sent yet: the application answers, with its JSON errors
        return False
    if body:
        out["Content-Length"] = str(len(body))
    if b"origin" in headers:
        out["Access-Control-Allow-Origin"] = "*"
        out["Access-Control-Expose-Headers"] = ", ".join(CORS_EXPOSE)
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in out.items()]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
    return True
