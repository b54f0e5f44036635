"""Operations against real PostgreSQL processes the test starts and stops: health and readiness through a
database outage, Prometheus metrics, request ids and JSON logs, and reads from a streaming replica."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.localdb import LocalCluster
from service.migrate import head_revision, upgrade
from tests.conftest import app_client, free_port, new_key, serve_cli

ROOT = Path(__file__).resolve().parent.parent
SITES = "/municipalities/halle/collections/commercial-sites"
TILE = "/municipalities/halle/tiles/WebMercatorQuad/13/2723/4370"  # Star Park


@pytest.fixture(scope="module")
def primary():
    """A PostgreSQL of this module's own (the tests stop and start it), with the demo data."""
    base = Path(tempfile.mkdtemp(prefix="geotwin-ops-"))
    os.chmod(base, 0o755)
    c = LocalCluster(base / "primary", free_port())
    c.start()
    url = c.create_database("geotwin_ops")
    upgrade(url)
    from service.cli import _load_demo

    asyncio.run(_load_demo(url))
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)  # ~190 MB per run: 50 runs had filled 9.5 GB of /tmp


@pytest.fixture(scope="module")
def replica(primary):
    r = primary.replica(primary.datadir.parent / "replica", free_port())
    r.start()
    yield r
    r.stop()


async def wait_for(check, timeout: float = 30) -> None:
    """Until `check()` (a value or an awaitable) is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("not within the time")


async def test_ready_turns_503_while_the_database_is_down_and_back_by_itself(primary):
    async with app_client(primary, "geotwin_ops") as (_, client):
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/ready")
        assert ready.status_code == 200 and ready.json()["migration"] == head_revision()
        primary.stop()
        try:
            down = await client.get("/ready")
            assert down.status_code == 503 and down.headers["retry-after"]
            assert "not reachable" in down.json()["description"]
            assert (await client.get("/health")).status_code == 200
            for path in (f"{SITES}/items", TILE, "/municipalities/halle/collections"):
                r = await client.get(path)
                assert r.status_code == 503, (path, r.status_code, r.text[:200])
                assert r.headers["retry-after"]
        finally:
            primary.start()

        async def back() -> bool:
            return (await client.get("/ready")).status_code == 200
        await wait_for(back)
        assert (await client.get(f"{SITES}/items")).json()["numberReturned"] > 0
        assert (await client.get(TILE)).status_code == 200


async def test_ready_says_when_the_schema_is_behind(primary):
    primary.psql("DROP DATABASE IF EXISTS geotwin_old")
    url = primary.create_database("geotwin_old")
    await asyncio.to_thread(upgrade, url, "0009")
    async with app_client(primary, "geotwin_old") as (_, client):
        r = await client.get("/ready")
    assert r.status_code == 503 and "geotwin migrate" in r.json()["description"]


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


async def test_metrics_count_requests_tiles_pools_and_jobs(primary):
    async with app_client(primary, "geotwin_ops") as (_, client):
        before = (await client.get("/metrics")).text
        for _ in range(3):
            await client.get(f"{SITES}/items")
        await client.get(f"{SITES}/items/nope")
        await client.get(TILE + "?f=mvt")  # through the router
        await client.get(TILE + "?f=mvt")  # the same again: from the cache
        await client.post("/processes/statistics/execution", json={"inputs": {}},
                          headers={"Prefer": "respond-async"})
        await asyncio.sleep(1.2)  # the pool gauges are recorded every second
        text = (await client.get("/metrics")).text
    route = "/municipalities/{municipality}/collections/{collectionId}/items"
    assert metric(text, "geotwin_requests_total", route=route, status="200") - metric(
        before, "geotwin_requests_total", route=route, status="200") == 3
    assert metric(text, "geotwin_requests_total", route=route + "/{featureId}", status="404") >= 1
    assert metric(text, "geotwin_request_duration_seconds_count", route=route) >= 3
    assert metric(text, "geotwin_request_duration_seconds_bucket", route=route, le="+Inf") >= 3
    assert metric(text, "geotwin_tile_cache_total", result="hit") - metric(
        before, "geotwin_tile_cache_total", result="hit") >= 1
    assert metric(text, "geotwin_tile_cache_total", result="miss") >= 1
    assert metric(text, "geotwin_db_pool_connections", pool="primary", state="idle") >= 1
    assert metric(text, "geotwin_process_jobs_total", process="statistics", status="successful") >= 1
    assert "geotwin_import_jobs_running" in text


def test_the_tally_writes_what_prometheus_client_itself_would():
    """Requests are counted in the process and written every second (service.observability.Tally): the
    exposition is the same as if every request had been observed at once, in every bucket."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from service.observability import LATENCY, Tally

    texts = []
    for tallied in (False, True):
        registry = CollectorRegistry()
        counter = Counter("c", "c", ["route"], registry=registry)
        histogram = Histogram("h", "h", ["route"], buckets=LATENCY._kwargs["buckets"], registry=registry)
        tally = Tally()
        for i, seconds in enumerate([0.0, 0.001, 0.0011, 0.004, 0.02, 0.7, 2.5, 31.0, 0.0025, 0.0025]):
            route = f"/r{i % 3}"
            if tallied:
                tally.count(counter.labels(route))
                tally.observe(histogram.labels(route), seconds)
            else:
                counter.labels(route).inc()
                histogram.labels(route).observe(seconds)
        tally.flush()
        texts.append(re.sub(r"\S+_created\{[^}]*\} \S+\n", "", generate_latest(registry).decode()))
    assert texts[0] == texts[1]
    assert 'h_bucket{le="0.001",route="/r1"} 1.0' in texts[1]  # a bound is inclusive, as Prometheus has it


def test_served_with_workers_logs_json_lines_with_request_ids_and_sums_metrics(primary, tmp_path):
    base, proc = serve_cli("geotwin_ops", primary, "--workers", "2", "--access-log", stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True, env={"TMPDIR": str(tmp_path)})
    assert [p.name[:16] for p in tmp_path.iterdir()] == ["geotwin-metrics-"]
    try:
        given = httpx.get(f"{base}{SITES}/items", headers={"X-Request-ID": "planner-42.a_b"})
        assert given.headers["x-request-id"] == "planner-42.a_b"
        made = httpx.get(f"{base}{TILE}", headers={"X-Request-ID": "bad id with spaces"})
        assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])  # the fast path has one too
        with httpx.Client(base_url=base) as client:  # new connections land on either worker
            for _ in range(40):
                client.get("/schemas", headers={"Connection": "close"})

        def total() -> float:
            return metric(httpx.get(f"{base}/metrics", headers={"Connection": "close"}).text,
                          "geotwin_requests_total", route="/schemas")

        time.sleep(1.2)  # each worker writes what it counted every second
        totals = {total() for _ in range(6)}
        assert totals == {40.0}, totals  # whichever worker answers, it reports both
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines, err[-2000:]
    access = [x for x in lines if x.get("logger") == "geotwin.access"]
    mine = [x for x in access if x.get("request_id") == "planner-42.a_b"]
    assert mine and mine[0]["status"] == 200 and mine[0]["route"].endswith("/items") and mine[0]["duration_ms"] > 0
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    assert not [x for x in err.splitlines() if x.strip() and not x.startswith("{")], "every line is JSON"
    assert not list(tmp_path.iterdir()), "the workers' metrics files go with the service"
    assert "database admits" not in err, "2 × (2 × 10 + 11) connections fit in 197"


def test_serve_says_at_start_when_its_workers_may_open_more_connections_than_the_database_admits(primary):
    base, proc = serve_cli("geotwin_ops", primary, env={"GEOTWIN_DB_POOL_MAX": "100"}, stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True)
    assert httpx.get(f"{base}/ready").status_code == 200  # a warning, not a refusal to start
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    warned = [json.loads(line) for line in err.splitlines() if "database admits" in line]
    assert len(warned) == 1 and warned[0]["level"] == "WARNING", err[-2000:]
    assert "up to 211 database connections" in warned[0]["message"]  # 2 × 100 + 10 jobs + 1 LISTEN
    assert "admits 197" in warned[0]["message"]  # max_connections 200, 3 kept for superusers


@pytest.mark.parametrize("setting, says", [
    ({"PGPORT": "free"}, "the database does not answer (ConnectionRefusedError"),
    ({"PGDATABASE": "geotwin_nowhere"}, 'refused the connection: database "geotwin_nowhere" does not exist'),
    ({"PGUSER": "nobody"}, 'refused the connection: role "nobody" does not exist'),
])
def test_commands_that_cannot_reach_the_database_say_so_in_a_line(primary, setting, says):
    """What the admin sees at 2 a.m. when a setting is wrong: what failed and where the settings come from, not a
    traceback of forty frames."""
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(primary.port), "PGUSER": "geotwin",
           "PGDATABASE": "geotwin_ops", "PGPASSWORD": "", "COLUMNS": "200"}
    env.update({k: str(free_port()) if v == "free" else v for k, v in setting.items()})
    for command in (["migrate"], ["keys", "list"]):
        result = subprocess.run([str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "geotwin"), *command],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result.stderr[-2000:]
        assert says in result.stderr and "PGHOST, PGPORT" in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 2, result.stderr[-2000:]


def test_commands_beside_the_demo_work_on_its_database(cluster, db_url, tmp_path, monkeypatch):
    """After `./dev.sh serve`, `geotwin import …` (or any command) with no database given works on the database
    the demo shows, and says so; a database that is given still wins."""
    from typer.testing import CliRunner

    from service import cli_admin
    from service.cli import app

    for name in [k for k in os.environ if k.startswith("PG") or k == "DATABASE_URL"]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(cli_admin, "OWN_DATA", cluster.datadir.parent)  # the demo's: .data, its cluster .data/pg
    monkeypatch.setattr(cli_admin, "OWN_DATABASE", db_url.rsplit("/", 1)[1])
    result = CliRunner().invoke(app, ["collections", "list", "--municipality", "halle"])
    assert result.exit_code == 0, result.output
    assert "halle/commercial-sites" in result.stdout
    assert f"database: {db_url} (the project's own" in result.stderr
    port = free_port()
    monkeypatch.setenv("PGPORT", str(port))
    result = CliRunner().invoke(app, ["collections", "list"])
    assert isinstance(result.exception, ConnectionRefusedError) and str(port) in str(result.exception)
    assert "the project's own" not in result.stderr
    monkeypatch.delenv("PGPORT")
    monkeypatch.setattr(cli_admin, "OWN_DATA", tmp_path)  # no cluster runs there: the PG* defaults, as before
    assert cli_admin.dsn_of(None) == "postgresql://geotwin@127.0.0.1:5432/geotwin"


@pytest.mark.parametrize("setting, says, commands", [
    ({"GEOTWIN_API__MAX_LIMIT": "zehntausend"},
     "GEOTWIN_API__MAX_LIMIT='zehntausend': Input should be a valid integer", ["serve"]),
    ({"PGPORT": "5432x"}, "PGPORT='5432x': Input should be a valid integer", ["migrate", "serve"]),
    ({"GEOTWIN_API__TIME_ZONE": "Mitteleuropa"},
     "GEOTWIN_API__TIME_ZONE='Mitteleuropa': Value error, not an IANA time zone like Europe/Berlin",
     ["serve", "history prune --before 2025-01-01"]),
    ({"GEOTWIN_DB_POOL_MAX": "viele"}, "GEOTWIN_DB_POOL_MAX='viele': Input should be a valid integer",
     ["migrate", "serve"]),
])
def test_a_setting_that_cannot_be_read_is_named_in_a_line(setting, says, commands, tmp_path):
    """A wrong value stops the command that reads it (serve reads them all) with the variable and the value it
    was given."""
    env = {**os.environ, "COLUMNS": "200", **setting}
    for command in ([*c.split(), *(["--port", str(free_port())] if c == "serve" else [])] for c in commands):
        result = subprocess.run([str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "geotwin"), *command],
                                env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert says in result.stderr and ".env.example explains each" in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 2, result.stderr[-2000:]


def test_serve_warns_of_settings_it_does_not_know(primary, tmp_path):
    """A mistyped variable would leave the default in force without a word: serve names it at start, from the
    environment or from .env, with the setting it probably meant."""
    (tmp_path / ".env").write_text("GEOTWIN_CACHE_TILE_CACHE_MB=512\n")
    env = {"GEOTWIN_API__MAX_LIMT": "500", "GEOTWIN_API__MAX_LIMIT": "500"}
    base, proc = serve_cli("geotwin_ops", primary, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           text=True, cwd=tmp_path)
    assert httpx.get(f"{base}/ready").status_code == 200
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    warned = [json.loads(line)["message"] for line in err.splitlines() if "is not a setting" in line]
    warned = [w for w in warned if "_MAX_LIMT" in w or "TILE_CACHE" in w]  # not GEOTWIN_FUZZ_EXAMPLES, say
    assert warned == [
        "GEOTWIN_API__MAX_LIMT is not a setting and is ignored; did you mean GEOTWIN_API__MAX_LIMIT?",
        "GEOTWIN_CACHE_TILE_CACHE_MB is not a setting and is ignored; did you mean GEOTWIN_CACHE__TILE_CACHE_MB?",
    ], err[-2000:]


async def test_anonymous_reads_use_a_fresh_replica_and_fall_back_to_the_primary(primary, replica):
    replica_url = replica.url("geotwin_ops")
    key = await new_key(primary.url("geotwin_ops"), "halle", "editor", "Ops")
    async with app_client(primary, "geotwin_ops", replicas=[replica_url]) as (app, client):
        await wait_for(lambda: app.state.replicas.members[0].healthy)

        name = app.state.replicas.members[0].name

        async def routed(target: str) -> float:
            return metric((await client.get("/metrics")).text, "geotwin_replica_routing_total", target=target)

        async def served_by_replica(path: str) -> bool:
            before = await routed(name)
            return (await client.get(path)).status_code == 200 and await routed(name) > before
        await wait_for(lambda: served_by_replica(f"{SITES}/items"))  # once it has replayed the catalog's LSN
        assert (await client.get("/ready")).json()["replicas"][0]["healthy"] is True

        # Replay paused: an edit on the primary is newer than the replica, so readers are sent to the primary.
        async with connected(replica_url) as conn:
            await conn.execute("SELECT pg_wal_replay_pause()")
        try:
            feature = {"type": "Feature", "id": "ops-1", "properties": {
                "name": "Neu am Hafen", "area_gross_ha": 2, "zoning": "GE", "availability": "verfuegbar",
                "servicing": "erschlossen"}, "geometry": {"type": "Polygon", "coordinates": [[
                    [11.95, 51.47], [11.952, 51.47], [11.952, 51.471], [11.95, 51.471], [11.95, 51.47]]]}}
            created = await client.post(f"{SITES}/items", json=feature,
                                        headers={"Authorization": f"Bearer {key}"})
            assert created.status_code == 201, created.text
            to_primary = await routed("primary (no fresh replica)")
            anonymous = await client.get(f"{SITES}/items/ops-1")
            assert anonymous.status_code == 200  # not from the paused replica, which does not have it yet
            assert await routed("primary (no fresh replica)") > to_primary
            editor = await client.get(f"{SITES}/items/ops-1", headers={"Authorization": f"Bearer {key}"})
            assert editor.status_code == 200
        finally:
            async with connected(replica_url) as conn:
                await conn.execute("SELECT pg_wal_replay_resume()")

        # Caught up: anonymous reads are served by the replica again.
        await wait_for(lambda: served_by_replica(f"{SITES}/items/ops-1"))

        replica.stop()
        try:
            for path in (f"{SITES}/items", f"{SITES}/items/ops-1", TILE):
                r = await client.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            ready = (await client.get("/ready")).json()
            assert ready["status"] == "ready" and ready["replicas"][0]["healthy"] is False
        finally:
            replica.start()
        await wait_for(lambda: app.state.replicas.members[0].healthy)


@asynccontextmanager
async def connected(url: str):
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()
