"""Asynchronous runs of the planning tools (OGC API – Processes jobs).

`POST /processes/{id}/execution` with `Prefer: respond-async` checks the inputs at once (a bad parameter is
still a 400), records a job in `process_job` and answers 201 with the job's URL; the computation runs in this
worker's event loop and stores its result in the row, so any worker (or service replica) can answer for the
job. A job whose heartbeat stops (its process died) is shown failed. Results are kept `jobs.keep_days`.

A job belongs to whoever started it: callers with a key or token see only their own jobs; a job started
without credentials computed only public data, and its unguessable id is what lets one read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.db import connection
from service.errors import GeoTwinError, status_of
from service.jobs import LOCK, UNLOCK, alive, job_slot
from service.observability import PROCESS_JOBS, PROCESS_JOBS_RUNNING

log = logging.getLogger("geotwin.processjobs")
HEARTBEAT_S = 20
STALE = "interval '2 minutes'"


@dataclass
class Output:
    """What a process run produced: the body of the synchronous answer, or of a job's results."""

    body: bytes
    media_type: str
    filename: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


Compute = Callable[[Any], Awaitable[Output]]  # given the pool; everything it needs was checked before

CREATE = """
INSERT INTO process_job (id, process_id, owner, inputs) VALUES ($1, $2, $3, $4::text::jsonb)
"""
EXPIRE = "DELETE FROM process_job WHERE created_at < now() - make_interval(days => $1)"
START = """
UPDATE process_job SET status = 'running', started_at = now(), heartbeat_at = now()
WHERE id = $1 AND status = 'accepted'
"""
BEAT = "UPDATE process_job SET heartbeat_at = now() WHERE id = $1 RETURNING status"
SUCCEED = """
UPDATE process_job SET status = 'successful', result = $2, media_type = $3, filename = $4, finished_at = now(),
  heartbeat_at = now(), message = 'done'
WHERE id = $1 AND status = 'running'
"""
FAIL = """
UPDATE process_job SET status = 'failed', message = $2, error_status = $3, finished_at = now(), heartbeat_at = now()
WHERE id = $1 AND status IN ('accepted', 'running')
"""
DISMISS = """
UPDATE process_job SET status = 'dismissed', result = NULL, message = 'dismissed by its owner',
  finished_at = coalesce(finished_at, now())
WHERE id = $1 RETURNING id
"""
PROCESS_LOCKS = 0x6774706A  # "gtpj": a running job holds it (see service.jobs)
COLUMNS = ("id, process_id, owner, inputs, message, error_status, media_type, filename, created_at, started_at, "
           f"finished_at, CASE WHEN status IN ('accepted', 'running') AND (heartbeat_at < now() - {STALE} "
           f"OR (status = 'running' AND NOT {alive(PROCESS_LOCKS, 'id')})) "
           "THEN 'failed' ELSE status END AS shown_status, status")
READ = f"SELECT {COLUMNS} FROM process_job WHERE id = $1"
LIST = f"SELECT {COLUMNS} FROM process_job WHERE owner = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
RESULT = "SELECT result, media_type, filename FROM process_job WHERE id = $1 AND status = 'successful'"


async def start(app: Any, process_id: str, owner: str, inputs: dict[str, Any], compute: Compute) -> str:
    """Record the job and start computing; returns its id."""
    job = uuid.uuid4().hex
    async with connection(app.state.pool) as conn:
        await conn.execute(EXPIRE, app.state.settings.jobs.keep_days)
        await conn.execute(CREATE, job, process_id, owner, orjson.dumps(inputs).decode())
    task = asyncio.create_task(_run(app.state.job_pool, job, process_id, compute, app.state.job_slots))
    app.state.jobs.add(task)
    task.add_done_callback(app.state.jobs.discard)
    return job


async def _run(pool: Any, job: str, process_id: str, compute: Compute, slots: asyncio.Semaphore) -> None:
    async def still_accepted() -> bool:
        async with connection(pool) as conn:
            return await conn.fetchval(BEAT, job) == "accepted"

    def stopped() -> Awaitable[None]:
        return _fail(pool, job, "the service stopped before the run began; start it again", 503)

    async with job_slot(slots, still_accepted, stopped) as slot:
        if slot:
            await _hold(pool, job, process_id, compute)


async def _hold(pool: Any, job: str, process_id: str, compute: Compute) -> None:
    async with connection(pool) as holder:  # holds the job's lock while it runs: alive as long as we are
        await holder.execute(LOCK, PROCESS_LOCKS, job)
        try:
            await _work(pool, job, process_id, compute)
        finally:
            with contextlib.suppress(Exception):
                await holder.execute(UNLOCK, PROCESS_LOCKS, job)


async def _work(pool: Any, job: str, process_id: str, compute: Compute) -> None:
    work: asyncio.Task | None = None
    outcome = "failed"
    PROCESS_JOBS_RUNNING.inc()
    try:
        async with connection(pool) as conn:
            if await conn.execute(START, job) == "UPDATE 0":  # dismissed while it waited for a slot
                outcome = "dismissed"
                return
        work = asyncio.create_task(compute(pool))
        while True:  # beat while computing; a job dismissed meanwhile (by any worker) stops here
            done, _ = await asyncio.wait({work}, timeout=HEARTBEAT_S)
            if done:
                break
            async with connection(pool) as conn:
                status = await conn.fetchval(BEAT, job)
            if status != "running":
                work.cancel()
                outcome = "dismissed"
                return
        out = work.result()
        async with connection(pool) as conn:
            await conn.execute(SUCCEED, job, out.body, out.media_type, out.filename)
        outcome = "successful"
    except GeoTwinError as exc:
        await _fail(pool, job, exc.description, status_of(exc))
    except asyncio.CancelledError:
        if work is not None:
            work.cancel()
        with contextlib.suppress(Exception):
            await asyncio.shield(_fail(pool, job, "the service stopped during the run; start it again", 503))
        raise
    except Exception as exc:  # noqa: BLE001 - recorded on the job, which is all its owner can act on
        log.exception("process job %s failed", job)
        await _fail(pool, job, f"internal error: {exc.__class__.__name__}", 500)
    finally:
        PROCESS_JOBS_RUNNING.dec()
        PROCESS_JOBS.labels(process_id, outcome).inc()


async def _fail(pool: Any, job: str, message: str, status: int) -> None:
    async with connection(pool) as conn:
        await conn.execute(FAIL, job, message, status)


async def read(pool: Any, job: str) -> dict[str, Any] | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(READ, job)
    return dict(row) if row else None


async def listing(pool: Any, owner: str, limit: int, offset: int) -> list[dict[str, Any]]:
    async with connection(pool) as conn:
        return [dict(r) for r in await conn.fetch(LIST, owner, limit, offset)]


async def result(pool: Any, job: str) -> Output | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(RESULT, job)
    return Output(bytes(row["result"]), row["media_type"], row["filename"]) if row else None


async def dismiss(pool: Any, job: str) -> None:
    async with connection(pool) as conn:
        await conn.execute(DISMISS, job)


def asked(row: dict[str, Any]) -> dict[str, Any]:
    """What the job's execute request asked: its inputs, and `f` and `response` where they were given."""
    return orjson.loads(row["inputs"]) if isinstance(row["inputs"], str) else row["inputs"]


def status_info(row: dict[str, Any], base: str) -> dict[str, Any]:
    """OGC API – Processes statusInfo of a job row."""
    status = row["shown_status"]
    message = row["message"]
    if status == "failed" and row["status"] != "failed":
        message = "the run stopped (the service was restarted); start it again"
    info: dict[str, Any] = {
        "jobID": row["id"], "type": "process", "processID": row["process_id"], "status": status,
        "message": message, "created": row["created_at"].isoformat(),
        "started": row["started_at"].isoformat() if row["started_at"] else None,
        "finished": row["finished_at"].isoformat() if row["finished_at"] else None,
        "progress": 100 if status == "successful" else None,
        "inputs": asked(row),
    }
    url = f"{base}/jobs/{row['id']}"
    links = [{"href": url, "rel": "self", "type": "application/json", "title": "status"},
             {"href": f"{base}/processes/{row['process_id']}", "rel": "up", "type": "application/json",
              "title": "the process"}]
    if status == "successful":
        media = "application/json" if asked(row).get("response") == "document" else row["media_type"]
        links.append({"href": f"{url}/results", "rel": "http://www.opengis.net/def/rel/ogc/1.0/results",
                      "type": media, "title": "results"})
    info["links"] = links
    return {k: v for k, v in info.items() if v is not None}
