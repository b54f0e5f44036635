"""History and the change feed of a municipality's collections.

`…/items/{featureId}/versions` lists every version of a feature; `…/changes` lists a collection's changes in
order (`after` a change id or `since` a time, paged), which is what a neighbour needs to mirror a collection
incrementally (see `geotwin mirror`). Geometries come as stored (a Polygon stays a Polygon), so a mirror
is an exact copy. Items can be read as they were with `asOf` on `…/items`. Who made a change
is shown to the municipality's own members only.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from service.catalog import Collection
from service.db import connection, stored_json
from service.deps import JSON_ONLY, CollectionId, FeatureId, HtmlOrJson, Scope
from service.errors import HistoryPruned, HistoryRewound, InvalidParameter, NotFound
from service.params import MAX_NUMBER, check_known, instant, parse_crs, parse_int, parse_limit
from service.responses import HTML, base_url, html_response, link, negotiate, segment
from service.sql.history import LATEST, MADE_AT, OPS, changes_sql, versions_sql

FEED = "application/json"


def parse_instant(raw: str | None, name: str, zone: ZoneInfo) -> datetime | None:
    """An RFC 3339 date-time (`2026-05-01T12:00:00Z`), or a plain date (`2026-05-01`) standing for its first
    moment; either in the service's time zone when it names none, as `geotwin history prune --before` reads it."""
    if raw is None:
        return None
    moment = instant(raw, zone)
    if moment is None:
        raise InvalidParameter(f"{name} must be an RFC 3339 date-time like 2026-05-01T12:00:00Z or a date like "
                               f"2026-05-01 (its start, in {zone.key} when no zone is given); got {raw!r}",
                               parameter=name)
    return moment


def build_history_router(prefix: str, scope_dep: Callable[..., Awaitable[Scope]]) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["history"])
    ScopeDep = Annotated[Scope, Depends(scope_dep)]

    @router.get("/collections/{collectionId}/items/{featureId:fid}/versions", operation_id="municipality.getVersions",
                summary="Every version of a feature, oldest first (`f=html`: a page of what changed, newest first)",
                response_class=Response, responses={200: {"content": {FEED: {}, HTML: {}}}})
    async def versions(request: Request, scope: ScopeDep, collection_id: CollectionId, feature_id: FeatureId,
                       f: HtmlOrJson = None,
                       crs: Annotated[str | None, Query(description="CRS of the geometries")] = None) -> Response:
        check_known(request.query_params, {"f", "crs"})
        c = scope.collection(collection_id)
        fmt = negotiate(request)
        out_crs = parse_crs(crs, request.app.state.crs, "crs")
        sql, args = versions_sql(c.members[0][0], feature_id, False, out_crs)
        async with connection(scope.pool) as conn:
            rows = await conn.fetch(sql, *args)
        if not rows:
            raise NotFound(f"feature {feature_id!r} never existed in {c.id!r}", parameter="featureId")
        member = _member(scope)
        root = f"{base_url(request)}{scope.dataset.path}"
        now = f"{root}/collections/{c.id}/items/{segment(feature_id)}"
        entries = [_entry(r, member) for r in rows]
        if fmt == "html":
            last = next((e["feature"]["properties"] for e in reversed(entries) if e["feature"]), {})  # not a delete's
            title = last.get("name") or last.get("zone_name") or feature_id
            return html_response(request, "versions.html", fid=feature_id, title=title, member=member,
                                 versions=what_changed(entries), collection=c, dataset=scope.dataset, root=root,
                                 items=f"{root}/collections/{c.id}/items", now=now)
        body = {"id": feature_id, "historyFrom": c.history_from.isoformat() if c.history_from else None,
                "versions": entries,
                "links": [link(now, "about", "application/geo+json", "the feature now"),
                          link(f"{now}/versions?f=html", "alternate", HTML, "what changed, as a page")]}
        return Response(orjson.dumps(body), media_type=FEED, headers={"Cache-Control": "no-cache"})

    @router.get("/collections/{collectionId}/changes", operation_id="municipality.getChanges",
                summary="The collection's changes in order: the feed to mirror it incrementally",
                description=(
                    "Every insert, update and delete since `after` (or `since`), oldest first: `changeId`, "
                    "`op`, `at`, the feature's `id` and, but for a delete, the feature as the change left "
                    "it. To mirror a collection, apply the changes in order and keep the last `changeId` "
                    "with its `at`; ask again with them as `after` and `afterAt`, or follow the `next` link "
                    "while there is one. `geotwin mirror` does this. A 410 means the feed cannot go on from "
                    "there (history pruned, or the source restored from an older backup): start again from "
                    "`after=0`, which gives the collection as it is and what follows."),
                response_class=Response, dependencies=JSON_ONLY)
    async def changes(
        request: Request, scope: ScopeDep, collection_id: CollectionId,
        after: Annotated[int | None, Query(ge=0, le=MAX_NUMBER,
                                           description="only changes with a higher changeId (the last one you "
                                                       "applied); follow the `next` link")] = None,
        after_at: Annotated[str | None, Query(alias="afterAt", description=(
            "the `at` of the change `after` names, as this feed gave it. The feed then checks that this change is "
            "still the one you applied: a source restored from an older backup hands out its ids again, and "
            "answers 410 (`HistoryRewound`) instead of changes you would take for new. The `next` links carry "
            "it"))] = None,
        since: Annotated[str | None, Query(description="only changes at or after this RFC 3339 time, "
                                                       "or this date's start (in the service's time zone when "
                                                       "none is given)")] = None,
        limit: Annotated[int | None, Query(ge=1, le=MAX_NUMBER, description="changes per page (default 1000; "
                                                                           "at most 10000)")] = None,
        crs: Annotated[str | None, Query(description="CRS of the geometries (default CRS84)")] = None,
    ) -> Response:
        check_known(request.query_params, {"f", "after", "afterAt", "since", "limit", "crs"})
        c = scope.collection(collection_id)
        params = request.query_params
        start = parse_int(params.get("after"), "after", 0, 0)
        made = _made_at(after_at, start)
        moment = parse_instant(params.get("since"), "since", request.app.state.settings.api.zone)
        size = parse_limit(params.get("limit"), 1000, 10_000)
        out_crs = parse_crs(params.get("crs"), request.app.state.crs, "crs")
        if 0 < start < c.history_pruned_through:
            raise HistoryPruned(f"changes up to {c.history_pruned_through} of {c.id!r} were pruned, some after "
                                f"{start}: start again from after=0 (the collection as it is, then what follows)",
                                parameter="after", prunedThrough=c.history_pruned_through)
        if moment and c.history_from and moment < c.history_from:
            raise HistoryPruned(f"the history of {c.id!r} reaches back to {c.history_from.isoformat()}; since is "
                                "earlier", parameter="since", historyFrom=c.history_from.isoformat())
        sql, args = changes_sql(c.members[0][0], start, moment, size, False, out_crs)
        async with connection(scope.pool) as conn:
            rows = await conn.fetch(sql, *args)
            latest = await conn.fetchval(LATEST, c.members[0][0])
            if made is not None:
                await _still_there(conn, c, start, made, latest or 0)
        if not rows and start > max(latest or 0, c.history_pruned_through):
            # Only a restore from an older backup takes the log back behind a cursor it handed out; the ids
            # that follow repeat ones the reader has passed, so "nothing new" would hide them for ever.
            raise HistoryRewound(f"after={start} is beyond the change log of {c.id!r}, which ends at "
                                 f"{latest or 0}: the source was restored from an older backup (or the number is "
                                 "not from this feed). Start again from after=0", parameter="after",
                                 latestChangeId=latest or 0)
        more, rows = len(rows) > size, rows[:size]
        member = _member(scope)
        url = f"{base_url(request)}{scope.dataset.path}/collections/{c.id}/changes"
        keep = {k: v for k, v in params.items() if k not in ("after", "afterAt")}
        links = [link(f"{url}?{urlencode(dict(params))}", "self", FEED, "this page")]
        if more:
            last = {"after": rows[-1]["change_id"], "afterAt": rows[-1]["at"].isoformat()}
            links.append(link(f"{url}?{urlencode({**keep, **last})}", "next", FEED,
                              "the following changes"))
        body = {"collection": c.id, "latestChangeId": latest or 0, "numberReturned": len(rows),
                "changes": [_entry(r, member) for r in rows], "links": links}
        return Response(orjson.dumps(body), media_type=FEED, headers={"Cache-Control": "no-cache"})

    return router


def _made_at(raw: str | None, after: int) -> datetime | None:
    """`afterAt`: when the change `after` names was made, as the feed wrote it (with its zone)."""
    if raw is None:
        return None
    if not after:
        raise InvalidParameter("afterAt is the time of the change `after` names; give after too", parameter="afterAt")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidParameter(f"afterAt must be a change's `at` as the feed gave it, like "
                               f"2026-11-24T04:08:12.123456+00:00 (in a URL, + is %2B); got {raw!r}",
                               parameter="afterAt")
    return moment


async def _still_there(conn: Any, c: Collection, after: int, made: datetime, latest: int) -> None:
    """The change a reader last applied is still in the log as it was made. After a restore from an older backup
    the ids the backup lacks are handed out again, to other changes made later: a reader that has passed them
    would take what follows its id for all there is, and miss the rest. (A change pruned as the last of the cut,
    `history_pruned_through`, is gone for good reason.)"""
    there = await conn.fetchval(MADE_AT, c.members[0][0], after)
    if there == made or (there is None and after <= c.history_pruned_through):
        return
    what = f"was made at {there.isoformat()}" if there else "is not in its change log"
    raise HistoryRewound(f"change {after} of {c.id!r} {what}, not at {made.isoformat()}: the source was restored "
                         "from an older backup and hands out its ids again. Start again from after=0",
                         parameter="afterAt", latestChangeId=latest)


def _member(scope: Scope) -> bool:
    m = scope.dataset.municipality
    return scope.principal is not None and m is not None and scope.principal.can("viewer", m.slug)


def what_changed(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A feature's versions for a page, newest first, each with what it changed against the one before: the
    properties as (name, before, after), and whether the geometry moved. A feature created again after its
    deletion (`again`) is compared with what it was when deleted."""
    shown, before, previous = [], None, None
    for entry in entries:
        after = entry["feature"]
        changes, moved = [], False
        again = entry["op"] == "insert" and previous == "delete"
        if (entry["op"] == "update" or again) and before and after:
            was, now = before.get("properties") or {}, after.get("properties") or {}
            changes = [(k, was.get(k), now.get(k)) for k in [*now, *(k for k in was if k not in now)]
                       if was.get(k) != now.get(k)]
            moved = before.get("geometry") != after.get("geometry")
        shown.append({**entry, "at": datetime.fromisoformat(entry["at"]), "changes": changes, "moved": moved,
                      "again": again})
        before, previous = after or before, entry["op"]
    return shown[::-1]


def _entry(row: Any, member: bool) -> dict[str, Any]:
    entry = {"changeId": row["change_id"], "op": OPS[row["op"]], "at": row["at"].isoformat()}
    if "fid" in row.keys():
        entry["id"] = row["fid"]
    if member:
        entry["actor"] = row["actor"]
    entry["feature"] = stored_json(row["feature"]) if row["feature"] else None
    return entry
