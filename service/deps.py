"""Dependencies that turn path ids into objects or a 404, and the parameters the routers share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, Path, Query, Request
from starlette.convertors import StringConvertor, register_url_convertor

from service.auth import Principal
from service.catalog import Catalog, Collection, Dataset
from service.errors import NotFound
from service.params import check_known
from service.replicas import read_pool


@dataclass
class Scope:
    """One API root, resolved for the caller: the dataset they may see, the pool, and who they are."""

    dataset: Dataset
    pool: asyncpg.Pool
    principal: Principal | None = None

    def collection(self, collection_id: str) -> Collection:
        try:
            return self.dataset.collections[collection_id]
        except KeyError:
            raise NotFound(f"no collection {collection_id!r} in {self.dataset.title}",
                           parameter="collectionId") from None


# Path parameters the routers share (the examples name demo data: Swagger UI and the fuzz tests use them).
CollectionId = Annotated[str, Path(alias="collectionId", description="Collection id, e.g. `commercial-sites`",
                                   examples=["commercial-sites"])]
FeatureId = Annotated[str, Path(alias="featureId", description="Feature id, e.g. `gs-001`", examples=["gs-001"])]

# `f` of a resource that comes as JSON or as an HTML page, and of one that comes as JSON alone: OGC clients
# append `f=json` to whatever they ask; any other value is a 400 naming `f`, never an answer in another format.
HtmlOrJson = Annotated[Literal["json", "geojson", "html"] | None,
                       Query(description="Output format: json (GeoJSON for features) or html")]
JsonOnly = Annotated[Literal["json"] | None, Query(description="json, the only format of this resource")]


def json_only(f: JsonOnly = None) -> None:
    """Declares and checks `f` on a route that answers in JSON alone: `dependencies=JSON_ONLY`."""


JSON_ONLY = [Depends(json_only)]


def no_query(request: Request) -> None:
    """A route that takes no query parameter refuses any, by name: `dependencies=NO_QUERY`."""
    check_known(request.query_params, set())


NO_QUERY = [Depends(no_query)]


class FeatureIdConvertor(StringConvertor):
    """`{featureId:fid}` in a route: an id may hold `/` (plan numbers: `Nr. 12/3`, sent as `Nr.%2012%2F3`, which
    arrives decoded), but does not end in `/versions`, so that path stays the versions' alone (a PUT there is a
    405, not a write to a feature `gs-001/versions`)."""

    regex = "(?:[^/]|/(?!versions$))+"


register_url_convertor("fid", FeatureIdConvertor())


async def current_catalog(request: Request) -> Catalog:
    """The catalog as of now: from memory while the database's change announcements arrive."""
    return await request.app.state.catalog_cache.get(request.app.state.pool)


async def municipality_scope(
    request: Request,
    municipality: Annotated[str, Path(description="Municipality slug, e.g. `halle`", examples=["halle"])],
) -> Scope:
    catalog = await current_catalog(request)
    principal = principal_of(request)
    dataset = visible_dataset(catalog, principal, municipality)
    if dataset is None:
        raise NotFound(f"no municipality {municipality!r}; known: {', '.join(sorted(catalog.datasets))}",
                       parameter="municipality")
    return Scope(dataset, reader(request, catalog), principal)


async def region_scope(request: Request) -> Scope:
    catalog = await current_catalog(request)
    return Scope(catalog.region, reader(request, catalog), principal_of(request))


def reader(request: Request, catalog: Catalog) -> Any:
    """The pool a read-only request uses: a fresh replica's for anonymous GETs when replicas are configured
    (service.replicas), else the primary's. Writes use `request.app.state.pool`."""
    anonymous = request.method in ("GET", "HEAD") and principal_of(request) is None
    return read_pool(request.app.state, catalog, anonymous, request.scope)


def visible_dataset(catalog: Catalog, principal: Principal | None, municipality: str) -> Dataset | None:
    """A municipality's dataset as `principal` may see it: members (and platform administrators) see its
    internal collections too."""
    member = principal is not None and principal.can("viewer", municipality)
    return (catalog.members if member else catalog.datasets).get(municipality)


def principal_of(request: Request) -> Principal | None:
    """Set by service.access.Access for every request (None: anonymous)."""
    return getattr(request.state, "principal", None)
