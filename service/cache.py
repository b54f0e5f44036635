"""Caches that are never stale: the catalog snapshot (dropped on the database's announcement), and bytes
keyed by collection versions (tiles), so a change makes old entries unreachable rather than expired.

The database announces every catalog change on `geotwin_catalog` at commit (migration 0003), and every
feature write bumps its collection's version in the same transaction. While the listening connection is
down, the catalog is read from the database on every request instead: slower, never stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Hashable
from typing import Any

import asyncpg
from cachetools import LRUCache

from service.catalog import Catalog, load_catalog
from service.db import connection
from service.observability import TILE_CACHE_BYTES

log = logging.getLogger("geotwin.cache")
CHANNEL = "geotwin_catalog"


def etag_for(*parts: Any) -> str:
    """A strong ETag from the parts that determine a response (versions, query, format)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()
    return f'"{digest}"'


class CatalogCache:
    """The published catalog, held in memory between announcements of change."""

    def __init__(self, dsn: str, track_lsn: bool = False) -> None:
        self.dsn = dsn
        self.track_lsn = track_lsn  # with read replicas: note the primary's WAL position with each snapshot
        self.snapshot: Catalog | None = None
        self.generation = 0  # counts announcements; tests wait on it
        self.listening = False
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task | None = None
        self._disconnected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_listening())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    def invalidate(self, *_: Any) -> None:
        """Drop the snapshot (on an announcement, or right after this process wrote)."""
        self.snapshot = None
        self.generation += 1

    def _lost(self, *_: Any) -> None:
        self.listening = False
        self.invalidate()
        self._disconnected.set()

    async def _keep_listening(self) -> None:
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.dsn, server_settings={"application_name": "geotwin-listen"})
                    self._conn.add_termination_listener(self._lost)
                    await self._conn.add_listener(CHANNEL, self.invalidate)
                    self._disconnected.clear()
                    self.invalidate()  # anything may have changed while nobody listened
                    self.listening = True
                await self._disconnected.wait()
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever broke (the server restarting mid-LISTEN leaves
                # asyncpg in InternalClientError), the listener must outlive it: drop the connection, retry
                self._lost()
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                log.warning("catalog listener: %s; reading the catalog per request until it is back", exc)
                await asyncio.sleep(1)

    async def get(self, pool: asyncpg.Pool) -> Catalog:
        snapshot = self.snapshot
        if snapshot is not None and self.listening:
            return snapshot
        generation = self.generation
        async with connection(pool) as conn:
            catalog = await load_catalog(conn)
            if self.track_lsn:  # read after the catalog: every commit it saw is at or before this position
                catalog.lsn = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        if self.listening and generation == self.generation:  # no announcement while we read
            self.snapshot = catalog
        return catalog


# What an entry costs beside its body: key tuple, ETag, bytes header, the LRU's bookkeeping (tracemalloc: ~420
# bytes). Counting only the body let a cache of many empty tiles hold several times its configured bound.
ENTRY_BYTES = 512


class BytesCache:
    """An in-process LRU bounded by bytes; keys carry collection versions. The interface (get/put) is what
    an external cache (Redis, memcached) would implement later."""

    def __init__(self, max_bytes: int) -> None:
        self._lru: LRUCache = LRUCache(maxsize=max(max_bytes, 1), getsizeof=lambda v: len(v[0]) + ENTRY_BYTES)
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> tuple[bytes, str] | None:
        value = self._lru.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: Hashable, body: bytes, etag: str) -> None:
        if len(body) + ENTRY_BYTES <= self._lru.maxsize:
            self._lru[key] = (body, etag)
            TILE_CACHE_BYTES.set(self._lru.currsize)
