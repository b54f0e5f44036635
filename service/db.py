"""The connection pool and the one entry point for connections (`connection`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import orjson

from service.settings import DatabaseSettings


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


async def create_pool(db: DatabaseSettings) -> asyncpg.Pool:
    """Open the pool (the application lifespan owns it)."""
    return await asyncpg.create_pool(
        db.dsn(), min_size=db.pool_min, max_size=db.pool_max, init=_init_connection, reset=_reset_connection,
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
