"""Import jobs started through the API: the upload is saved, the import runs in this worker's event loop,
and its status, progress and report live in `import_job`, so any worker can answer for it.

A job that stops beating (its process died) is reported failed; its import transaction never committed, so
the collection is as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.bodies import body_chunks
from service.db import connection
from service.errors import GeoTwinError, InvalidBody, PayloadTooLarge
from service.importcheck import ImportReport
from service.importer import import_file
from service.layertypes import LayerType
from service.observability import IMPORTS, IMPORTS_RUNNING
from service.sources import WORK_PREFIX, ImportOptions

log = logging.getLogger("geotwin.jobs")
STALE = "interval '2 minutes'"
# A running job holds a session advisory lock (namespace, hashtext(job id)) on the connection that runs it.
# PostgreSQL drops it the moment that connection ends, so a job whose process was killed shows failed at
# once; the heartbeat covers the rest (a job queued but never started).
IMPORT_LOCKS = 0x67746A69  # "gtji"
LOCK = "SELECT pg_advisory_lock($1, hashtext($2))"
UNLOCK = "SELECT pg_advisory_unlock($1, hashtext($2))"


QUEUE_BEAT_S = 20


@contextlib.asynccontextmanager
async def job_slot(slots: asyncio.Semaphore, beat: Callable[[], Awaitable[bool]],
                   stopped: Callable[[], Awaitable[None]]) -> AsyncIterator[bool]:
    """One of this worker's job slots (settings.jobs.concurrency), held for the block; yields False (no slot)
    when `beat` says the job is no longer wanted. While the job waits queued it beats so it is not taken for
    dead; a beat that fails (the database briefly away) keeps its place. Stopped while waiting: `stopped`
    records it."""
    try:
        while True:
            try:
                await asyncio.wait_for(slots.acquire(), timeout=QUEUE_BEAT_S)
                break
            except TimeoutError:
                try:
                    wanted = await beat()
                except Exception:  # noqa: BLE001 - see the docstring
                    wanted = True
                if not wanted:
                    yield False
                    return
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(stopped())
        raise
    try:
        yield True
    finally:
        slots.release()


def alive(namespace: int, job_column: str) -> str:
    """SQL: whether the job in `job_column` holds its lock (its process and connection are alive)."""
    return (f"EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = {namespace} "
            f"AND l.objid = (hashtext({job_column})::bigint & 4294967295)::oid AND l.objsubid = 2)")


CREATE = """
INSERT INTO import_job (id, collection_id, source, options, actor) VALUES ($1, $2, $3, $4::text::jsonb, $5)
"""
QUEUED = "UPDATE import_job SET heartbeat_at = now() WHERE id = $1 AND status = 'queued' RETURNING id"
PROGRESS = ("UPDATE import_job SET status = 'running', processed = $2, total = $3, stage = $4, heartbeat_at = now() "
            "WHERE id = $1")
FINISH = """
UPDATE import_job SET status = $2, report = $3::text::jsonb, error = $4, finished_at = now(), heartbeat_at = now()
WHERE id = $1
"""
READ = f"""
SELECT j.*, c.slug AS collection,
  CASE WHEN j.status IN ('queued', 'running') AND (j.heartbeat_at < now() - {STALE}
                                                  OR (j.status = 'running' AND NOT {alive(IMPORT_LOCKS, "j.id")}))
  THEN 'failed' ELSE j.status END AS shown_status
FROM import_job j JOIN collection c ON c.id = j.collection_id WHERE j.id = $1 AND c.id = $2
"""


def upload_name(filename: str, suffix: str) -> str:
    """The caller's file name as the upload is stored under (so reports and errors name their file): its last
    part, letters, digits, space, `.`, `_` and `-` only, at most 100 characters; `upload<suffix>` if nothing
    usable is left."""
    last = re.split(r"[/\\]", filename)[-1]
    stem = re.sub(r"[^\w .-]", "_", last[:len(last) - len(suffix)]).strip(" .")[:100]
    return f"{stem}{suffix}" if stem else f"upload{suffix}"


UPLOAD_PREFIX = WORK_PREFIX
STALE_UPLOAD_S = 24 * 3600  # an import of the largest upload allowed takes minutes, not a day


def sweep_uploads(max_age_s: float = STALE_UPLOAD_S, directory: Path | None = None) -> int:
    """Remove the upload directories a service that died (killed, out of memory, power lost) left behind:
    those created more than `max_age_s` ago. Each upload is removed when its job ends, so only these remain.
    Returns how many were removed."""
    cutoff = time.time() - max_age_s
    removed = 0
    for path in (directory or Path(tempfile.gettempdir())).glob(UPLOAD_PREFIX + "*"):
        with contextlib.suppress(OSError):  # another worker, sweeping at the same start, may be quicker
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path)
                removed += 1
    if removed:
        log.info("removed %d upload(s) left by a service that stopped during an import", removed)
    return removed


async def save_upload(stream: Any, suffix: str, max_bytes: int, idle_timeout_s: float = 30,
                      filename: str = "") -> Path:
    """Write the request body to a temporary file (its own directory, the caller's file name), refusing it
    (413) beyond `max_bytes` and (408) when the client sends nothing for `idle_timeout_s`."""
    directory = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX))
    path = directory / upload_name(filename, suffix)
    size = 0
    try:
        with path.open("wb") as handle:
            async for chunk in body_chunks(stream, idle_timeout_s):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"the upload is larger than {max_bytes:,} bytes")
                handle.write(chunk)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return path


# Text fields of a multipart upload (the import's options) are short; a longer one is not an option.
MAX_FORM_FIELD = 64 * 1024


async def save_multipart_upload(stream: Any, content_type: str, max_bytes: int,
                                idle_timeout_s: float = 30) -> tuple[Path, str, dict[str, str]]:
    """A `multipart/form-data` body (`curl -F file=@sites.gpkg`, an HTML form) streamed to a temporary file, as
    `save_upload` does with a plain body: (the file, the name the client gave it, the text fields). One file
    part; the same limits (413, 408); 400 naming `file` when the body holds no file."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise InvalidBody("multipart/form-data without a boundary", parameter="Content-Type")
    directory = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX))
    received = directory / "upload.part"
    part: dict[str, Any] = {}
    fields: dict[str, str] = {}
    sent_name = ""
    size = 0
    handle = None

    def header_field(data: bytes, start: int, end: int) -> None:
        part["field"] = part.get("field", b"") + data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        part["value"] = part.get("value", b"") + data[start:end]

    def header_end() -> None:
        part.setdefault("headers", {})[part.pop("field", b"").lower()] = part.pop("value", b"")

    def headers_finished() -> None:
        nonlocal handle, sent_name
        raw = part.get("headers", {}).get(b"content-disposition", b"")
        params = parse_options_header(raw)[1]
        name = params.get(b"filename")
        if name is None and (star := re.search(rb"filename\*=(?:UTF-8|utf-8)''([^;]+)", raw)):
            name = unquote_to_bytes(star.group(1).strip())
        if name is None:
            part["text"] = params.get(b"name", b"").decode("utf-8", "replace")
            part["data"] = bytearray()
        elif not name:  # a form's file input with no file chosen
            part["skip"] = True
        elif handle is not None:
            raise InvalidBody("send one file per import", parameter="file")
        else:
            sent_name = name.decode("utf-8", "replace")
            handle = received.open("wb")

    def data(chunk: bytes, start: int, end: int) -> None:
        nonlocal size
        if "skip" in part:
            return
        if "text" in part:
            part["data"] += chunk[start:end]
            if len(part["data"]) > MAX_FORM_FIELD:
                raise InvalidBody(f"the form field {part['text'][:40]!r} is too long", parameter=part["text"][:40])
            return
        size += end - start
        if size > max_bytes:
            raise PayloadTooLarge(f"the upload is larger than {max_bytes:,} bytes")
        handle.write(chunk[start:end])

    def part_end() -> None:
        if "text" in part:
            fields[part["text"]] = part["data"].decode("utf-8", "replace")
        part.clear()

    parser = MultipartParser(boundary, {"on_header_field": header_field, "on_header_value": header_value,
                                        "on_header_end": header_end, "on_headers_finished": headers_finished,
                                        "on_part_data": data, "on_part_end": part_end})
    try:
        try:
            async for chunk in body_chunks(stream, idle_timeout_s):
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise InvalidBody(f"the multipart/form-data body cannot be read: {exc}", parameter="file") from None
        finally:
            if handle is not None:
                handle.close()
        if handle is None:
            raise InvalidBody("the form holds no file: send it as a file part (curl -F file=@sites.gpkg)",
                              parameter="file")
        return received, sent_name, fields
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


async def start(app: Any, collection_pk: int, layer: LayerType, path: Path, name: str, options: ImportOptions,
                actor: str) -> str:
    job = uuid.uuid4().hex
    recorded = {"mode": options.mode, "crs": options.crs, "mapping": options.mapping, "layer": options.layer,
                "idField": options.id_field, "encoding": options.encoding}
    async with connection(app.state.pool) as conn:
        await conn.execute(CREATE, job, collection_pk, name, orjson.dumps(recorded).decode(), actor)
    task = asyncio.create_task(_run(app, job, collection_pk, layer, path, options, actor))
    app.state.jobs.add(task)
    task.add_done_callback(app.state.jobs.discard)
    return job


async def _run(app: Any, job: str, collection_pk: int, layer: LayerType, path: Path, options: ImportOptions,
               actor: str) -> None:
    pool = app.state.job_pool  # the long job statement timeout; not taken from the requests' connections

    async def still_queued() -> bool:
        async with connection(pool) as conn:
            return await conn.fetchval(QUEUED, job) is not None

    def stopped() -> Awaitable[None]:
        return _finish(pool, job, "failed", None, "the service stopped before the import began; nothing was written")

    try:
        async with job_slot(app.state.job_slots, still_queued, stopped) as slot:
            if slot:
                await _import(app, pool, job, collection_pk, layer, path, options, actor)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


async def _import(app: Any, pool: Any, job: str, collection_pk: int, layer: LayerType, path: Path,
                  options: ImportOptions, actor: str) -> None:
    IMPORTS_RUNNING.inc()
    try:
        async with connection(pool) as conn:
            async def beat(report: ImportReport) -> None:
                async with connection(pool) as side:
                    await side.execute(PROGRESS, job, report.processed, report.total, report.stage)

            await conn.execute(LOCK, IMPORT_LOCKS, job)
            try:  # the outcome is recorded before the lock goes: a job is never seen running without its lock
                await _attempt(app, pool, job, conn, collection_pk, layer, path, options, actor, beat)
            finally:
                with contextlib.suppress(Exception):  # a dead connection has dropped the lock already
                    await conn.execute(UNLOCK, IMPORT_LOCKS, job)
    except GeoTwinError as exc:  # no connection for the job (all busy)
        await _finish(pool, job, "failed", None, exc.description)
    finally:
        IMPORTS_RUNNING.dec()


async def _attempt(app: Any, pool: Any, job: str, conn: Any, collection_pk: int, layer: LayerType, path: Path,
                   options: ImportOptions, actor: str, beat: Callable[[ImportReport], Awaitable[None]]) -> None:
    try:
        report = await import_file(conn, collection_pk, layer, path, options, beat, actor)
        await _finish(pool, job, "succeeded", report.as_dict(), None)
        app.state.catalog_cache.invalidate()
    except GeoTwinError as exc:
        await _finish(pool, job, "failed", exc.where.get("report"), exc.description)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(_finish(pool, job, "failed", None, "the service stopped during the import"))
        raise
    except Exception as exc:  # noqa: BLE001 - recorded on the job; the collection is unchanged (rolled back)
        log.exception("import job %s failed", job)
        await _finish(pool, job, "failed", None, f"internal error: {exc.__class__.__name__}")


async def _finish(pool: Any, job: str, status: str, report: dict | None, error: str | None) -> None:
    IMPORTS.labels(status).inc()
    async with connection(pool) as conn:
        await conn.execute(FINISH, job, status, orjson.dumps(report).decode() if report else None, error)


async def read(pool: Any, job: str, collection_pk: int) -> dict[str, Any] | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(READ, job, collection_pk)
    if row is None:
        return None
    status = row["shown_status"]
    error = row["error"] or ("the import stopped (the service was restarted); nothing was written"
                             if status == "failed" and row["status"] != "failed" else None)
    return {"id": row["id"], "collection": row["collection"], "status": status, "source": row["source"],
            "options": orjson.loads(row["options"]) if isinstance(row["options"], str) else row["options"],
            "stage": row["stage"] if status == "running" else None,
            "processed": row["processed"], "total": row["total"],
            "progress": round(row["processed"] / row["total"], 4) if row["total"] else None,
            "created": row["created_at"].isoformat(),
            "finished": row["finished_at"].isoformat() if row["finished_at"] else None,
            "error": error, "report": orjson.loads(row["report"]) if isinstance(row["report"], str) else row["report"]}
