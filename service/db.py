"""The connection pool and the one entry point for connections (`connection`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import orjson

from service.settings import DatabaseSettings

log = logging.getLogger("geotwin.db")


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSON arrives as text from the hot paths; these codecs are for the few places that want Python objects.
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                                  schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool. asyncpg's default sends RESET ALL, UNLISTEN,
    CLOSE ALL and an advisory-unlock on every release: a round trip per request (~0.8 ms of a 2.6 ms tile).
    Nothing session-level is ever set on pooled connections (the actor and other settings are
    transaction-local, no LISTEN, no advisory locks), so only an open transaction would need undoing."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(db: DatabaseSettings, dsn: str | None = None, lazy: bool = False) -> asyncpg.Pool:
    """Open a pool on the database (or on `dsn`, a replica of it); the application lifespan owns it. A
    database that is down at start-up does not stop the service: the pool then opens connections when
    asked, and `/ready` says 503 until it answers. `lazy` pools open connections only when asked."""
    if not lazy:
        try:
            return await _pool(db, dsn or db.dsn(), db.pool_min)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("database not reachable at start-up (%s); serving 503 until it is", exc)
    return await _pool(db, dsn or db.dsn(), 0)


async def _pool(db: DatabaseSettings, dsn: str, min_size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=db.pool_max, init=_init_connection, reset=_reset_connection,
        # Custom plans always: collections differ in size by orders of magnitude, and a generic plan for
        # a prepared statement (asyncpg prepares them) would page a 6-feature collection by walking all.
        server_settings={"application_name": "geotwin", "jit": "off", "plan_cache_mode": "force_custom_plan"},
    )


@asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection. Tenant scope and read/write routing are decided here, nowhere else."""
    async with pool.acquire() as conn:
        yield conn


async def connect(dsn: str) -> asyncpg.Connection:
    """A single connection for command-line work (loading, generating), with the same codecs."""
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn
