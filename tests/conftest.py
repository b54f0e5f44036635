"""A real PostGIS for the whole session: started here, migrated with Alembic, demo data loaded once.

The app comes from the factory with the test's own settings and is driven in-process through httpx;
clients that need a socket (GDAL, OWSLib) get a live uvicorn on a free port.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from openapi_schema_validator import OAS30Validator

from service.localdb import LocalCluster
from service.main import create_app
from service.migrate import upgrade
from service.settings import ApiSettings, AuthSettings, DatabaseSettings, LimitSettings, Settings

ROOT = Path(__file__).resolve().parent.parent

# Each test process (an xdist worker) has a temporary directory of its own, for it and the servers it starts:
# a test that looks for what an import left behind, and a service's start that sweeps up uploads a dead one
# left (service.jobs), see only their own process's files, not those of an import the other worker runs.
TMP = tempfile.mkdtemp(prefix="geotwin-tests-")
os.chmod(TMP, 0o755)  # as root, the test cluster below it runs as `postgres`
os.environ["TMPDIR"] = tempfile.tempdir = TMP


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(TMP, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    base = tempfile.mkdtemp(prefix="geotwin-test-")
    os.chmod(base, 0o755)  # as root, the cluster runs as `postgres`, which must reach its directory
    c = LocalCluster(Path(base) / "pg", free_port())
    c.start()
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)  # every run's databases: gigabytes after a few dozen runs


@pytest.fixture(scope="session")
def empty_db(cluster: LocalCluster):
    """A factory for fresh, empty databases (PostGIS extension not yet created)."""
    counter = iter(range(1000))

    def make() -> str:
        name = f"empty_{next(counter)}"
        cluster.psql(f'DROP DATABASE IF EXISTS "{name}"')
        cluster.psql(f'CREATE DATABASE "{name}"')
        return cluster.url(name)

    return make


@pytest.fixture(scope="session")
def db_url(cluster: LocalCluster) -> str:
    """The demo database: migrated from empty and loaded with the demo fixtures."""
    cluster.psql('CREATE DATABASE "geotwin_test"')
    url = cluster.url("geotwin_test")
    upgrade(url)
    import asyncio

    from service.cli import _load_demo

    asyncio.run(_load_demo(url))
    return url


@pytest.fixture(scope="session")
def demo_db(cluster: LocalCluster):
    """A factory for databases of their own, migrated and loaded with the demo (for tests that write)."""

    def make(name: str) -> str:
        cluster.psql(f'DROP DATABASE IF EXISTS "{name}"')
        cluster.psql(f'CREATE DATABASE "{name}"')
        url = cluster.url(name)
        upgrade(url)
        import asyncio

        from service.cli import _load_demo

        asyncio.run(_load_demo(url))
        return url

    return make


def settings_for(cluster: LocalCluster, database: str = "geotwin_test", auth: AuthSettings | None = None,
                 replicas: list[str] | None = None, db_options: dict | None = None,
                 limits: LimitSettings | None = None, **api: object) -> Settings:
    """Settings for an app on `database`; db_options by their environment names (GEOTWIN_DB_POOL_MAX=…).
    No rate limits unless given: the suite writes faster than any planner (test_security tests them)."""
    db = DatabaseSettings(host="127.0.0.1", port=cluster.port, user="geotwin", password="", database=database,
                          GEOTWIN_DB_REPLICAS=replicas or [], **(db_options or {}))
    return Settings(db=db, api=ApiSettings(**api), auth=auth or AuthSettings(), public_url="",
                    limits=limits or LimitSettings(writes="", expensive=""))


@asynccontextmanager
async def app_client(cluster: LocalCluster, database: str, replicas: list[str] | None = None,
                     db_options: dict | None = None, limits: LimitSettings | None = None,
                     **api: object) -> AsyncIterator[tuple]:
    """An app on a database of its own, with its lifespan, and an in-process client: (app, client)."""
    app = create_app(settings_for(cluster, database, replicas=replicas, db_options=db_options, limits=limits,
                                  **api))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        yield app, client


async def new_key(dsn: str, municipality: str, role: str, label: str = "") -> str:
    """An API key straight from the database layer (the API and CLI ways are tested in test_publishing)."""
    import asyncpg

    from service.sql.keys import create_key

    conn = await asyncpg.connect(dsn)
    try:
        return (await create_key(conn, municipality, role, label))["key"]
    finally:
        await conn.close()


def serve_in_thread(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    """An app on a real socket (GDAL, OWSLib, QGIS, browsers): (base URL, server, thread)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture(scope="session")
async def app(cluster: LocalCluster, db_url: str):
    application = create_app(settings_for(cluster))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture(scope="session")
def live_server(cluster: LocalCluster, db_url: str) -> Iterator[str]:
    """The service on a real socket, for GDAL, OWSLib and browsers."""
    url, server, thread = serve_in_thread(create_app(settings_for(cluster)))
    yield url
    server.should_exit = True
    thread.join(timeout=10)


async def wait_until(page, expression: str, timeout: float = 30) -> None:
    """Until the page's `expression` is true. Polled through page.evaluate: Playwright's wait_for_function
    compiles its predicate inside the page, which the pages' Content-Security-Policy (no eval) forbids."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {expression}")
        await asyncio.sleep(0.05)


def run_qgis(script: str, *args: str, home: Path) -> dict:
    """One of the tests' QGIS scripts under Debian's Python with QGIS's bindings: its last output line, as JSON.
    QGIS keeps its profile, caches and Qt's temporary files under `home` (a test's tmp_path), not in /tmp."""
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home),
           "XDG_RUNTIME_DIR": str(home)}
    result = subprocess.run(["/usr/bin/python3", str(ROOT / "tests" / script), *args], capture_output=True,
                            text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def serve_cli(database: str, cluster: LocalCluster, *args: str, env: dict[str, str] | None = None,
              **popen: object) -> tuple[str, subprocess.Popen]:
    """`geotwin serve` as a process of its own on a free port, once it is ready: (base URL, process)."""
    port = free_port()
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin",
           "PGDATABASE": database, "PGPASSWORD": "", **(env or {})}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "geotwin"), "serve", "--port", str(port), *args],
                            env=env, **popen)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return base, proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the service did not start")
        time.sleep(0.2)


# Everything a database holds that must survive (a restore, a migration) or stay untouched (a refused
# request): each collection's metadata and version, every feature with geometry and change id, the change
# log, municipalities and keys. Equal fingerprints = nothing lost, nothing written.
FINGERPRINT = """
SELECT (SELECT json_agg(t ORDER BY t.id) FROM (SELECT id, slug, title, description, layer_type, licence,
          attribution, keywords, visibility, version, feature_count, bbox FROM collection) t)::text,
       (SELECT md5(string_agg(f.id || f.fid || ST_AsEWKB(f.geom)::text || f.properties::text || f.change_id, ','
          ORDER BY f.id)) FROM feature f),
       (SELECT md5(string_agg(h.change_id || h.op || h.actor || coalesce(h.properties::text, ''), ','
          ORDER BY h.change_id)) FROM feature_change h),
       (SELECT count(*) FROM feature_change), (SELECT count(*) FROM municipality), (SELECT count(*) FROM api_key)
"""


async def fingerprint(dsn: str) -> tuple:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return tuple(await conn.fetchrow(FINGERPRINT))
    finally:
        await conn.close()


async def openapi_misfits(client: httpx.AsyncClient, doc_path: str, method: str, path: str, status: str,
                          body: object, media_type: str = "application/json") -> list[str]:
    """Where `body` departs from what the OpenAPI document at `doc_path` says `method path` answers with
    `status` (OpenAPI 3.0 schema rules); empty when it fits."""
    doc = (await client.get(doc_path)).json()
    schema = doc["paths"][path][method]["responses"][status]["content"][media_type]["schema"]
    validator = OAS30Validator({**schema, "components": doc["components"]})
    return [f"{list(e.path)}: {e.message[:200]}" for e in validator.iter_errors(body)]


async def announced(app, before: int) -> None:
    """Wait (bounded) until the database's change announcement reached the app."""
    cache = app.state.catalog_cache
    for _ in range(100):
        if cache.generation > before:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no change announcement within 5 s")
