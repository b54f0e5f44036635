"""Read replicas: anonymous reads go to PostgreSQL streaming replicas that are fresh enough; everything else,
and every read when no replica is, goes to the primary.

Fresh enough means: the replica has replayed the primary's WAL up to where it was when the catalog (the
collection versions behind every ETag and tile cache key) was read. A response keyed by a collection version
is therefore never built from older rows on a replica, and a planner who edits sees the edit at once.
Requests with a key or token (editors reading what they just wrote) always use the primary.

A monitor asks every replica for its replay position four times a second; a replica that does not answer
within a second is left out until it does. A replica that fails under a request is left out at once, and
the request is answered again from the primary (`service.main`), unless part of the answer was already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from service.observability import READS

log = logging.getLogger("geotwin.replicas")
POLL_S = 0.25
TIMEOUT_S = 1.0
REPLAY = "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn"


@dataclass
class Member:
    dsn: str
    pool: Any = None
    lsn: int = -1  # replay position in bytes; -1 unknown
    healthy: bool = False
    checked: float = 0.0
    error: str = ""

    @property
    def name(self) -> str:
        parts = urlsplit(self.dsn)
        return f"{parts.hostname}:{parts.port or 5432}"


@dataclass
class Replicas:
    dsns: list[str]
    make_pool: Any  # async (dsn) -> asyncpg.Pool
    members: list[Member] = field(default_factory=list)
    _task: asyncio.Task | None = None
    _next: int = 0

    async def start(self) -> None:
        self.members = [Member(dsn) for dsn in self.dsns]
        for m in self.members:
            m.pool = await self.make_pool(m.dsn)
        if self.members:
            await self.check()
            self._task = asyncio.create_task(self._monitor())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for m in self.members:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(m.pool.close(), 5)

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await self.check()

    async def check(self) -> None:
        await asyncio.gather(*(self._check(m) for m in self.members))

    async def _check(self, m: Member) -> None:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                async with m.pool.acquire() as conn:
                    lsn = await conn.fetchval(REPLAY)
            if lsn is None:  # not in recovery: a promoted replica is no replica
                raise RuntimeError("not a replica (pg_last_wal_replay_lsn() is null)")
            if not m.healthy:
                log.info("replica %s is in use", m.name)
            m.lsn, m.healthy, m.error = int(lsn), True, ""
        except Exception as exc:  # noqa: BLE001 - any failure leaves it out until it answers again
            self.drop(m, f"{exc.__class__.__name__}: {exc}")
        m.checked = time.monotonic()

    def drop(self, m: Member, reason: str) -> None:
        """Leave `m` out until the monitor hears from it again."""
        if m.healthy:
            log.warning("replica %s left out: %s", m.name, reason)
        m.healthy, m.error = False, reason[:200]

    def pick(self, min_lsn: int) -> Member | None:
        """A healthy replica that has replayed at least `min_lsn`, taking turns; None: use the primary."""
        n = len(self.members)
        for i in range(n):
            m = self.members[(self._next + i) % n]
            if m.healthy and m.lsn >= min_lsn:
                self._next = (self._next + i + 1) % n
                return m
        return None

    def describe(self) -> list[dict[str, Any]]:
        return [{"replica": m.name, "healthy": m.healthy, "replayLsn": m.lsn, **({"error": m.error} if m.error else {})}
                for m in self.members]


FAILED = "geotwin.replica_failed"  # set in the request's scope when its replica failed under it
CONNECTION_LOST = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                   asyncpg.exceptions.OperatorInterventionError, TimeoutError)


class ReadPool:
    """What the read paths use as their pool: a replica's connection when one is fresh enough, else the
    primary's. Only `acquire()` is offered: readers never need more."""

    __slots__ = ("primary", "replicas", "member", "scope")

    def __init__(self, primary: asyncpg.Pool, replicas: Replicas, member: Member, scope: dict) -> None:
        self.primary, self.replicas, self.member, self.scope = primary, replicas, member, scope

    @contextlib.asynccontextmanager
    async def acquire(self, timeout: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        # One turn of the event loop first: a replica that went away has closed its sockets, and asyncpg
        # notices only when the loop reads them; without it a dead idle connection would be handed out.
        await asyncio.sleep(0)
        try:
            ctx = self.member.pool.acquire(timeout=timeout)
            conn = await ctx.__aenter__()
        except (*CONNECTION_LOST, asyncpg.PostgresError) as exc:
            self.replicas.drop(self.member, f"{exc.__class__.__name__}: {exc}")
            READS.labels("primary (replica failed)").inc()
            async with self.primary.acquire(timeout=timeout) as conn:
                yield conn
            return
        READS.labels(self.member.name).inc()
        try:
            yield conn
        except CONNECTION_LOST as exc:  # the replica went away under the query: answer again elsewhere
            self.replicas.drop(self.member, f"{exc.__class__.__name__}: {exc}")
            self.scope[FAILED] = True
            raise
        finally:
            await ctx.__aexit__(None, None, None)


def read_pool(state: Any, catalog: Any, anonymous: bool, scope: dict) -> Any:
    """The pool for a read: a fresh replica's for anonymous callers when there is one, else the primary."""
    replicas: Replicas | None = getattr(state, "replicas", None)
    if not anonymous or replicas is None or not replicas.members:
        return state.pool
    member = replicas.pick(catalog.lsn)
    if member is None:
        READS.labels("primary (no fresh replica)").inc()
        return state.pool
    return ReadPool(state.pool, replicas, member, scope)


async def answer_reads_again(app: Any, scope: dict, receive: Any, send: Any) -> None:
    """Run `app`; if the replica under an anonymous read failed before anything was sent, run it once more
    (the replica is left out by then, so the primary answers). Nothing of the failed attempt is sent."""
    if scope["method"] not in ("GET", "HEAD") or not app.state.replicas.members:
        await app.asgi(scope, receive, send)
        return
    scope[FAILED] = False
    sent = False

    async def guarded(message: dict) -> None:
        nonlocal sent
        if scope[FAILED] and not sent:
            return  # the error answer of the failed attempt: dropped, the request is answered again
        sent = True
        await send(message)

    await app.asgi(scope, receive, guarded)
    if scope[FAILED] and not sent:
        scope[FAILED] = False

        async def no_body() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}
        await app.asgi(scope, no_body, send)
