"""Tile cache hits answered before routing: a warm tile costs a dictionary lookup, not a FastAPI request.

Only plain tile URLs (no query, or just `f`) take this path, and only while the catalog snapshot is current
(the listener is up); everything else, and every miss, goes through the router as usual. The cache key is
the router's own (`routers.tiles.cache_key`), so both paths agree on what is current.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from service.routers.tiles import cache_key, format_of, tile_headers

TILE_PATH = re.compile(r"^(?:/municipalities/(?P<m>[^/]+)|(?P<region>/region))(?:/collections/(?P<c>[^/]+))?"
                       r"/tiles/(?P<tms>[A-Za-z0-9]+)/(?P<z>\d{1,2})/(?P<row>\d{1,9})/(?P<col>\d{1,9})$")


class TileCacheFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = TILE_PATH.match(scope["path"])
            if match is not None and await self._answer(scope, match, send):
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, match: re.Match, send: Send) -> bool:
        state = scope["app"].state
        catalog = state.catalog_cache.snapshot
        if catalog is None or not state.catalog_cache.listening:
            return False
        query = parse_qsl(scope["query_string"].decode("latin-1"))
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
        fmt = format_of(query[0][1] if query else None, headers.get(b"accept", b"").decode("latin-1"))
        tile_key = f"{match['tms']}/{int(match['z'])}/{int(match['row'])}/{int(match['col'])}"
        hit = state.tile_cache.get(cache_key(dataset.path, owner, collections, tile_key, fmt))
        if hit is None:
            return False
        body, etag = hit
        if headers.get(b"if-none-match", b"").decode("latin-1") == etag:
            status, body, out = 304, b"", tile_headers(etag, None)
        elif not body:
            status, out = 204, tile_headers(etag, None)
        else:
            status, out = 200, tile_headers(etag, fmt)
            out["Content-Length"] = str(len(body))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in out.items()]})
        await send({"type": "http.response.body", "body": body})
        return True

