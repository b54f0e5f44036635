"""The application factories: `create_app` builds the service; `served_app` is what `geotwin serve` runs in each
worker (`uvicorn --factory service.main:served_app`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from cachetools import LRUCache
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from service import __version__, errors, jobs, tilefast
from service.access import Access
from service.auth import TokenVerifier
from service.cache import BytesCache, CatalogCache
from service.crs import CrsList
from service.db import JOB_POOL_SIZE, create_pool
from service.deps import municipality_scope, region_scope
from service.head import HeadAsGet
from service.migrate import head_revision
from service.models import STORAGE_SRID
from service.observability import TALLY, Observed, record_pool, route_of
from service.replicas import Replicas, answer_reads_again
from service.revalidate import Revalidate
from service.routers import admin, edit, history, imports, ogc, ops, platform, processes, tiles
from service.settings import Settings

STATIC = Path(__file__).parent / "static"
NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"
VENDOR = {"maplibre-gl": NODE_MODULES / "maplibre-gl" / "dist", "chart.js": NODE_MODULES / "chart.js" / "dist",
          "swagger-ui": NODE_MODULES / "swagger-ui-dist"}


class AppState(State):
    """`app.state` with plain attributes. Starlette's State looks each one up through `__getattr__` (1.5 µs); a
    warm tile reads seven of them, and every route a few."""

    def __init__(self) -> None:
        object.__setattr__(self, "_state", {})  # what State.__getattr__ reads for a name never set: AttributeError

    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


class GeoTwinApp(FastAPI):
    """FastAPI, with plain GET tile requests answered before the middleware stack (service.tilefast)."""

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The application itself (middleware and routes)."""
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        observed = Observed(scope, send)  # request id, status, duration: for the fast path and the app alike
        route = None
        try:
            route = await tilefast.answer(self, scope, observed.wrapped_send)
            if route is None:
                await answer_reads_again(self, scope, receive, observed.wrapped_send)
                route = route_of(scope)
        finally:
            observed.finish(route)


async def _record_metrics(app: FastAPI) -> None:
    """Every second: the pool gauges of /metrics, and what the requests counted since (observability.Tally)."""
    while True:
        TALLY.flush()
        record_pool("primary", app.state.pool)
        record_pool("jobs", app.state.job_pool)
        record_pool("tiles", app.state.tile_pool)
        for member in app.state.replicas.members:
            record_pool(member.name, member.pool)
        await asyncio.sleep(1)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. Nothing happens at import time; the lifespan opens and closes the pool."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings.db)
        # Vector tiles: as many connections again, opened when tiles are asked for, each statement planned once.
        app.state.tile_pool = await create_pool(settings.db, lazy=True, generic_plans=True)
        # Imports and asynchronous process runs: their own few connections, with the long job timeout; they wait
        # for their turn at a collection without a lock timeout.
        app.state.job_pool = await create_pool(settings.db, lazy=True, max_size=JOB_POOL_SIZE,
                                               statement_timeout_s=settings.db.job_timeout_s, lock_timeout_s=0)
        app.state.job_slots = asyncio.Semaphore(settings.jobs.concurrency)
        await asyncio.to_thread(jobs.sweep_uploads)
        app.state.replicas = Replicas(settings.db.replicas, lambda dsn: create_pool(settings.db, dsn, lazy=True))
        await app.state.replicas.start()
        app.state.catalog_cache = CatalogCache(settings.db.dsn(), track_lsn=bool(settings.db.replicas))
        await app.state.catalog_cache.start()
        gauges = asyncio.create_task(_record_metrics(app))
        try:
            yield
        finally:
            gauges.cancel()
            TALLY.flush()
            for job in list(app.state.jobs):  # recorded as failed; their transactions roll back
                job.cancel()
            await asyncio.gather(*app.state.jobs, return_exceptions=True)
            await app.state.catalog_cache.stop()
            await app.state.replicas.stop()
            await app.state.job_pool.close()
            await app.state.tile_pool.close()
            await app.state.pool.close()

    app = GeoTwinApp(
        title=settings.api.title, version=__version__, lifespan=lifespan,
        description="Open digital-twin backbone for municipal planning: planning zones, commercial-land "
                    "potential and ecological zones per municipality and for the region, as OGC API – Features.",
        openapi_url=None, docs_url=None, redoc_url=None,
        license_info={"name": "EUPL-1.2", "url": "https://interoperable-europe.ec.europa.eu/collection/eupl"},
    )
    app.state = AppState()
    app.state.settings = settings
    app.state.tile_cache = BytesCache(settings.cache.tile_cache_mb * 1024 * 1024)
    app.state.count_cache = LRUCache(maxsize=settings.cache.count_cache_entries)
    app.state.openapi_30 = None
    app.state.jobs = set()
    app.state.head_revision = head_revision()
    app.state.crs = CrsList.from_names([*settings.api.crs, f"EPSG:{STORAGE_SRID}"])
    app.state.maplibre_available = (VENDOR["maplibre-gl"] / "maplibre-gl.js").exists()
    app.state.charts_available = (VENDOR["chart.js"] / "chart.umd.min.js").exists()
    errors.install(app)
    # Innermost: ETags for the JSON answers that name no version of their own (service.revalidate).
    app.add_middleware(Revalidate)
    # Who is asking, and the access rules (service.access), under every route.
    app.add_middleware(Access, verifier=TokenVerifier(settings.auth), limits=settings.limits)
    # Public data: any web map may read it; writes are not offered to other origins (no preflight passes).
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD", "OPTIONS"],
                       allow_headers=["*"], expose_headers=list(tilefast.CORS_EXPOSE))
    app.add_middleware(HeadAsGet)
    app.include_router(ops.router)
    app.include_router(platform.router)
    app.include_router(admin.router)
    app.include_router(processes.router)
    app.include_router(edit.build_edit_router("/municipalities/{municipality}", municipality_scope))
    app.include_router(history.build_history_router("/municipalities/{municipality}", municipality_scope))
    app.include_router(imports.build_imports_router("/municipalities/{municipality}", municipality_scope))
    app.include_router(ogc.build_router("municipality", "/municipalities/{municipality}", municipality_scope))
    app.include_router(ogc.build_router("region", "/region", region_scope))
    app.include_router(tiles.build_tiles_router("municipality", "/municipalities/{municipality}", municipality_scope))
    app.include_router(tiles.build_tiles_router("region", "/region", region_scope))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for name, path in VENDOR.items():
        if path.exists():
            app.mount(f"/vendor/{name}", StaticFiles(directory=path), name=f"vendor-{name}")
    return app


def served_app() -> FastAPI:
    """The service as `geotwin serve` runs it in each worker: Python's warnings (a library's, or GDAL's through
    pyogrio, such as "Non closed ring detected" on an import) become log records, JSON lines like every other,
    instead of two lines of plain text in the log."""
    logging.captureWarnings(True)
    return create_app()
