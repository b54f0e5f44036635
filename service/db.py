"""The connection pool and the one entry point for connections (`connection`)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from service.errors import ServiceUnavailable
from service.settings import DatabaseSettings

log = logging.getLogger("geotwin.db")


def _integer(text: str) -> int | float:
    value = int(text)
    return value if -2**63 <= value < 2**64 else float(text)  # beyond what orjson writes: a float (maybe inf)


def stored_json(text: str | bytes) -> Any:
    """JSON the database holds, as Python: orjson, or the standard library for the numbers orjson refuses.
    jsonb keeps any numeric (1e400 from psql, which PostgreSQL writes out as 401 digits); orjson will not read
    beyond a double, while `json` reads it, here as a float, infinity if need be, which orjson writes as null.
    One odd value must not break every read of its feature (pages, exports, history, edits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text, parse_int=_integer)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSON arrives as text from the hot paths; these codecs are for the few places that want Python objects.
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=stored_json,
                                  schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool. asyncpg's default sends RESET ALL, UNLISTEN,
    CLOSE ALL and an advisory-unlock on every release: a round trip per request (~0.8 ms of a 2.6 ms tile).
    Nothing session-level is ever set on pooled connections (the actor and other settings are
    transaction-local, no LISTEN, no advisory locks), so only an open transaction would need undoing."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


# How long a request waits for a free connection before it is answered 503 (set from the settings).
ACQUIRE_TIMEOUT_S = 5.0


JOB_POOL_SIZE = 10  # connections for imports and asynchronous process runs, per worker


def connections_per_worker(db: DatabaseSettings) -> int:
    """The most connections one worker opens: its requests, as many again for vector tiles, the job pool and
    the catalog's LISTEN."""
    return 2 * db.pool_max + JOB_POOL_SIZE + 1


async def connection_room(dsn: str) -> int:
    """How many connections the database admits for roles that are not superusers."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(
            "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int"
            " - coalesce(current_setting('reserved_connections', true)::int, 0)")
    finally:
        await conn.close()


async def create_pool(db: DatabaseSettings, dsn: str | None = None, lazy: bool = False,
                      statement_timeout_s: float | None = None, max_size: int | None = None,
                      generic_plans: bool = False, lock_timeout_s: float | None = None) -> asyncpg.Pool:
    """Open a pool on the database (or on `dsn`, a replica of it); the application lifespan owns it. A
    database that is down at start-up does not stop the service: the pool then opens connections when
    asked, and `/ready` says 503 until it answers. `lazy` pools open connections only when asked.

    `generic_plans`: each statement is planned once per connection and the plan reused, for statements whose
    best plan never depends on the values (vector tiles: the spatial index, whatever the tile). Planning
    a tile query costs about 0.2 ms, a quarter of a z16 tile's time in PostgreSQL."""
    global ACQUIRE_TIMEOUT_S
    ACQUIRE_TIMEOUT_S = db.acquire_timeout_s
    timeout = db.statement_timeout_s if statement_timeout_s is None else statement_timeout_s
    lock_timeout = db.lock_timeout_s if lock_timeout_s is None else lock_timeout_s  # 0: wait as long as it takes
    size = max_size or db.pool_max
    if not lazy:
        try:
            return await _pool(dsn or db.dsn(), min(db.pool_min, size), size, timeout, lock_timeout, generic_plans)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("database not reachable at start-up (%s); serving 503 until it is", exc)
    return await _pool(dsn or db.dsn(), 0, size, timeout, lock_timeout, generic_plans)


async def _pool(dsn: str, min_size: int, max_size: int, statement_timeout_s: float, lock_timeout_s: float,
                generic_plans: bool = False) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_reset_connection,
        # Custom plans unless `generic_plans`: collections differ in size by orders of magnitude, and a generic
        # plan for a prepared statement (asyncpg prepares them) would page a 6-feature collection by walking all.
        # A lock timeout, so a request does not queue behind an import for its whole statement timeout.
        # A statement timeout, so one expensive request cannot hold a connection (and the others) for long.
        # A check for a vanished client every second while a statement runs: a worker that dies mid-statement
        # (an import's batch, an analysis) has its statement stopped and its locks freed within a second, not
        # when the statement would have ended.
        server_settings={"application_name": "geotwin", "jit": "off", "client_connection_check_interval": "1000",
                         "plan_cache_mode": "force_generic_plan" if generic_plans else "force_custom_plan",
                         "statement_timeout": str(int(statement_timeout_s * 1000)),
                         "lock_timeout": str(int(lock_timeout_s * 1000))},
    )


@asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; when none is free within ACQUIRE_TIMEOUT_S, a 503 (bounded waiting, not an
    ever-growing queue)."""
    try:
        ctx = pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        conn = await ctx.__aenter__()
    except TimeoutError:
        raise ServiceUnavailable("all database connections are busy; try again in a moment") from None
    try:
        yield conn
    except BaseException as exc:  # the pool (a replica's, say) may want to see what went wrong
        if not await ctx.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await ctx.__aexit__(None, None, None)


async def connect(dsn: str) -> asyncpg.Connection:
    """A single connection for command-line work (loading, generating), with the same codecs."""
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn
