"""Faults the service must survive without hanging: an expensive statement is cut off by the statement
timeout, an exhausted pool answers 503 after a bounded wait, and both leave the service healthy."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import httpx
import pytest

from service.db import create_pool
from service.main import create_app
from service.settings import DatabaseSettings
from tests.conftest import app_client, new_key, serve_cli, settings_for

SITES = "/region/collections/commercial-sites/items"
SITES_HALLE = "/municipalities/halle/collections/commercial-sites"


@pytest.fixture(scope="module")
def faults_db(demo_db):
    return demo_db("geotwin_faults")


async def test_a_statement_over_the_timeout_is_a_503_and_others_go_on(cluster, faults_db):
    async with app_client(cluster, "geotwin_faults", db_options={"GEOTWIN_DB_STATEMENT_TIMEOUT_S": 0.001}) as (
            _, client):
        r = await client.get(SITES, params={"limit": 1000})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] and "as a job" in r.json()["description"]
        assert (await client.get("/health")).status_code == 200
    async with app_client(cluster, "geotwin_faults") as (_, client):  # the default (30 s) lets it through
        assert (await client.get(SITES, params={"limit": 1000})).status_code == 200


async def test_an_exhausted_pool_answers_503_after_a_bounded_wait(cluster, faults_db):
    options = {"GEOTWIN_DB_POOL_MIN": 1, "GEOTWIN_DB_POOL_MAX": 1, "GEOTWIN_DB_ACQUIRE_TIMEOUT_S": 0.3}
    async with app_client(cluster, "geotwin_faults", db_options=options) as (app, client):
        assert (await client.get(SITES)).status_code == 200
        held = await app.state.pool.acquire()  # someone else holds the only connection
        try:
            started = time.monotonic()
            answers = await asyncio.gather(*(client.get(SITES) for _ in range(5)))
            waited = time.monotonic() - started
            assert [a.status_code for a in answers] == [503] * 5
            assert all("busy" in a.json()["description"] and a.headers["retry-after"] for a in answers)
            assert waited < 3, waited  # bounded: each waited about the acquire timeout, not forever
        finally:
            await app.state.pool.release(held)
        assert (await client.get(SITES)).status_code == 200


def big_sites_file(path, n: int) -> None:
    """n small square sites across Halle, as GeoJSON (CRS84)."""
    features = []
    for i in range(n):
        x, y = 11.85 + (i % 400) * 0.0006, 51.42 + (i // 400) * 0.0006
        features.append({"type": "Feature", "id": f"k{i}", "geometry": {"type": "Polygon", "coordinates": [
            [[x, y], [x + 0.0004, y], [x + 0.0004, y + 0.0004], [x, y + 0.0004], [x, y]]]},
            "properties": {"name": f"Fläche {i}", "area_gross_ha": 1.2, "zoning": "GE",
                           "availability": "verfuegbar", "servicing": "erschlossen"}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def test_the_service_killed_during_an_import_leaves_nothing_and_the_job_failed(cluster, faults_db, tmp_path):
    key = asyncio.run(new_key(faults_db, "halle", "editor", "Kill"))
    source = tmp_path / "many.geojson"
    big_sites_file(source, 60_000)
    before = cluster.psql("SELECT count(*), max(change_id) FROM feature", "geotwin_faults")
    # The killed service cannot remove its upload (a later start sweeps it after a day): keep it in tmp_path.
    base, proc = serve_cli("geotwin_faults", cluster, env={"TMPDIR": str(tmp_path)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        auth = {"X-API-Key": key}
        started = httpx.post(f"{base}{SITES_HALLE}/imports", params={"filename": "many.geojson"},
                             headers=auth, content=source.read_bytes(), timeout=60)
        assert started.status_code == 202, started.text
        job = started.headers["location"]
        deadline = time.monotonic() + 60
        while (status := httpx.get(job, headers=auth, timeout=5).json())["processed"] == 0:
            assert status["status"] in ("queued", "running") and time.monotonic() < deadline, status
            time.sleep(0.05)
        assert status["status"] == "running" and 0 < status["processed"] < 60_000, status
    finally:
        proc.send_signal(signal.SIGKILL)  # no shutdown, no cleanup: as if the machine lost power
        proc.wait(10)
    assert cluster.psql("SELECT count(*), max(change_id) FROM feature", "geotwin_faults") == before

    async def after_restart() -> dict:
        """The job as shown once PostgreSQL has noticed the dead connection (at once when it was waiting for
        the client; within client_connection_check_interval when it was moving a batch) and rolled back."""
        async with app_client(cluster, "geotwin_faults") as (_, client):
            deadline = time.monotonic() + 10
            while (shown := (await client.get(job.replace(base, ""), headers=auth)).json())["status"] == "running" \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return shown
    started_waiting = time.monotonic()
    shown = asyncio.run(after_restart())
    assert shown["status"] == "failed" and "nothing was written" in shown["error"], shown
    assert time.monotonic() - started_waiting < 5, "the orphaned import ran on after its service died"
    assert cluster.psql("SELECT count(*), max(change_id) FROM feature", "geotwin_faults") == before


async def test_a_statement_stops_soon_after_its_worker_is_gone(cluster, faults_db):
    """A worker that dies in the middle of a long statement (an import's batch, an analysis) must not leave it
    running, and holding its locks, until it would have ended: PostgreSQL checks for the vanished client
    every second (client_connection_check_interval on every pooled connection)."""
    pool = await create_pool(settings_for(cluster, "geotwin_faults").db, max_size=2)
    try:
        async with pool.acquire() as watcher:
            conn = await pool.acquire()
            pid = conn.get_server_pid()
            running = asyncio.create_task(conn.execute("SELECT pg_sleep(60)"))
            await asyncio.sleep(0.3)
            conn._transport.abort()  # noqa: SLF001 - the socket closed as by a killed process: no goodbye
            started = time.monotonic()
            while await watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                assert time.monotonic() - started < 5, "the statement ran on without its client"
                await asyncio.sleep(0.1)
            with pytest.raises(Exception):  # noqa: B017 - whichever error the aborted connection reports
                await running
    finally:
        pool.terminate()


async def test_a_database_that_does_not_exist_is_a_json_503_everywhere(cluster, faults_db):
    """A wrong PGDATABASE (or a refused login) is an outage to callers: 503 with Retry-After as JSON on
    items, tiles and metadata, and /ready names the cause for the administrator. Found answering tiles with
    a plain-text 500."""
    async with app_client(cluster, "geotwin_no_such_db") as (_, client):
        ready = await client.get("/ready")
        assert ready.status_code == 503 and "InvalidCatalogName" in ready.json()["description"]
        for path in (SITES, f"{SITES_HALLE}/tiles/WebMercatorQuad/13/2744/4394", f"{SITES_HALLE}/queryables",
                     "/municipalities/halle/collections"):
            r = await client.get(path)
            assert r.status_code == 503 and r.headers["retry-after"], (path, r.status_code, r.text[:200])
            assert r.json()["code"] == "ServiceUnavailable"


async def test_the_database_over_a_unix_socket(cluster, faults_db):
    """PGHOST may be a socket directory, as with libpq (a database on the same machine)."""
    db = DatabaseSettings(host=str(cluster.datadir), port=cluster.port, user="geotwin", database="geotwin_faults")
    assert db.dsn().startswith("postgresql://geotwin@/geotwin_faults?host=/")
    odd = DatabaseSettings(host="db.example", port=5432, user="geo twin", password="p@ss/w:rd", database="gt")
    assert odd.dsn() == "postgresql://geo%20twin:p%40ss%2Fw%3Ard@db.example:5432/gt"
    settings = settings_for(cluster, "geotwin_faults")
    settings.db = db
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        assert (await client.get("/ready")).json()["status"] == "ready"
        assert (await client.get(SITES, params={"limit": 1})).status_code == 200
