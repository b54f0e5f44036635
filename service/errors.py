"""Domain errors and the one table that maps them to HTTP status codes and JSON bodies.

Every error body says what was wrong and where: `{"code", "description", "parameter"|"property"|"index"}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.observability import REQUEST_ID


class GeoTwinError(Exception):
    """Base of the errors the service raises on purpose."""

    code = "ServerError"

    def __init__(self, description: str, **where: Any) -> None:
        super().__init__(description)
        self.description = description
        self.where = {k: v for k, v in where.items() if v is not None}
        self.headers: dict[str, str] = {}

    def answering(self, headers: dict[str, str]) -> GeoTwinError:
        """The same error, answered with these headers too (a 412's current ETag)."""
        self.headers.update(headers)
        return self

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "description": self.description, **self.where}


class InvalidParameter(GeoTwinError):
    code = "InvalidParameterValue"


class UnknownParameter(GeoTwinError):
    code = "UnknownParameter"


class NotFound(GeoTwinError):
    code = "NotFound"


class NotAcceptable(GeoTwinError):
    code = "NotAcceptable"


class InvalidData(GeoTwinError):
    """A feature or property that does not fit its layer type (on import or write)."""

    code = "InvalidData"


class ServiceUnavailable(GeoTwinError):
    code = "ServiceUnavailable"


class InvalidBody(GeoTwinError):
    """A request body that is not what the endpoint reads (not JSON, not a Feature)."""

    code = "InvalidBody"


class Conflict(GeoTwinError):
    code = "Conflict"


class PreconditionFailed(GeoTwinError):
    """If-Match names a version that is no longer current: somebody else changed the feature."""

    code = "PreconditionFailed"


class PreconditionRequired(GeoTwinError):
    code = "PreconditionRequired"


class PayloadTooLarge(GeoTwinError):
    code = "PayloadTooLarge"


class UnsupportedMediaType(GeoTwinError):
    code = "UnsupportedMediaType"

    @classmethod
    def refusing(cls, media: str, types: tuple[str, ...]) -> GeoTwinError:
        """The 415 for a body sent as `media` (a request's Content-Type) where `types` are read; a 400 when the
        request names none (OGC API - Features - Part 4: post-content-type, put-content-type)."""
        if not media:
            return InvalidParameter(f"the request has no Content-Type header: send the body as {' or '.join(types)}, "
                                    "with a Content-Type header saying so", parameter="Content-Type")
        return cls(f"send the body as {' or '.join(types)}, not {media}", parameter="Content-Type")


class HistoryPruned(GeoTwinError):
    """The change log no longer reaches back that far (`geotwin history prune`)."""

    code = "HistoryPruned"


class HistoryRewound(HistoryPruned):
    """A reader's cursor is beyond the change log, or names a change the log no longer holds as it was made
    (`afterAt`): the database was restored from an older backup. Gone (410) like a pruned log, and mended the
    same way: read the feed again from the start."""

    code = "HistoryRewound"


class RequestTimeout(GeoTwinError):
    """The client stopped sending its body."""

    code = "RequestTimeout"


STATUS: dict[type[GeoTwinError], int] = {
    InvalidParameter: 400,
    UnknownParameter: 400,
    NotFound: 404,
    NotAcceptable: 406,
    InvalidData: 422,
    ServiceUnavailable: 503,
    InvalidBody: 400,
    Conflict: 409,
    PreconditionFailed: 412,
    PreconditionRequired: 428,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RequestTimeout: 408,
    HistoryPruned: 410,
}


def status_of(exc: GeoTwinError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every route of the application, also inside FastAPI's wrappers of included routers (the routers are
    included without prefixes, so each route's path is the full path)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods some route of the application answers at `path`."""
    methods: set[str] = set()
    for route in api_routes(app.router.routes):
        if route.path_regex.match(path):
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")  # answered for every GET (service.head)
    return sorted(methods)


def body_media(app: FastAPI, path: str, method: str) -> list[str]:
    """The media types the route for `method` at `path` takes as its body, as its OpenAPI operation names them."""
    for route in api_routes(app.router.routes):
        if method in route.methods and route.path_regex.match(path):
            content = ((route.openapi_extra or {}).get("requestBody") or {}).get("content") or {}
            return list(content)
    return []


def json_kind(value: object) -> str:
    """What a parsed JSON value is, in words: "an array", "a string", …."""
    if isinstance(value, dict):
        return "an object"
    kinds = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}
    return kinds.get(type(value), "a number")


def _download_hint(request: Request, value: object) -> str:
    """Where a file format asked of the items is: their export, with the same filters and without the paging
    (`?f=csv` on the items is what a planner tries first)."""
    from service.export import FORMATS
    from service.responses import base_url

    if not request.url.path.endswith("/items") or value not in FORMATS:
        return ""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items()
                       if k not in ("f", "limit", "offset")] + [("f", value)])
    return f"; files are downloaded from the export, with the same filters: " \
           f"{base_url(request)}{request.url.path.removesuffix('/items')}/export?{query}"


def install(app: FastAPI) -> None:
    """Register the handlers: domain errors, FastAPI's validation errors, HTTP errors, database outages. Each
    answers JSON, or a page where a browser asks for one (service.errorpage)."""
    from service.errorpage import error_answer  # it renders with service.responses, which imports this module

    @app.exception_handler(GeoTwinError)
    async def _domain(request: Request, exc: GeoTwinError) -> Response:
        status = status_of(exc)
        headers = {**exc.headers, **({"Retry-After": "5"} if status == 503 else {})}
        return error_answer(request, status, exc.body(), headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ())]
        message = first.get("msg", "invalid request")
        if loc == ["body"] and first.get("type") in ("model_attributes_type", "dict_type"):  # not an object
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if not (media == "application/json" or media.endswith("+json")):  # FastAPI read no JSON at all
                refused = UnsupportedMediaType.refusing(media, ("application/json",))
                return error_answer(request, status_of(refused), refused.body())
            return error_answer(request, 400, {
                "code": "InvalidParameterValue",
                "description": f"the body is a JSON object, not {json_kind(first.get('input'))}"})
        if loc and loc[0] in ("query", "path", "header"):
            where = {"parameter": loc[-1]}
            if loc == ["query", "f"]:
                message += _download_hint(request, first.get("input"))
        elif loc and loc[0] == "body" and len(loc) > 1:  # a JSON body's member, e.g. `keywords.2`
            where = {"property": ".".join(loc[1:])}
            if first.get("type") == "extra_forbidden":  # a misspelt member would otherwise be dropped unseen
                message = "not a member this body takes (misspelt?)"
            message = f"{where['property']}: {message}"
        else:
            where = {}
        return error_answer(request, 400, {"code": "InvalidParameterValue", "description": message, **where})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405 and request.method == "OPTIONS":
            # What the resource takes from this caller (RFC 9110 §9.3.7): QGIS asks so before it offers to
            # edit an OGC API - Features layer, so only an editor of the municipality is offered editing.
            # Preflights from browsers (with Origin) are the CORS middleware's.
            from service.access import permitted

            allowed = [m for m in allowed_methods(request.app, request.url.path)
                       if permitted(getattr(request.state, "principal", None), m, request.url.path)]
            # 200 with Allow, and the bodies POST and PATCH take: OGC API - Features - Part 4's options-response,
            # options-accept-post and update's accept-patch.
            headers = {"Allow": ", ".join([*allowed, "OPTIONS"])}
            for method, header in (("POST", "Accept-Post"), ("PATCH", "Accept-Patch")):
                if method in allowed and (media := body_media(request.app, request.url.path, method)):
                    headers[header] = ", ".join(media)
            return Response(status_code=200, headers=headers)
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HttpError")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path, not just those of the first route matching it
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        description = str(exc.detail)
        if exc.status_code == 404 and description == "Not Found":  # no route has this path
            from service.responses import base_url

            description = (f"nothing at {request.url.path}: the paths this service answers are listed at "
                           f"{base_url(request)}/api (OpenAPI; ?f=html in a browser)")
        return error_answer(request, exc.status_code, {"code": code, "description": description},
                            headers=headers or None)

    @app.exception_handler(asyncpg.exceptions.DataError)
    async def _data(request: Request, exc: Exception) -> Response:
        # SQLSTATE class 22 (a value out of range, NUL in text, …): the input is at fault, and nothing was
        # written (the statement failed). The parsers should have refused it by name; this is the net below.
        if isinstance(exc, asyncpg.exceptions.InvalidEscapeSequenceError) and "filter" in request.query_params:
            # A LIKE pattern that ends in a backslash, only known once the pattern is computed (a property's
            # value on the right of LIKE): the filter's fault, not the database's.
            return error_answer(request, 400, {
                "code": "InvalidParameterValue", "parameter": "filter",
                "description": "a LIKE pattern ends with the escape character \\; write \\\\ for a backslash itself"})
        return error_answer(request, 400, {"code": "InvalidParameterValue",
                                           "description": f"a value the database cannot take: {str(exc)[:200]}"})

    @app.exception_handler(asyncpg.exceptions.TransactionRollbackError)
    async def _rolled_back(request: Request, exc: Exception) -> Response:
        # SQLSTATE class 40 (a deadlock, a serialization failure): another write collided with this one and
        # the database rolled this one back whole. Writers of a collection take its lock first, so this is
        # the net below; the request can simply be sent again.
        return error_answer(request, 409, {
            "code": "Conflict", "description": "a concurrent write collided with this one; nothing was written, "
                                               "send it again"})

    @app.exception_handler(asyncpg.exceptions.LockNotAvailableError)
    async def _locked(request: Request, exc: Exception) -> Response:
        # lock_timeout (GEOTWIN_DB_LOCK_TIMEOUT_S): another write, typically an import, holds the collection.
        return error_answer(request, 409, {
            "code": "Conflict", "description": "another write holds this collection (an import or an edit); "
                                               "nothing was written, try again shortly"}, headers={"Retry-After": "5"})

    @app.exception_handler(asyncpg.exceptions.QueryCanceledError)
    async def _canceled(request: Request, exc: Exception) -> Response:
        return error_answer(request, 503, {
            "code": "ServiceUnavailable", "description": "the request took longer than the database allows; narrow "
                                                         "it down (bbox, filter, limit) or run it as a job"},
                            headers={"Retry-After": "5"})

    @app.exception_handler(asyncpg.exceptions.CannotConnectNowError)
    @app.exception_handler(asyncpg.exceptions.TooManyConnectionsError)
    @app.exception_handler(asyncpg.exceptions.PostgresConnectionError)
    @app.exception_handler(asyncpg.exceptions.OperatorInterventionError)
    @app.exception_handler(asyncpg.exceptions.ConnectionDoesNotExistError)
    @app.exception_handler(asyncpg.exceptions.InvalidCatalogNameError)  # the configured database is missing
    @app.exception_handler(asyncpg.exceptions.InvalidAuthorizationSpecificationError)  # login refused
    @app.exception_handler(ConnectionError)
    @app.exception_handler(OSError)
    async def _db_down(request: Request, exc: Exception) -> Response:
        # /ready and the log at start-up name the cause for the administrator; callers only learn to retry.
        return error_answer(request, 503, {"code": "ServiceUnavailable",
                                           "description": "the database is not reachable"},
                            headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A bug: logged with its traceback by the server; the caller still gets the request id (JSON or a page).
        return error_answer(request, 500, {"code": "ServerError", "description": "internal error",
                                           "requestId": REQUEST_ID.get()})
