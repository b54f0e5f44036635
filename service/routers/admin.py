"""Administration: onboarding municipalities (platform administrators), collections (created, described
anew, deleted) and API keys (a municipality's admins). Who may call what is enforced in service.access, below
these routes."""


from typing import Annotated, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from service.cache import etag_for
from service.catalog import Collection
from service.db import connection
from service.deps import JSON_ONLY, NO_QUERY, CollectionId, Scope, municipality_scope
from service.errors import Conflict, InvalidParameter, NotFound, PreconditionFailed, PreconditionRequired
from service.layertypes import registry
from service.onboarding import NewMunicipality, Slug, Text
from service.params import check_known
from service.responses import base_url
from service.sql.keys import create_key, list_keys, revoke_key
from service.sql.write import (
    DESCRIBABLE,
    delete_collection,
    describe_collection,
    lock_collection,
    upsert_collection,
    upsert_municipality,
)

router = APIRouter(tags=["administration"])
ScopeDep = Annotated[Scope, Depends(municipality_scope)]


class NewCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")  # "visiblity": "internal" must not make a public collection
    id: Slug
    title: Text = Field(min_length=1, max_length=300)
    layer_type: str
    description: Text = ""
    licence: Text = ""
    attribution: Text = ""
    keywords: list[Text] = []
    visibility: Literal["public", "internal"] = "public"


class CollectionChange(BaseModel):
    """A JSON merge patch of a collection's description: the members given change, the others stay. `id` and
    `layer_type` may be given only as they are."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    layer_type: str | None = None
    title: Text | None = Field(default=None, min_length=1, max_length=300)
    description: Text | None = None
    licence: Text | None = None
    attribution: Text | None = None
    keywords: list[Text] | None = None
    visibility: Literal["public", "internal"] | None = None


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["viewer", "editor", "admin"]
    label: Text = Field(default="", max_length=200, description="who or what uses it; recorded in the change log")


class NewPlatformKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Text = Field(default="", max_length=200)


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


@router.post("/admin/municipalities", operation_id="platform.onboardMunicipality",
             status_code=201, summary="Onboard a municipality (platform admins)",
             response_class=Response, dependencies=NO_QUERY)
async def onboard(request: Request, body: NewMunicipality) -> Response:
    async with connection(request.app.state.pool) as conn:
        exists = await conn.fetchval("SELECT 1 FROM municipality WHERE slug = $1 OR ags = $2", body.slug, body.ags)
        if exists:
            raise Conflict(f"a municipality with slug {body.slug!r} or AGS {body.ags} exists", property="slug")
        await upsert_municipality(conn, body.slug, body.name, body.ags, body.state, body.crs)
    request.app.state.catalog_cache.invalidate()
    return _json(body.model_dump(), 201, {"Location": f"/municipalities/{body.slug}"})


@router.post("/admin/keys", operation_id="platform.createKey",
             status_code=201, summary="A platform administrator key (shown once)",
             response_class=Response, dependencies=NO_QUERY)
async def platform_key(request: Request, body: NewPlatformKey) -> Response:
    async with connection(request.app.state.pool) as conn:
        return _json(await create_key(conn, None, "platform", body.label), 201)


@router.post("/municipalities/{municipality}/collections", operation_id="municipality.createCollection",
             status_code=201, response_class=Response,
             summary="Create a collection (a municipality's admins)", dependencies=NO_QUERY)
async def create_collection(request: Request, scope: ScopeDep, body: NewCollection) -> Response:
    if body.layer_type not in registry():
        raise InvalidParameter(f"no layer type {body.layer_type!r}; known: {', '.join(sorted(registry()))}",
                               property="layer_type")
    if body.id in scope.dataset.collections:
        raise Conflict(f"collection {body.id!r} exists", property="id")
    m = scope.dataset.municipality
    assert m is not None
    async with connection(scope.pool) as conn:
        await upsert_collection(conn, m.pk, body.id, body.title, body.description, body.layer_type, body.licence,
                                body.attribution, body.keywords, body.visibility)
    request.app.state.catalog_cache.invalidate()
    return _json(body.model_dump(), 201, {"Location": f"{scope.dataset.path}/collections/{body.id}"})


@router.patch("/municipalities/{municipality}/collections/{collectionId}", operation_id="municipality.changeCollection",
              status_code=204, response_class=Response,
              summary="Change a collection's title, description, licence, attribution, keywords or visibility "
                      "(a municipality's admins; If-Match required)",
              description="A JSON merge patch (RFC 7396) of the collection's description; `If-Match` takes its "
                          "ETag as `GET …/collections/{collectionId}` gave it. Answers 204 with the new ETag. The "
                          "layer type cannot change: every feature was checked against it.",
              dependencies=NO_QUERY)
async def change_collection(request: Request, scope: ScopeDep, collection_id: CollectionId,
                            body: CollectionChange) -> Response:
    c = scope.collection(collection_id)
    given = body.model_fields_set
    for fixed, now in (("id", c.id), ("layer_type", c.layer_type.name)):
        if fixed in given and getattr(body, fixed) != now:
            raise InvalidParameter(f"{fixed} cannot be changed (it is {now!r}): create a collection and import into "
                                   "it instead", property=fixed)
    if "title" in given and body.title is None:
        raise InvalidParameter("title cannot be removed", property="title")
    changes = {name: DESCRIBABLE[name] if getattr(body, name) is None else getattr(body, name)
               for name in DESCRIBABLE if name in given}
    async with connection(scope.pool) as conn, conn.transaction():
        await _locked_current(request, scope, conn, c)
        changed = await describe_collection(conn, c.members[0][0], changes)
    request.app.state.catalog_cache.invalidate()
    return Response(status_code=204, headers={"ETag": _collection_etag(request, scope, c, changed["key"])})


@router.delete("/municipalities/{municipality}/collections/{collectionId}",
               operation_id="municipality.deleteCollection", status_code=204, response_class=Response,
               summary="Delete a collection with its features and history (a municipality's admins; If-Match "
                       "required)",
               description="`If-Match` takes the collection's ETag as `GET …/collections/{collectionId}` gave "
                           "it: what is deleted is what was last looked at. Mirrors of it get 404 from then on.",
               dependencies=NO_QUERY)
async def remove_collection(request: Request, scope: ScopeDep, collection_id: CollectionId) -> Response:
    c = scope.collection(collection_id)
    async with connection(scope.pool) as conn, conn.transaction():
        await _locked_current(request, scope, conn, c)
        await delete_collection(conn, c.members[0][0])
    request.app.state.catalog_cache.invalidate()
    return Response(status_code=204)


def _collection_etag(request: Request, scope: Scope, c: Collection, version: str, fmt: str = "json") -> str:
    """The ETag `GET …/collections/{id}` gives (service.routers.ogc.describe_collection) at this version key."""
    return etag_for(base_url(request) + scope.dataset.path, c.id, version, fmt)


async def _locked_current(request: Request, scope: Scope, conn: asyncpg.Connection, c: Collection) -> None:
    """Lock the collection against every other writer (imports and edits take the same row first) and check
    that If-Match names its current version, in JSON or HTML."""
    given = request.headers.get("if-match")
    if given is None:
        raise PreconditionRequired("If-Match is required: send the collection's ETag as you last read it",
                                   parameter="If-Match")
    principal = scope.principal
    version = await lock_collection(conn, principal.subject if principal else "anonymous", c.members[0][0])
    if version is None:
        raise NotFound(f"no collection {c.id!r} in {scope.dataset.title}", parameter="collectionId")
    current = {_collection_etag(request, scope, c, version, fmt) for fmt in ("json", "html")}
    tags = {t.strip() for t in given.split(",")}
    if "*" not in tags and not tags & current:
        now = _collection_etag(request, scope, c, version)
        raise PreconditionFailed(f"collection {c.id!r} was changed since you read it (its ETag is now {now}): read "
                                 "it again", parameter="If-Match").answering({"ETag": now})


@router.post("/municipalities/{municipality}/keys", operation_id="municipality.createKey",
             status_code=201, response_class=Response,
             summary="Create an API key for this municipality; the key is shown only in this answer",
             dependencies=NO_QUERY)
async def new_municipality_key(request: Request, scope: ScopeDep, body: NewKey) -> Response:
    async with connection(scope.pool) as conn:
        created = await create_key(conn, scope.dataset.slug, body.role, body.label)
    return _json(created, 201, {"Cache-Control": "no-store"})


@router.get("/municipalities/{municipality}/keys", operation_id="municipality.getKeys",
            summary="This municipality's API keys (without secrets)",
            response_class=Response, dependencies=JSON_ONLY)
async def municipality_keys(request: Request, scope: ScopeDep) -> Response:
    check_known(request.query_params, {"f"})
    async with connection(scope.pool) as conn:
        return _json({"keys": await list_keys(conn, scope.dataset.slug)}, headers={"Cache-Control": "no-store"})


@router.delete("/municipalities/{municipality}/keys/{keyId}", operation_id="municipality.revokeKey",
               status_code=204, response_class=Response,
               summary="Revoke an API key (effective at once)", dependencies=NO_QUERY)
async def revoke(scope: ScopeDep, key_id: Annotated[int, Path(alias="keyId", ge=1, le=2**31 - 1)]) -> Response:
    async with connection(scope.pool) as conn:
        if not await revoke_key(conn, key_id, scope.dataset.slug):
            raise NotFound(f"no active key {key_id} of {scope.dataset.slug}", parameter="keyId")
    return Response(status_code=204)
