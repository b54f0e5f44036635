"""Faults the service must survive without hanging: an expensive statement is cut off by the statement
timeout, an exhausted pool answers 503 after a bounded wait, and both leave the service healthy."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import app_client

SITES = "/region/collections/commercial-sites/items"


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
