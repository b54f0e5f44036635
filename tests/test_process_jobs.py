"""Asynchronous process runs (OGC API – Processes jobs): `Prefer: respond-async` answers 201 with a job whose
results equal the synchronous answer; bad inputs are still a 400 and start nothing; a job is its owner's; a job
whose process died is shown failed."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.conftest import app_client, new_key, openapi_misfits

ASYNC = {"Prefer": "respond-async"}
CONFLICTS = {"sites": "/region/collections/commercial-sites", "constraints": "/region/collections/ecological-zones",
             "defaultBuffer": 250}


@pytest.fixture(scope="module")
def jobs_db(demo_db):
    return demo_db("geotwin_jobs")


@pytest.fixture(scope="module")
async def api(cluster, jobs_db):
    async with app_client(cluster, "geotwin_jobs") as (_, client):
        yield client


async def finished(client, location: str, headers: dict | None = None) -> dict:
    for _ in range(300):
        status = (await client.get(location, headers=headers)).json()
        if status["status"] not in ("accepted", "running"):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"the job did not finish: {status}")


async def job_count(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM process_job")
    finally:
        await conn.close()


@pytest.mark.parametrize(("process", "inputs", "f"), [
    ("conflicts", CONFLICTS, None),
    ("conflicts", CONFLICTS, "csv"),
    ("statistics", {"municipalities": ["halle", "leipzig"]}, None),
    ("site-search", {"minAreaHa": 1, "rankBy": "area", "limit": 5}, None),
])
async def test_async_results_equal_the_synchronous_answer(api, process, inputs, f):
    params = {"f": f} if f else {}
    sync = await api.post(f"/processes/{process}/execution", params=params, json={"inputs": inputs})
    assert sync.status_code == 200, sync.text
    started = await api.post(f"/processes/{process}/execution", params=params, json={"inputs": inputs},
                             headers=ASYNC)
    assert started.status_code == 201, started.text
    assert started.headers["preference-applied"] == "respond-async"
    info = started.json()
    assert info["status"] in ("accepted", "running", "successful") and info["processID"] == process
    assert started.headers["location"].endswith(f"/jobs/{info['jobID']}")
    done = await finished(api, started.headers["location"])
    assert done["status"] == "successful", done
    for path, method, status, body in (("/processes/{process_id}/execution", "post", "201", info),
                                       ("/jobs/{job_id}", "get", "200", done),
                                       ("/jobs", "get", "200", (await api.get("/jobs")).json()),
                                       ("/processes", "get", "200", (await api.get("/processes")).json()),
                                       ("/processes/{process_id}", "get", "200",
                                        (await api.get(f"/processes/{process}")).json())):
        assert not await openapi_misfits(api, "/api", method, path, status, body), path
    results_link = next(x["href"] for x in done["links"] if x["rel"].endswith("/results"))
    results = await api.get(results_link)
    assert results.status_code == 200
    assert results.headers["content-type"] == sync.headers["content-type"]
    assert results.content == sync.content
    if f == "csv":
        assert 'filename="conflicts.csv"' in results.headers["content-disposition"]


@pytest.mark.parametrize("f", [None, "csv"])
async def test_a_job_asked_for_a_results_document_answers_with_one(api, f):
    """A job started with `response: document` keeps to it: its results are the document
    (/req/core/job-results-async-document), and the status links them as JSON."""
    params = {"f": f} if f else {}
    body = {"inputs": CONFLICTS, "response": "document"}
    sync = await api.post("/processes/conflicts/execution", params=params, json=body)
    started = await api.post("/processes/conflicts/execution", params=params, json=body, headers=ASYNC)
    assert started.status_code == 201, started.text
    done = await finished(api, started.headers["location"])
    assert done["status"] == "successful" and done["inputs"]["response"] == "document", done
    link = next(x for x in done["links"] if x["rel"].endswith("/results"))
    assert link["type"] == "application/json"
    results = await api.get(link["href"])
    assert results.status_code == 200 and results.headers["content-type"] == "application/json"
    assert results.json() == sync.json()
    assert results.json()["result"]["mediaType"] == ("text/csv" if f else "application/json")
    assert not await openapi_misfits(api, "/api", "get", "/jobs/{job_id}/results", "200", results.json())


@pytest.mark.parametrize(("inputs", "parameter"), [
    ({"sites": "/region/collections/nowhere", "constraints": CONFLICTS["constraints"]}, "sites"),
    ({**CONFLICTS, "defaultBuffer": -1}, "defaultBuffer"),
    ({**CONFLICTS, "sitesFilter": "area_net_ha > 'x'"}, "sitesFilter"),
])
async def test_bad_inputs_are_a_400_and_start_no_job(api, jobs_db, inputs, parameter):
    url = jobs_db
    before = await job_count(url)
    r = await api.post("/processes/conflicts/execution", json={"inputs": inputs}, headers=ASYNC)
    assert r.status_code in (400, 404), r.text
    assert r.json()["parameter"] == parameter
    assert await job_count(url) == before


async def test_a_job_is_its_owners(api, jobs_db):
    halle = await new_key(jobs_db, "halle", "viewer", "Halle viewer")
    leipzig = await new_key(jobs_db, "leipzig", "editor", "Leipzig editor")
    mine, theirs = {"X-API-Key": halle}, {"X-API-Key": leipzig}
    started = await api.post("/processes/statistics/execution", json={"inputs": {}}, headers={**ASYNC, **mine})
    assert started.status_code == 201
    location = started.headers["location"]
    job = started.json()["jobID"]
    await finished(api, location, mine)
    for headers in (None, theirs):
        assert (await api.get(location, headers=headers)).status_code == 404
        assert (await api.get(location + "/results", headers=headers)).status_code == 404
        assert (await api.delete(location, headers=headers)).status_code == 404
    listed = (await api.get("/jobs", headers=mine)).json()["jobs"]
    assert [j["jobID"] for j in listed] == [job]
    assert (await api.get("/jobs", headers=theirs)).json()["jobs"] == []
    assert (await api.get("/jobs")).json()["jobs"] == []  # anonymous runs are reached by their id only
    for query, name in (("offset=0.0", "offset"), ("limit=1e2", "limit"), ("page=2", "page")):
        bad = await api.get(f"/jobs?{query}", headers=mine)  # found by the fuzz test: "0.0" was taken as 0
        assert bad.status_code == 400 and bad.json()["parameter"] == name, bad.text
    dismissed = await api.delete(location, headers=mine)
    assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    gone = await api.get(location + "/results", headers=mine)
    assert gone.status_code == 404 and gone.json()["type"].endswith("/result-not-ready")


async def test_jobs_beyond_the_slots_wait_accepted_and_a_dismissed_one_never_runs(cluster, jobs_db):
    key = await new_key(jobs_db, "halle", "viewer")
    mine = {"Authorization": f"Bearer {key}"}
    async with app_client(cluster, "geotwin_jobs") as (app, client):
        slots = app.state.job_slots = asyncio.Semaphore(0)  # every slot taken
        first, second = [(await client.post("/processes/statistics/execution", json={"inputs": {}},
                                             headers={**ASYNC, **mine})).headers["location"] for _ in range(2)]
        await asyncio.sleep(0.3)
        assert [(await client.get(u, headers=mine)).json()["status"] for u in (first, second)] == ["accepted"] * 2
        assert (await client.delete(second, headers=mine)).json()["status"] == "dismissed"
        slots.release()
        slots.release()
        assert (await finished(client, first, mine))["status"] == "successful"
        await asyncio.sleep(0.3)
        assert (await client.get(second, headers=mine)).json()["status"] == "dismissed"
        assert (await client.get(f"{second}/results", headers=mine)).status_code == 404


async def test_a_job_whose_process_died_is_failed_and_says_so(api, jobs_db):
    conn = await asyncpg.connect(jobs_db)
    try:
        await conn.execute("INSERT INTO process_job (id, process_id, status, started_at, heartbeat_at) VALUES "
                           "('0123456789abcdef0123456789abcdef', 'conflicts', 'running', now() - interval '1 hour', "
                           "now() - interval '1 hour')")
    finally:
        await conn.close()
    status = (await api.get("/jobs/0123456789abcdef0123456789abcdef")).json()
    assert status["status"] == "failed" and "restarted" in status["message"]
    results = await api.get("/jobs/0123456789abcdef0123456789abcdef/results")
    assert results.status_code == 503 and results.headers["retry-after"]
    assert (await api.get("/jobs/not-a-job")).status_code == 404


async def test_processes_offer_async_and_the_root_links_them(api):
    doc = (await api.get("/processes/conflicts")).json()
    assert doc["jobControlOptions"] == ["sync-execute", "async-execute"]
    root = (await api.get("/")).json()
    rels = {x["rel"] for x in root["links"]}
    assert "http://www.opengis.net/def/rel/ogc/1.0/processes" in rels
    assert "http://www.opengis.net/def/rel/ogc/1.0/job-list" in rels
    conformance = (await api.get("/conformance")).json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/job-list" in conformance
