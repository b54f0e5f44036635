"""schemathesis over the whole OpenAPI document: every operation, reads and writes, with a platform
administrator's key (schemathesis adds its own attempts without and with bad credentials), on a database of
its own. Bounded to fit in CI."""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from service.main import create_app
from service.openapi import service_openapi
from service.settings import Settings
from tests.conftest import new_key, serve_in_thread, settings_for

DATABASE = "geotwin_fuzz"
# Examples per operation: 20 in CI (about 3,100 requests in all); GEOTWIN_FUZZ_EXAMPLES=150 for a deep run
# (about 12,000; run with -s to see the count by status).
EXAMPLES = int(os.environ.get("GEOTWIN_FUZZ_EXAMPLES", "20"))
STATUSES: Counter[int] = Counter()


@pytest.fixture(scope="module")
def fuzz_target(cluster, demo_db):
    url = demo_db(DATABASE)
    key = asyncio.run(new_key(url, None, "platform", "fuzz"))
    base, server, thread = serve_in_thread(create_app(settings_for(cluster, DATABASE)))
    yield base, key
    print(f"\nfuzz: {sum(STATUSES.values())} requests, by status {dict(sorted(STATUSES.items()))}")
    server.should_exit = True
    thread.join(timeout=10)


# The document does not depend on the database: the one `/api` serves, taken from the application itself.
schema = schemathesis.openapi.from_dict(service_openapi(create_app(Settings())))


# Every check but positive_data_acceptance: what is valid beyond the schema (an existing municipality, a
# parseable CQL2 filter, a file name with a known extension, If-Match) is answered 400/404/428 naming the
# parameter, which the status-code check holds against the document. And but missing_required_header, which
# wants a 4xx of its own list where the one required header, If-Match, is missing: the service answers 428
# Precondition Required (RFC 6585), as the document says.
EXCLUDED = [schemathesis.checks.positive_data_acceptance, schemathesis.checks.missing_required_header]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api(case, fuzz_target):
    base, key = fuzz_target
    response = case.call_and_validate(base_url=base, headers={"X-API-Key": key}, excluded_checks=EXCLUDED)
    STATUSES[response.status_code] += 1


def test_405_and_options_list_every_method_of_the_path(fuzz_target):
    import httpx

    base, key = fuzz_target
    r = httpx.request("POST", f"{base}/jobs/x", headers={"X-API-Key": key})
    assert r.status_code == 405 and r.headers["Allow"] == "DELETE, GET, HEAD", r.headers.get("Allow")
    r = httpx.request("OPTIONS", f"{base}/jobs/x", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.headers["Allow"] == "DELETE, GET, HEAD, OPTIONS", r.headers.get("Allow")
    r = httpx.request("OPTIONS", f"{base}/municipalities/halle/collections/commercial-sites/items/gs-001")
    assert r.status_code == 200 and r.headers["Allow"] == "GET, HEAD, OPTIONS", "what an anonymous caller may do"
    r = httpx.request("OPTIONS", f"{base}/municipalities/halle/collections/commercial-sites/items/gs-001",
                      headers={"X-API-Key": key})
    assert r.status_code == 200 and r.headers["Allow"] == "DELETE, GET, HEAD, PATCH, PUT, OPTIONS", \
        r.headers.get("Allow")
