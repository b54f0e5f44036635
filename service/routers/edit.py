"""Editing (OGC API – Features Part 4): create, replace, update and delete features of a municipality.

Who may write is decided below the routers (service.access: editors of the municipality). Here: every body
is checked against the collection's layer type before anything is written; each request is one transaction,
recorded in the change log under the caller's name; replace, update and delete need `If-Match` with the
feature's current ETag, so two planners cannot overwrite each other unknowingly (412 for the second).
"""


import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from service.bodies import json_body
from service.catalog import Collection
from service.crs import Crs
from service.db import connection, stored_json
from service.deps import CollectionId, FeatureId, Scope
from service.errors import (
    Conflict,
    InvalidBody,
    InvalidParameter,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    json_kind,
)
from service.loader import file_crs, prepare, raise_for
from service.params import check_known, parse_bool
from service.responses import GEOJSON, base_url, feature_etag, if_match_change, representation, segment
from service.sql.features import Output, item_sql
from service.sql.write import (
    act_as,
    current_change,
    delete_feature,
    existing_ids,
    insert_features,
    replace_feature,
)

Repair = Annotated[str | None, Query(description=(
    "true: make an invalid geometry valid instead of refusing it (a polygon's parts that cross are kept as a "
    "MultiPolygon; a ring that does not close is closed)"))]
JSON_TYPES = ("application/geo+json", "application/json")
WRITE_PARAMETERS = {"repair"}  # `repiar=true` must not go unseen
BODY = {"requestBody": {"required": True, "content": {"application/geo+json": {"schema": {"type": "object"}}}}}


def build_edit_router(prefix: str, scope_dep: Callable[..., Awaitable[Scope]]) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["editing"])
    ScopeDep = Annotated[Scope, Depends(scope_dep)]

    @router.post("/collections/{collectionId}/items", operation_id="municipality.createFeatures", status_code=201,
                 summary="Add a feature (or a FeatureCollection, all or nothing)", openapi_extra=BODY,
                 response_class=Response)
    async def create(request: Request, scope: ScopeDep, collection_id: CollectionId,
                     repair: Repair = None) -> Response:
        c = scope.collection(collection_id)
        check_known(request.query_params, WRITE_PARAMETERS)
        doc = await json_body(request, JSON_TYPES)
        batch = isinstance(doc, dict) and doc.get("type") == "FeatureCollection"
        features = doc.get("features") if batch else [doc]
        if not isinstance(features, list) or not features:
            raise InvalidBody("a FeatureCollection needs a non-empty `features` list")
        crs = _content_crs(request)
        rows, issues = prepare(features, c.layer_type, crs, parse_bool(repair, "repair"),
                               new_id=lambda _: uuid.uuid4().hex[:12])
        raise_for(issues, "request body")
        pk = c.members[0][0]
        async with connection(scope.pool) as conn, conn.transaction():
            await act_as(conn, _subject(scope), pk)
            taken = set(await existing_ids(conn, pk, [r[0] for r in rows]))
            if taken:
                at = [i for i, r in enumerate(rows) if r[0] in taken]  # in the body's order
                more = f" and {len(at) - 20:,} more" if len(at) > 20 else ""
                raise Conflict(f"{len(at):,} feature id(s) already in {c.id}: "
                               f"{', '.join(rows[i][0] for i in at[:20])}{more}", property="id",
                               index=at[0] if batch else None)
            created = await insert_features(conn, pk, rows, crs.srid)
        request.app.state.catalog_cache.invalidate()
        url = _items_url(request, scope, c)
        if batch:
            return Response(orjson.dumps({"numberCreated": len(created), "ids": [f for f, _ in created]}),
                            status_code=201, media_type="application/json", headers={"Location": url})
        fid = created[0][0]
        return await _feature_response(request, scope, c, fid, 201, {"Location": f"{url}/{segment(fid)}"})

    @router.put("/collections/{collectionId}/items/{featureId:fid}", operation_id="municipality.replaceFeature",
                summary="Replace a feature (If-Match required)", openapi_extra=BODY, response_class=Response)
    async def replace(request: Request, scope: ScopeDep, collection_id: CollectionId, feature_id: FeatureId,
                      repair: Repair = None) -> Response:
        c = scope.collection(collection_id)
        check_known(request.query_params, WRITE_PARAMETERS)
        expected = await _if_match(request, scope, c, feature_id)
        doc = await json_body(request, JSON_TYPES)
        if isinstance(doc, dict) and doc.get("id") not in (None, feature_id):
            raise InvalidBody(f"the body's id {doc.get('id')!r} is not the feature's id {feature_id!r}",
                              property="id")
        if isinstance(doc, dict):
            doc = {**doc, "id": feature_id}
        crs = _content_crs(request)
        rows, issues = prepare([doc], c.layer_type, crs, parse_bool(repair, "repair"))
        raise_for(issues, "request body")
        return await _update(request, scope, c, feature_id, expected, rows[0], crs.srid, None)

    @router.patch("/collections/{collectionId}/items/{featureId:fid}", operation_id="municipality.updateFeature",
                  summary="Change part of a feature: a JSON merge patch (If-Match required)",
                  openapi_extra={"requestBody": {"required": True, "content": {
                      "application/merge-patch+json": {"schema": {"type": "object"}}}}},
                  response_class=Response)
    async def update(request: Request, scope: ScopeDep, collection_id: CollectionId, feature_id: FeatureId,
                     repair: Repair = None) -> Response:
        c = scope.collection(collection_id)
        check_known(request.query_params, WRITE_PARAMETERS)
        expected = await _if_match(request, scope, c, feature_id)
        patch = await json_body(request, ("application/merge-patch+json", *JSON_TYPES))
        _check_patch(patch)
        if patch.get("id") not in (None, feature_id):
            raise InvalidBody("the feature id cannot be changed", property="id")
        current = await _current(scope, c, feature_id)
        props = _merge(current["properties"], patch.get("properties", {}))
        crs = _content_crs(request)
        geometry = patch.get("geometry")
        if geometry is None and "geometry" in patch:
            raise InvalidBody("geometry cannot be removed", property="geometry")
        feature = {"type": "Feature", "id": feature_id, "properties": props,
                   "geometry": geometry if geometry is not None else current["geometry"]}
        rows, issues = prepare([feature], c.layer_type, crs if geometry is not None else file_crs(4326),
                               parse_bool(repair, "repair"))
        raise_for(issues, "request body")
        if geometry is None:  # keep the stored geometry exactly: do not round-trip it through CRS84
            _, _, text, start, end = rows[0]
            return await _update(request, scope, c, feature_id, expected, None, 0, (text, start, end))
        return await _update(request, scope, c, feature_id, expected, rows[0], crs.srid, None)

    @router.delete("/collections/{collectionId}/items/{featureId:fid}", operation_id="municipality.deleteFeature",
                   status_code=204, summary="Delete a feature (If-Match required)", response_class=Response)
    async def delete(request: Request, scope: ScopeDep, collection_id: CollectionId,
                     feature_id: FeatureId) -> Response:
        c = scope.collection(collection_id)
        check_known(request.query_params, set())
        expected = await _if_match(request, scope, c, feature_id)
        pk = c.members[0][0]
        async with connection(scope.pool) as conn, conn.transaction():
            await act_as(conn, _subject(scope), pk)
            if not await delete_feature(conn, pk, feature_id, *_version(expected)):
                await _explain_miss(conn, pk, c, feature_id)
        request.app.state.catalog_cache.invalidate()
        return Response(status_code=204)

    return router


# ---------------------------------------------------------------- helpers

PATCH_MEMBERS = ("type", "id", "geometry", "properties")


def _check_patch(patch: Any) -> None:
    """A patch is (part of) a Feature. A bare geometry (`{"type": "Polygon", ...}`) or a member that is not a
    Feature's would otherwise change nothing, or not what was meant, and answer 200 all the same."""
    shape = "a patch is an object with `properties` (a merge patch) and/or `geometry`"
    if not isinstance(patch, dict):
        raise InvalidBody(f"{shape}, not {json_kind(patch)}")
    if unknown := [key for key in patch if key not in PATCH_MEMBERS]:
        raise InvalidBody(f"{shape}; a Feature has no member {', '.join(f'`{k}`' for k in unknown)}",
                          property=unknown[0])
    if patch.get("type", "Feature") != "Feature":
        raise InvalidBody(f"{shape}: its `type` is 'Feature', not {patch['type']!r} (a geometry goes into "
                          "`geometry`)", property="type")


def _subject(scope: Scope) -> str:
    return scope.principal.subject if scope.principal else "anonymous"


def _items_url(request: Request, scope: Scope, c: Collection) -> str:
    return f"{base_url(request)}{scope.dataset.path}/collections/{c.id}/items"


async def _if_match(request: Request, scope: Scope, c: Collection, fid: str) -> tuple[int, int | None]:
    """The version the client last read: its change id (-1: any) and when it was made; without If-Match, 428, or
    any when the deployment takes writes without it (GEOTWIN_API__IF_MATCH=optional, for QGIS's editing). A
    feature that does not exist is a 404 all the same: there is no ETag to send (RFC 9110, section 13.2.1)."""
    expected = if_match_change(request.headers.get("if-match"))
    if expected is None and request.app.state.settings.api.if_match == "optional":
        return -1, None
    if expected is None:
        async with connection(scope.pool) as conn:
            if await current_change(conn, c.members[0][0], fid) is None:
                raise _missing(c, fid)
        raise PreconditionRequired("If-Match is required: send the ETag of the feature as you last read it, "
                                   "so nobody's change is overwritten unseen", parameter="If-Match")
    return expected


def _missing(c: Collection, fid: str) -> NotFound:
    return NotFound(f"no feature {fid!r} in collection {c.id!r}", parameter="featureId")


def _version(expected: tuple[int, int | None]) -> tuple[int | None, int | None]:
    """What a write's statement compares: the change id and its time, None for any."""
    return (None, None) if expected[0] == -1 else expected


def _content_crs(request: Request) -> Crs:
    raw = request.headers.get("content-crs")
    offered = request.app.state.crs
    if raw is None:
        return offered.items[0]  # CRS84
    crs = offered.find(raw.strip().strip("<>"))
    if crs is None:
        raise InvalidParameter(f"Content-Crs {raw!r} is not a CRS offered here: {', '.join(offered.uris)}",
                               parameter="Content-Crs")
    return crs


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


async def _current(scope: Scope, c: Collection, fid: str) -> dict[str, Any]:
    sql, args = item_sql(c.members, False, c.layer_type.multi_polygon, fid)
    async with connection(scope.pool) as conn:
        row = await conn.fetchrow(sql, *args)
    if row is None:
        raise _missing(c, fid)
    return stored_json(row[0])


async def _update(request: Request, scope: Scope, c: Collection, fid: str, expected: tuple[int, int | None],
                  row: Any, srid: int, properties_only: tuple | None) -> Response:
    pk = c.members[0][0]
    async with connection(scope.pool) as conn, conn.transaction():
        await act_as(conn, _subject(scope), pk)
        change = await replace_feature(conn, pk, row, fid, srid, *_version(expected), properties_only)
        if change is None:
            await _explain_miss(conn, pk, c, fid)
    request.app.state.catalog_cache.invalidate()
    return await _feature_response(request, scope, c, fid, 200)


async def _explain_miss(conn: Any, pk: int, c: Collection, fid: str) -> None:
    current = await current_change(conn, pk, fid)
    if current is None:
        raise _missing(c, fid)
    now = feature_etag(*current)
    raise PreconditionFailed(f"feature {fid!r} was changed since you read it (its ETag is now {now}); read it "
                             "again and reapply your change", parameter="If-Match").answering({"ETag": now})


async def _feature_response(request: Request, scope: Scope, c: Collection, fid: str, status: int,
                            headers: dict[str, str] | None = None) -> Response:
    """The feature as written, in the CRS the request's Content-Crs named (CRS84 without it), with the ETag of
    the version in the body (read after the commit: a write that came in between is in both). That ETag is
    the one `GET …/items/{featureId}?crs=` gives in the same CRS, so it also serves as If-None-Match there."""
    named = "content-crs" in request.headers
    crs = _content_crs(request)
    sql, args = item_sql(c.members, False, c.layer_type.multi_polygon, fid, Output(crs=crs if named else None))
    async with connection(scope.pool) as conn:
        row = await conn.fetchrow(sql, *args)
    tag = {"ETag": feature_etag(row[1], row[2], representation("json", [("crs", crs.uri)] if named else []))} \
        if row else {}
    return Response(row[0] if row else b"", status_code=status, media_type=GEOJSON,
                    headers={**(headers or {}), **tag, "Content-Crs": crs.header, "Cache-Control": "no-store"})
