"""Administration: onboarding municipalities (platform administrators), collections and API keys
(a municipality's admins). Who may call what is enforced in service.access, below these routes."""


from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, StringConstraints

from service.db import connection
from service.deps import Scope, municipality_scope
from service.errors import Conflict, NotFound
from service.layertypes import registry
from service.models import SLUG_PATTERN
from service.sql.keys import create_key, list_keys, revoke_key
from service.sql.write import upsert_collection, upsert_municipality

router = APIRouter(tags=["administration"])
ScopeDep = Annotated[Scope, Depends(municipality_scope)]


# Text PostgreSQL can store: anything but NUL (which no text column holds).
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]


class NewMunicipality(BaseModel):
    slug: str = Field(pattern=SLUG_PATTERN, examples=["saalekreis"])
    name: Text = Field(min_length=1, max_length=200)
    ags: str = Field(pattern=r"^[0-9]{5,8}$", description="Amtlicher Gemeindeschlüssel")
    state: Text = Field(min_length=1, max_length=100)
    crs: Literal[25832, 25833] = Field(description="official CRS its data arrives in")


class NewCollection(BaseModel):
    id: str = Field(pattern=SLUG_PATTERN)
    title: Text = Field(min_length=1, max_length=300)
    layer_type: str
    description: Text = ""
    licence: Text = ""
    attribution: Text = ""
    keywords: list[Text] = []
    visibility: Literal["public", "internal"] = "public"


class NewKey(BaseModel):
    role: Literal["viewer", "editor", "admin"]
    label: Text = Field(default="", max_length=200, description="who or what uses it; recorded in the change log")


class NewPlatformKey(BaseModel):
    label: Text = Field(default="", max_length=200)


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


@router.post("/admin/municipalities", status_code=201, summary="Onboard a municipality (platform admins)",
             response_class=Response)
async def onboard(request: Request, body: NewMunicipality) -> Response:
    async with connection(request.app.state.pool) as conn:
        exists = await conn.fetchval("SELECT 1 FROM municipality WHERE slug = $1 OR ags = $2", body.slug, body.ags)
        if exists:
            raise Conflict(f"a municipality with slug {body.slug!r} or AGS {body.ags} exists", property="slug")
        await upsert_municipality(conn, body.slug, body.name, body.ags, body.state, body.crs)
    request.app.state.catalog_cache.invalidate()
    return _json(body.model_dump(), 201, {"Location": f"/municipalities/{body.slug}"})


@router.post("/admin/keys", status_code=201, summary="A platform administrator key (shown once)",
             response_class=Response)
async def platform_key(request: Request, body: NewPlatformKey) -> Response:
    async with connection(request.app.state.pool) as conn:
        return _json(await create_key(conn, None, "platform", body.label), 201)


@router.post("/municipalities/{municipality}/collections", status_code=201, response_class=Response,
             summary="Create a collection (a municipality's admins)")
async def create_collection(request: Request, scope: ScopeDep, body: NewCollection) -> Response:
    if body.layer_type not in registry():
        raise NotFound(f"no layer type {body.layer_type!r}; known: {', '.join(sorted(registry()))}",
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


@router.post("/municipalities/{municipality}/keys", status_code=201, response_class=Response,
             summary="Create an API key for this municipality; the key is shown only in this answer")
async def new_municipality_key(request: Request, scope: ScopeDep, body: NewKey) -> Response:
    async with connection(scope.pool) as conn:
        created = await create_key(conn, scope.dataset.slug, body.role, body.label)
    return _json(created, 201, {"Cache-Control": "no-store"})


@router.get("/municipalities/{municipality}/keys", summary="This municipality's API keys (without secrets)",
            response_class=Response)
async def municipality_keys(scope: ScopeDep) -> Response:
    async with connection(scope.pool) as conn:
        return _json({"keys": await list_keys(conn, scope.dataset.slug)}, headers={"Cache-Control": "no-store"})


@router.delete("/municipalities/{municipality}/keys/{keyId}", status_code=204, response_class=Response,
               summary="Revoke an API key (effective at once)")
async def revoke(scope: ScopeDep, key_id: Annotated[int, Path(alias="keyId", ge=1, le=2**31 - 1)]) -> Response:
    async with connection(scope.pool) as conn:
        if not await revoke_key(conn, key_id, scope.dataset.slug):
            raise NotFound(f"no active key {key_id} of {scope.dataset.slug}", parameter="keyId")
    return Response(status_code=204)
