"""An error as a page, for a browser: a planner who follows a stale link or mistypes a bbox in the address bar
reads what went wrong in the site's own frame, in their language's headings, with the way back to the start.

Only reads (GET, HEAD) that ask for HTML get one: `f=html`, or, without `f`, an Accept header preferring
`text/html` to JSON, as a browser's address bar sends it. Clients (GDAL, QGIS, a web map's fetch, scripts) ask
for JSON or nothing and keep getting the JSON body; the page shows the same fields (description, where, code,
request id) and keeps the status code and headers.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from service.responses import GEOJSON, HTML, JSON, html_response, quality

log = logging.getLogger("geotwin.errors")
WHERE = ("parameter", "property", "index")


def wants_page(request: Request) -> bool:
    if request.method not in ("GET", "HEAD"):
        return False
    f = request.query_params.get("f")
    if f is not None:
        return f == "html"
    accept = request.headers.get("accept", "")
    return quality(accept, (HTML,)) > quality(accept, (JSON, GEOJSON, "application/*"))


def error_answer(request: Request, status: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> Response:
    """The error as a page if the request asks for one, else as the JSON body every client reads."""
    if wants_page(request):
        try:
            deleted = datetime.fromisoformat(body["deletedAt"]) if "deletedAt" in body else None
            page = html_response(request, "error.html", status=status, error=body, maplibre=False,
                                 where=[(k, body[k]) for k in WHERE if k in body], deleted=deleted)
        except Exception:  # the page is a courtesy: never let it hide the error itself
            log.exception("the error page could not be rendered; answering JSON")
        else:
            page.status_code = status
            page.headers.update(headers or {})
            page.headers["Cache-Control"] = "no-store"
            return page
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=JSON)
