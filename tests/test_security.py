"""Access control measured: an authorisation matrix generated from the application's own route table (every
route × anonymous, viewer, editor, admin, another municipality's editor), rate limits per key and address,
security headers on HTML pages, CORS closed for writes from foreign origins."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from service.errors import api_routes
from service.settings import LimitSettings
from tests.conftest import app_client, free_port, new_key
from tests.test_operations import metric

# Sample values for path parameters: a Halle collection that exists, a feature that does not need to.
SAMPLE = {"municipality": "halle", "collectionId": "commercial-sites", "featureId": "nope",
          "tileMatrixSetId": "WebMercatorQuad", "tileMatrix": "13", "tileRow": "2723", "tileCol": "4370",
          "styleId": "default", "process_id": "statistics", "job_id": "0" * 32, "keyId": "999999",
          "name": "commercial-site", "jobId": "0" * 32, "changeId": "1", "importId": "0" * 32}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
ROLES = ("anonymous", "viewer", "editor", "admin", "leipzig-editor", "platform")


@pytest.fixture(scope="module")
def sec_db(demo_db):
    return demo_db("geotwin_sec")


@pytest.fixture(scope="module")
async def keyed(cluster, sec_db):
    keys = {"viewer": await new_key(sec_db, "halle", "viewer", "v"),
            "editor": await new_key(sec_db, "halle", "editor", "e"),
            "admin": await new_key(sec_db, "halle", "admin", "a"),
            "leipzig-editor": await new_key(sec_db, "leipzig", "editor", "le")}
    import asyncpg

    from service.sql.keys import create_key

    conn = await asyncpg.connect(sec_db)
    try:
        keys["platform"] = (await create_key(conn, None, "platform", "p"))["key"]
    finally:
        await conn.close()
    async with app_client(cluster, "geotwin_sec") as (app, client):
        yield app, client, keys


def expected(method: str, path: str, role: str) -> set[int] | str:
    """What a caller in `role` may get: 'allowed' (anything but 401/403), or the refusal codes."""
    if method not in WRITES or re.match(r"^/processes/[^/]+/execution$", path) or re.match(r"^/jobs/", path):
        if path.startswith("/admin") or "/keys" in path:
            pass  # reading keys and the platform admin needs rights too
        elif "/imports" in path and path.startswith("/municipalities/"):
            pass
        else:
            return "allowed"
    if role == "anonymous":
        return {401}
    if path.startswith("/admin"):
        return "allowed" if role == "platform" else {403}
    if path.startswith("/municipalities/{municipality}"):
        if "/keys" in path or (path.endswith(("/collections", "/collections/{collectionId}")) and method in WRITES):
            need = {"admin", "platform"}
        elif "/imports" in path or method in WRITES:
            need = {"editor", "admin", "platform"}
        else:
            return "allowed"
        return "allowed" if role in need else {403}
    return "allowed" if role == "platform" else {403}


def routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every API route, through included routers (ours carry full paths)."""
    wrappers = [r for r in app.routes if hasattr(r, "original_router")]
    assert not any(getattr(w.include_context, "prefix", "") for w in wrappers), "routers carry full paths"
    return [(method, route.path_format) for route in api_routes(app.routes)
            for method in sorted(route.methods - {"HEAD"})]


async def test_the_authorisation_matrix_of_every_route(keyed):
    app, client, keys = keyed
    table = routes(app)
    assert len(table) > 60  # the whole API, read from the application itself
    checked = 0
    for method, template in table:
        path = template
        for name, value in SAMPLE.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, f"add a sample value for {template}"
        for role in ROLES:
            headers = {"X-API-Key": keys[role]} if role != "anonymous" else {}
            body = b"{}" if method in WRITES else None
            r = await client.request(method, path, headers={**headers, "Content-Type": "application/json"},
                                     content=body)
            want = expected(method, template, role)
            if want == "allowed":
                assert r.status_code not in (401, 403), (method, template, role, r.status_code, r.text[:200])
            else:
                assert r.status_code in want, (method, template, role, r.status_code, r.text[:200])
            assert r.status_code < 500, (method, template, role, r.status_code, r.text[:300])
            checked += 1
    assert checked == len(table) * len(ROLES)


# Routes that take any query parameter: probes and Prometheus' scrape (which may filter with `name[]`).
OPS = {"/health", "/ready", "/metrics"}
# Pages that come in HTML alone: no `f`. Downloads whose `f` names a file format, and a process's result, which
# comes in the format its execution chose: no `f=json`.
HTML_ONLY = {"/viewer", "/processes/statistics/chart", "/processes/conflicts/map"}
OWN_FORMAT = {"/jobs/{job_id}/results", "/municipalities/{municipality}/collections/{collectionId}/export",
              "/region/collections/{collectionId}/export"}


async def test_every_read_refuses_a_parameter_it_does_not_know_and_a_format_it_does_not_offer(keyed):
    """A misspelt parameter must never be ignored (`sitez=` would draw the wrong map, `f=html` answer JSON):
    every GET route, read from the application, answers 400 naming it. Every route but the HTML pages takes
    `f` (OGC clients append `f=json`), and refuses a format it does not offer."""
    app, client, keys = keyed
    headers = {"X-API-Key": keys["platform"]}
    checked, wrong = 0, []
    for method, template in routes(app):
        if method != "GET" or template in OPS:
            continue
        path = template
        for name, value in SAMPLE.items():
            path = path.replace("{" + name + "}", value)
        for name in ("zzz", "f"):
            r = await client.get(path, params={name: "nonsense"}, headers=headers)
            if r.status_code != 400 or r.json().get("parameter") != name:
                wrong.append((template, name, r.status_code, r.text[:120]))
        if template not in HTML_ONLY | OWN_FORMAT:
            r = await client.get(path, params={"f": "json"}, headers=headers)
            if r.status_code == 400:
                wrong.append((template, "f=json", r.status_code, r.text[:120]))
        checked += 1
    assert not wrong, "\n".join(map(str, wrong))
    assert checked > 40


async def test_rate_limits_per_key_and_per_address(cluster, sec_db):
    editor = await new_key(sec_db, "halle", "editor", "busy")
    other = await new_key(sec_db, "halle", "editor", "calm")
    limits = LimitSettings(writes="3/minute", expensive="2/minute")
    async with app_client(cluster, "geotwin_sec", limits=limits) as (_, client):
        path = "/municipalities/halle/collections/commercial-sites/items/nope"
        codes = [(await client.delete(path, headers={"X-API-Key": editor, "If-Match": '"1"'})).status_code
                 for _ in range(4)]
        assert codes[:3] != [429] * 3 and codes[3] == 429, codes
        refused = await client.delete(path, headers={"X-API-Key": editor, "If-Match": '"1"'})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "at most 3 per 1 minute" in refused.json()["description"]
        # The same address is over the limit too (per address), so another key from it is refused as well;
        # reads are never limited.
        assert (await client.delete(path, headers={"X-API-Key": other, "If-Match": '"1"'})).status_code == 429
        assert (await client.get("/municipalities/halle/collections")).status_code == 200
        runs = [(await client.post("/processes/statistics/execution", json={"inputs": {}})).status_code
                for _ in range(3)]
        assert runs == [200, 200, 429]


@pytest.fixture
def redis_server(tmp_path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A Redis (Debian's redis-server) of the test's own, on a free port, keeping nothing on disk."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0", proc
    proc.kill()
    proc.wait()


async def test_workers_share_rate_limits_through_redis_and_serve_on_without_it(cluster, sec_db, redis_server,
                                                                               caplog):
    url, redis = redis_server
    editor = await new_key(sec_db, "halle", "editor", "shared")
    limits = LimitSettings(writes="3/minute", expensive="", storage=url)
    path = "/municipalities/halle/collections/commercial-sites/items/nope"
    headers = {"X-API-Key": editor, "If-Match": '"1"'}
    # Two apps on one Redis, as two workers (or two replicas) are: the limit holds for both together.
    async with app_client(cluster, "geotwin_sec", limits=limits) as (_, one), \
            app_client(cluster, "geotwin_sec", limits=limits) as (_, two):
        codes = [(await client.delete(path, headers=headers)).status_code for client in (one, two, one, two)]
        assert 429 not in codes[:3] and codes[3] == 429, codes
        refused = await one.delete(path, headers=headers)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1

        # Redis goes away: requests are served (not counted), and the log and the metrics say so.
        before = metric((await one.get("/metrics")).text, "geotwin_rate_limit_storage_failures_total")
        redis.kill()
        redis.wait()
        with caplog.at_level(logging.WARNING, logger="geotwin.access"):
            answers = [(await client.delete(path, headers=headers)).status_code for client in (one, two, one)]
        assert answers == [404, 404, 404], answers
        warnings = [r.getMessage() for r in caplog.records if r.name == "geotwin.access"]
        assert len(warnings) == 2 and "redis://127.0.0.1" in warnings[0], warnings  # once per worker, then quiet
        assert metric((await one.get("/metrics")).text, "geotwin_rate_limit_storage_failures_total") - before == 2


def test_the_rate_limit_storage_must_be_one_the_service_knows():
    with pytest.raises(ValueError, match="memcached://m:11211"):
        LimitSettings(storage="memcached://m:11211")


async def test_html_pages_carry_security_headers_and_scripts_their_nonce(keyed):
    _, client, _ = keyed
    for path in ("/viewer", "/municipalities/halle/collections?f=html", "/processes/statistics/chart", "/api?f=html"):
        r = await client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
        assert "object-src 'none'" in csp and r.headers["x-content-type-options"] == "nosniff"
        for tag in re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", r.text):
            assert f'nonce="{nonce}"' in tag, (path, tag)


async def test_cors_reads_open_writes_closed_to_foreign_origins(keyed):
    _, client, keys = keyed
    origin = {"Origin": "https://example.org"}
    read = await client.get("/municipalities/halle/collections/commercial-sites/items", headers=origin)
    assert read.headers["access-control-allow-origin"] == "*"
    preflight = await client.options("/municipalities/halle/collections/commercial-sites/items", headers={
        **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"})
    assert preflight.status_code == 400 or "POST" not in preflight.headers.get("access-control-allow-methods", "")
