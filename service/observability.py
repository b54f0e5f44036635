"""What operators watch: a request id on every request and answer, structured JSON logs, Prometheus metrics.

- Request id: the caller's `X-Request-ID` when it looks like one (letters, digits, `._-`, ≤ 64), else a new
  one; returned as `X-Request-ID` and put on every log line written while the request runs.
- Logs: one JSON object per line (python-json-logger) with time, level, logger, message and request_id;
  `geotwin serve --access-log` adds a line per request (method, path, route, status, duration).
- Metrics (prometheus_client; aggregated over worker processes when `geotwin serve` runs several):
  requests by route template and status, latency histograms by route, tile cache hits, misses and bytes,
  database pool connections in use and idle, import and process jobs by outcome and running now. What is
  counted per request is tallied in the process and written to the metrics every second (`TALLY`).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import re
import time
from bisect import bisect_left
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from pythonjsonlogger.json import JsonFormatter
from starlette.types import Message, Scope, Send

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
GOOD_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_log = logging.getLogger("geotwin.access")

REQUESTS = Counter("geotwin_requests", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram("geotwin_request_duration_seconds", "Time from request to the end of the answer",
                    ["method", "route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
TILE_CACHE = Counter("geotwin_tile_cache", "Tile cache lookups", ["result"])
TILE_HIT, TILE_MISS = TILE_CACHE.labels("hit"), TILE_CACHE.labels("miss")
TILE_CACHE_BYTES = Gauge("geotwin_tile_cache_bytes", "Bytes the in-process tile caches hold (bounded by "
                         "GEOTWIN_CACHE__TILE_CACHE_MB per worker)", multiprocess_mode="livesum")
POOL = Gauge("geotwin_db_pool_connections", "Database connections of the pools", ["pool", "state"],
             multiprocess_mode="livesum")
READS = Counter("geotwin_replica_routing", "Anonymous reads when replicas are configured, by where they went",
                ["target"])
IMPORTS = Counter("geotwin_import_jobs", "Import jobs finished", ["status"])
IMPORTS_RUNNING = Gauge("geotwin_import_jobs_running", "Import jobs running now", multiprocess_mode="livesum")
RATE_LIMITS_UNCOUNTED = Counter("geotwin_rate_limit_storage_failures", "Times the rate-limit storage (Redis) did "
                                "not answer; requests go uncounted for 30 s after each")
PROCESS_JOBS = Counter("geotwin_process_jobs", "Asynchronous process runs finished", ["process", "status"])
PROCESS_JOBS_RUNNING = Gauge("geotwin_process_jobs_running", "Asynchronous process runs now",
                             multiprocess_mode="livesum")


class Tally:
    """What requests count (requests, their durations, tile cache lookups), kept in this process and written to
    the metrics every second and before this process answers /metrics (`flush`). With several workers,
    prometheus_client writes every increment to a file the workers share: 2.4 µs a counter, 4.7 µs a histogram
    observation. A request's own Python took 12 µs that way, and takes 4 µs with the tally; warm z16 tiles went
    from 7,863 to 9,837 r/s. Nothing is sampled: every request is counted, at most a second late (or lost with a
    worker that is killed)."""

    def __init__(self) -> None:
        self.counts: dict[Any, float] = {}
        self.durations: dict[Any, list[float]] = {}  # histogram child -> [one count per bucket..., sum]

    def count(self, child: Any, amount: float = 1.0) -> None:
        """`child.inc(amount)`, at the next flush."""
        self.counts[child] = self.counts.get(child, 0.0) + amount

    def observe(self, child: Any, value: float) -> None:
        """`child.observe(value)` for a histogram child, at the next flush."""
        slots = self.durations.get(child)
        if slots is None:
            if not _histogram_parts(child):
                child.observe(value)  # a prometheus_client whose histograms are built otherwise: as it asks
                return
            slots = self.durations[child] = [0.0] * (len(child._upper_bounds) + 1)
        slots[bisect_left(child._upper_bounds, value)] += 1  # the first bucket whose bound is >= value
        slots[-1] += value

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        durations, self.durations = self.durations, {}
        for child, amount in counts.items():
            child.inc(amount)
        for child, slots in durations.items():  # as Histogram.observe does, a bucket at a time
            child._sum.inc(slots[-1])
            for bucket, n in zip(child._buckets, slots, strict=False):
                if n:
                    bucket.inc(n)


def _histogram_parts(child: Any) -> bool:
    """Whether a histogram child keeps its sum and its (non-cumulative) buckets as prometheus_client 0.x does."""
    bounds, buckets = getattr(child, "_upper_bounds", None), getattr(child, "_buckets", None)
    return (isinstance(bounds, list) and isinstance(buckets, list) and len(bounds) == len(buckets)
            and hasattr(getattr(child, "_sum", None), "inc") and all(hasattr(b, "inc") for b in buckets))


TALLY = Tally()


def metrics_body() -> tuple[bytes, str]:
    """The exposition text: summed over all workers when they share PROMETHEUS_MULTIPROC_DIR (each writes its
    tally every second; this one's is written first)."""
    TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def record_pool(name: str, pool: Any) -> None:
    size, idle = pool.get_size(), pool.get_idle_size()
    POOL.labels(name, "in_use").set(size - idle)
    POOL.labels(name, "idle").set(idle)


# ---------------------------------------------------------------- per request

class Observed:
    """Around one HTTP request: its id (in the context, for the logs, and on the answer), its status and how
    long it took. `finish(route)` counts it; the route is the template (`/municipalities/{municipality}/…`)."""

    __slots__ = ("scope", "send", "status", "started", "token", "rid")

    def __init__(self, scope: Scope, send: Send) -> None:
        self.scope, self.send, self.status = scope, send, 0
        self.started = time.perf_counter()
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")
                break
        self.rid = rid if GOOD_ID.match(rid) else os.urandom(16).hex()  # as random as uuid4().hex, 3 µs less
        self.token = REQUEST_ID.set(self.rid)

    async def wrapped_send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), (b"x-request-id", self.rid.encode())]
        await self.send(message)

    def finish(self, route: str | None) -> None:
        elapsed = time.perf_counter() - self.started
        method = self.scope["method"]
        label = route or "unmatched"
        count, latency = _children(method, label, self.status or 500)
        TALLY.count(count)
        TALLY.observe(latency, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %s", method, self.scope["path"], self.status,
                            extra={"method": method, "path": self.scope["path"], "route": label,
                                   "status": self.status, "duration_ms": round(elapsed * 1000, 3),
                                   "client": (self.scope.get("client") or ("", 0))[0]})
        REQUEST_ID.reset(self.token)


@functools.lru_cache(maxsize=4096)
def _children(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The metric children of one (method, route, status): `labels()` costs ~10 µs, a cache hit nothing."""
    return REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route)


def route_of(scope: Scope) -> str | None:
    route = scope.get("route")  # its template as the OpenAPI document gives it (no `:fid` convertor)
    return getattr(route, "path_format", None) if route is not None else None


# ---------------------------------------------------------------- logging

class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def log_config(level: str = "INFO", access: bool = False) -> dict[str, Any]:
    """dictConfig for `geotwin serve` (uvicorn's own loggers included): JSON lines on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": _RequestIdFilter}},
        "formatters": {"json": {
            "()": JsonFormatter,
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
        }},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"],
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "": {"handlers": ["stderr"], "level": level},
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},  # ours is richer
            "geotwin.access": {"level": "INFO" if access else "WARNING"},
        },
    }
