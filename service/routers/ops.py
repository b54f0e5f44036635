"""For load balancers, orchestrators and monitoring: liveness, readiness, Prometheus metrics.

- `/health`: the process answers (200 always; a load balancer's liveness probe).
- `/ready`: the database answers within 2 s and its schema is at this code's migration head; otherwise 503
  with `Retry-After` and the reason. No restart is needed after an outage: it turns 200 by itself.
- `/metrics`: Prometheus text format.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.db import connection
from service.observability import metrics_body

router = APIRouter(tags=["operations"])
JSON = "application/json"
READY_TIMEOUT_S = 2.0
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/health", summary="Liveness: the process answers")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON, headers=NO_STORE)


@router.get("/ready", summary="Readiness: the database answers and is at the migration head",
            responses={503: {"description": "not ready (the body says why)"}})
async def ready(request: Request) -> Response:
    expected = request.app.state.head_revision
    try:
        revision = await asyncio.wait_for(_revision(request.app.state.pool), READY_TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _not_ready(f"the database is not reachable ({exc.__class__.__name__})")
    if revision != expected:
        return _not_ready(f"the database schema is at {revision or 'nothing'}, this service needs {expected}: "
                          "run `geotwin migrate`")
    body: dict[str, Any] = {"status": "ready", "database": "ok", "migration": revision}
    replicas = getattr(request.app.state, "replicas", None)
    if replicas is not None and replicas.members:
        body["replicas"] = replicas.describe()
    return Response(orjson.dumps(body), media_type=JSON, headers=NO_STORE)


async def _revision(pool: Any) -> str:
    async with connection(pool) as conn:
        return await conn.fetchval("SELECT max(version_num) FROM alembic_version") or ""


def _not_ready(reason: str) -> Response:
    return Response(orjson.dumps({"status": "unavailable", "description": reason}), status_code=503,
                    media_type=JSON, headers={**NO_STORE, "Retry-After": "5"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    body, media_type = metrics_body()
    return Response(body, media_type=media_type, headers=NO_STORE)
