"""History and the change feed: versions of a feature, items as of a past time, and a neighbour mirroring a
collection into a database of its own through the feed (incrementally), compared feature by feature."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from service.auth import Principal
from service.main import create_app
from service.migrate import upgrade
from service.mirror import mirror
from service.sql.write import upsert_municipality
from tests.conftest import app_client, new_key, settings_for

SITES = "/municipalities/halle/collections/commercial-sites"
GEOJSON = {"Content-Type": "application/geo+json"}


def site(fid: str, name: str, x: float = 11.95) -> dict:
    d = 0.003
    return {"type": "Feature", "id": fid, "geometry": {"type": "Polygon", "coordinates": [
        [[x, 51.45], [x + d, 51.45], [x + d, 51.45 + d], [x, 51.45 + d], [x, 51.45]]]},
        "properties": {"name": name, "area_gross_ha": 4.0, "zoning": "GE", "availability": "verfuegbar",
                       "servicing": "erschlossen"}}


@pytest.fixture(scope="module")
def hist_db(demo_db):
    return demo_db("geotwin_hist")


@pytest.fixture(scope="module")
async def hist(cluster, hist_db):
    editor = await new_key(hist_db, "halle", "editor", "Planungsamt")
    async with app_client(cluster, "geotwin_hist") as (_, client):
        yield client, {"Authorization": f"Bearer {editor}", **GEOJSON}


async def test_versions_and_items_as_of_a_past_time(hist):
    client, editor = hist
    r = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site("v-1", "Erste Fassung")))
    etag = r.headers["etag"]
    await asyncio.sleep(0.05)
    between = datetime.now(UTC)
    await asyncio.sleep(0.05)
    r = await client.put(f"{SITES}/items/v-1", headers={**editor, "If-Match": etag},
                         content=json.dumps(site("v-1", "Zweite Fassung")))
    r = await client.delete(f"{SITES}/items/v-1", headers={**editor, "If-Match": r.headers["etag"]})
    assert r.status_code == 204

    versions = (await client.get(f"{SITES}/items/v-1/versions")).json()["versions"]
    assert [v["op"] for v in versions] == ["insert", "update", "delete"]
    assert [v["feature"]["properties"]["name"] for v in versions[:2]] == ["Erste Fassung", "Zweite Fassung"]
    assert versions[2]["feature"] is None and "actor" not in versions[0], "the public sees no actor"
    mine = (await client.get(f"{SITES}/items/v-1/versions", headers=editor)).json()["versions"]
    assert all("Planungsamt" in v["actor"] for v in mine)

    then = (await client.get(f"{SITES}/items", params={"asOf": between.isoformat(), "limit": 1000})).json()
    names = {f["id"]: f["properties"]["name"] for f in then["features"]}
    assert names["v-1"] == "Erste Fassung" and "gs-001" in names
    assert then["numberMatched"] == len(then["features"])
    now = (await client.get(f"{SITES}/items", params={"limit": 1000})).json()
    assert "v-1" not in {f["id"] for f in now["features"]}
    filtered = (await client.get(f"{SITES}/items", params={"asOf": between.isoformat(),
                                                            "filter": "name LIKE 'Erste%'"})).json()
    assert [f["id"] for f in filtered["features"]] == ["v-1"]
    bad = await client.get(f"{SITES}/items", params={"asOf": "yesterday"})
    assert bad.status_code == 400 and bad.json()["parameter"] == "asOf"
    assert (await client.get(f"{SITES}/items/never/versions")).status_code == 404


async def test_a_feature_s_versions_as_a_page_say_what_changed(hist):
    """A planner follows the item page's link: each version, newest first, with what it changed (a property's
    title, before and after, the geometry) and a link to the collection as it was; who, for members alone."""
    client, editor = hist
    r = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site("p-1", "Alte Ziegelei")))
    moved = site("p-1", "Alte Ziegelei", x=11.96)
    moved["properties"]["availability"] = "reserviert"
    r = await client.put(f"{SITES}/items/p-1", headers={**editor, "If-Match": r.headers["etag"]},
                         content=json.dumps(moved))
    assert r.status_code == 200
    german = {"Accept-Language": "de-DE,de;q=0.9"}
    item = (await client.get(f"{SITES}/items/p-1", params={"f": "html"}, headers=german)).text
    assert f'href="http://testserver{SITES}/items/p-1/versions?f=html"' in item

    page = await client.get(f"{SITES}/items/p-1/versions", params={"f": "html"}, headers=german)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "Versionen von Alte Ziegelei" in html and "2 Versionen, die neueste zuerst." in html
    assert html.index("geändert") < html.index("angelegt"), "newest first"
    assert "Verfügbarkeit</span>: verfügbar" in html and "→ reserviert" in html and "die Geometrie" in html
    assert "<th>Von</th>" not in html and "Planungsamt" not in html, "the public sees no actor"
    assert "asOf=" in html and "f=html" in html
    mine = (await client.get(f"{SITES}/items/p-1/versions", params={"f": "html"},
                             headers={**german, "Authorization": editor["Authorization"]})).text
    assert "<th>Von</th>" in mine and "Planungsamt" in mine
    listed = (await client.get(f"{SITES}/items/p-1/versions")).json()
    assert [v["op"] for v in listed["versions"]] == ["insert", "update"], "JSON stays oldest first"
    assert any(lk["rel"] == "alternate" and lk["type"] == "text/html" for lk in listed["links"])
    assert (await client.get(f"{SITES}/items/p-1/versions", params={"f": "xml"})).status_code == 400

    # Deleted and created again under the same id: compared with what it was when deleted.
    now = await client.get(f"{SITES}/items/p-1")
    await client.delete(f"{SITES}/items/p-1", headers={**editor, "If-Match": now.headers["etag"]})
    assert (await client.post(f"{SITES}/items", headers=editor,
                              content=json.dumps(site("p-1", "Neue Ziegelei", x=11.96)))).status_code == 201
    html = (await client.get(f"{SITES}/items/p-1/versions", params={"f": "html"}, headers=german)).text
    again = html[html.index("erneut angelegt"):html.index("gelöscht")]
    assert "gegenüber dem Stand beim Löschen:" in again and "Alte Ziegelei → Neue Ziegelei" in again
    assert "reserviert (reserviert) → verfügbar" in again
    assert "die Geometrie" not in again, "the geometry is where it was"


async def test_a_deleted_feature_s_link_says_when_and_leads_to_its_versions(hist):
    """A bookmark or a QGIS project still naming a deleted site: the 404 says when it went, and links its
    versions (JSON and the page); an id that never existed gets the plain 404."""
    client, editor = hist
    r = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site("g-1", "Abgerissen")))
    r = await client.delete(f"{SITES}/items/g-1", headers={**editor, "If-Match": r.headers["etag"]})
    assert r.status_code == 204
    gone = await client.get(f"{SITES}/items/g-1")
    body = gone.json()
    assert gone.status_code == 404 and body["parameter"] == "featureId"
    deleted = datetime.fromisoformat(body["deletedAt"])
    assert abs((datetime.now(UTC) - deleted).total_seconds()) < 60
    [versions] = [lk["href"] for lk in body["links"] if lk["rel"] == "version-history"]
    assert body["deletedAt"] in body["description"] and versions in body["description"]
    listed = (await client.get(versions.removeprefix("http://testserver"))).json()["versions"]
    assert [v["op"] for v in listed] == ["insert", "delete"]
    page = (await client.get(f"{SITES}/items/g-1", params={"f": "html"}, headers={"Accept-Language": "de"})).text
    assert f'href="{versions}?f=html"' in page and "Versionen: was sich wann änderte" in page
    when = deleted.astimezone(ZoneInfo("Europe/Berlin")).strftime("%d.%m.%Y, %H:%M:%S")
    assert "In dieser Sammlung gibt es kein Objekt mit dieser Kennung. Es wurde am " + when in page
    never = (await client.get(f"{SITES}/items/never-was")).json()
    assert "deletedAt" not in never and "links" not in never

    # The neighbour's bookmark in the regional view: the same, with the versions in Halle's collection.
    regional = await client.get("/region/collections/commercial-sites/items/halle:g-1")
    assert regional.status_code == 404 and regional.json()["deletedAt"] == body["deletedAt"]
    assert [lk["href"] for lk in regional.json()["links"] if lk["rel"] == "version-history"] == [versions]
    assert "deletedAt" not in (await client.get("/region/collections/commercial-sites/items/leipzig:g-1")).json()


async def test_change_feed_pages_in_order(hist):
    client, editor = hist
    latest = (await client.get(f"{SITES}/changes", params={"limit": 1})).json()["latestChangeId"]
    for i in range(5):
        await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site(f"feed-{i}", f"Feed {i}")))
    seen, url, params = [], f"{SITES}/changes", {"after": latest, "limit": 2}
    while url:
        page = (await client.get(url, params=params)).json()
        seen += page["changes"]
        url = next((lk["href"] for lk in page["links"] if lk["rel"] == "next"), None)
        params = None
    assert [c["id"] for c in seen] == [f"feed-{i}" for i in range(5)]
    assert [c["changeId"] for c in seen] == sorted(c["changeId"] for c in seen)
    # The next links name the change they follow by its id and its time, and the feed checks both.
    page = (await client.get(f"{SITES}/changes", params={"after": latest, "limit": 2})).json()
    follow = parse_qs(urlsplit(next(lk["href"] for lk in page["links"] if lk["rel"] == "next")).query)
    assert follow["after"] == [str(seen[1]["changeId"])] and follow["afterAt"] == [seen[1]["at"]]
    same = await client.get(f"{SITES}/changes", params={"after": seen[1]["changeId"], "afterAt": seen[1]["at"]})
    assert [c["id"] for c in same.json()["changes"]] == ["feed-2", "feed-3", "feed-4"]
    other = await client.get(f"{SITES}/changes", params={"after": seen[1]["changeId"], "afterAt": seen[0]["at"]})
    assert other.status_code == 410 and other.json()["code"] == "HistoryRewound"
    assert other.json()["parameter"] == "afterAt" and other.json()["latestChangeId"] == seen[-1]["changeId"]
    for bad in ({"after": "-1"}, {"since": "gestern"}, {"crs": "EPSG:1"}, {"colour": "x"}, {"afterAt": seen[0]["at"]},
                {"after": str(latest), "afterAt": "gestern"}, {"after": str(latest), "afterAt": "2026-11-24T04:08:12"}):
        r = await client.get(f"{SITES}/changes", params=bad)
        assert r.status_code == 400 and r.json()["parameter"] in bad


async def _features(dsn: str, municipality: str) -> dict[str, tuple[str, dict]]:
    return await _features_of(dsn, municipality, "commercial-sites")


async def test_as_of_and_since_take_a_date_or_a_time_without_zone(hist):
    """A planner types a date (an HTML date field sends one): its first moment on the municipality's clock
    (the service's time zone, Europe/Berlin by default), as the CLI reads it."""
    client, editor = hist
    r = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site("d-1", "Heute")))
    assert r.status_code == 201
    now = datetime.now(ZoneInfo("Europe/Berlin"))
    today, tomorrow = now.date(), now.date() + timedelta(days=1)
    current = (await client.get(f"{SITES}/items", params={"limit": 1})).json()["numberMatched"]

    ahead = (await client.get(f"{SITES}/items", params={"asOf": tomorrow.isoformat(), "limit": 1})).json()
    assert ahead["numberMatched"] == current
    naive = now.replace(tzinfo=None).isoformat(sep=" ")
    assert (await client.get(f"{SITES}/items", params={"asOf": naive, "limit": 1})).json()["numberMatched"] == current
    # Half an hour from now on a UTC clock is still an hour or more ago in Halle: read in Halle, d-1 came after.
    utc_soon = (datetime.now(UTC) + timedelta(minutes=30)).replace(tzinfo=None).isoformat(timespec="seconds")
    assert "d-1" in {c["id"] for c in (await client.get(f"{SITES}/changes", params={"since": utc_soon})).json()[
        "changes"]}
    # `+01:00` written into a URL unencoded arrives as ` 01:00`: read as the offset it was meant to be.
    later = now + timedelta(seconds=1)  # the URL carries whole seconds
    berlin = later.astimezone(timezone(timedelta(hours=1))).replace(microsecond=0, tzinfo=None).isoformat()
    r = await client.get(f"{SITES}/items?asOf={berlin}+01:00&limit=1")
    assert r.status_code == 200 and r.json()["numberMatched"] == current

    since_today = (await client.get(f"{SITES}/changes", params={"since": today.isoformat()})).json()["changes"]
    assert "d-1" in {c["id"] for c in since_today}
    assert (await client.get(f"{SITES}/changes", params={"since": tomorrow.isoformat()})).json()["changes"] == []
    for name, value in (("since", "2026-02-30"), ("asOf", "24.11.2026"), ("asOf", "2026-11-24T25:00")):
        r = await client.get(f"{SITES}/{'changes' if name == 'since' else 'items'}", params={name: value})
        assert r.status_code == 400 and r.json()["parameter"] == name
        assert "2026-05-01" in r.json()["description"], "the answer shows the forms it takes"
        assert "Europe/Berlin" in r.json()["description"], "and the zone a time without one is read in"


async def test_a_neighbour_mirrors_a_collection_incrementally(hist, hist_db, empty_db):
    client, editor = hist
    target = empty_db()
    await asyncio.to_thread(upgrade, target)  # Alembic runs its own event loop
    conn = await asyncpg.connect(target)
    try:
        await upsert_municipality(conn, "leipzig", "Leipzig", "14713000", "Sachsen", 25833)
        first = await mirror(client, f"http://testserver{SITES}", conn, "leipzig", "halle-sites")
    finally:
        await conn.close()
    source = await _features(hist_db, "halle")
    copy = await _features_of(target, "leipzig", "halle-sites")
    assert first > 0 and copy == source

    # Changes at the source: the next run applies only those.
    r = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site("m-1", "Neu")))
    await client.put(f"{SITES}/items/m-1", headers={**editor, "If-Match": r.headers["etag"]},
                     content=json.dumps(site("m-1", "Neu, geändert", 11.96)))
    old = await client.get(f"{SITES}/items/gs-003")
    await client.delete(f"{SITES}/items/gs-003", headers={**editor, "If-Match": old.headers["etag"]})
    conn = await asyncpg.connect(target)
    try:
        second = await mirror(client, f"http://testserver{SITES}", conn, "leipzig", "halle-sites")
        again = await mirror(client, f"http://testserver{SITES}", conn, "leipzig", "halle-sites")
        actors = {r[0] for r in await conn.fetch("SELECT DISTINCT actor FROM feature_change")}
    finally:
        await conn.close()
    assert second == 3 and again == 0
    source = await _features(hist_db, "halle")
    assert await _features_of(target, "leipzig", "halle-sites") == source
    assert "gs-003" not in source and source["m-1"][1]["name"] == "Neu, geändert"
    assert actors == {f"mirror:http://testserver{SITES}"}


async def _change_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM feature_change")
    finally:
        await conn.close()


async def _features_of(dsn: str, municipality: str, collection: str) -> dict[str, tuple[str, dict]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT f.fid, ST_AsText(ST_SnapToGrid(f.geom, 0.001)) AS g, f.properties FROM feature f "
            "JOIN collection c ON c.id = f.collection_id JOIN municipality m ON m.id = c.municipality_id "
            "WHERE m.slug = $1 AND c.slug = $2", municipality, collection)
    finally:
        await conn.close()
    return {r["fid"]: (r["g"], json.loads(r["properties"])) for r in rows}


def test_principal_roles_rank():
    admin = Principal("key:x", "admin", "halle")
    assert admin.can("editor", "halle") and not admin.can("viewer", "leipzig") and not admin.can("platform", None)
    assert Principal("key:p", "platform").can("admin", "leipzig")


def test_the_mirror_command_shows_progress_and_resumes(cluster, hist_db, empty_db):
    import subprocess

    from tests.conftest import ROOT, serve_in_thread

    url, server, thread = serve_in_thread(create_app(settings_for(cluster, "geotwin_hist")))
    target = empty_db()
    upgrade(target)
    asyncio.run(_onboard(target))
    try:
        command = [str(ROOT / ".venv" / "bin" / "geotwin"), "mirror", f"{url}{SITES}", "--municipality", "leipzig",
                   "--url", target]
        first = subprocess.run(command, capture_output=True, text=True, timeout=120)
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        gone = subprocess.run([*command[:2], f"{url}{SITES}-alt", *command[3:]], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "COLUMNS": "300"})
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    unreachable = subprocess.run([*command[:2], "http://127.0.0.1:9/x", *command[3:]], capture_output=True,
                                 text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert first.returncode == 0, first.stderr
    assert int(first.stdout.split("change(s) applied")[0].split()[-1]) > 0
    assert "0 change(s) applied" in second.stdout
    # What the admin reads in cron's mail: the source's answer in a line, not a traceback or the database's
    # settings (a refused connection to the source is no database problem).
    assert gone.returncode == 1 and "Traceback" not in gone.stderr, gone.stderr
    assert f"the source answered 404 for {url}{SITES}-alt: no such collection there" in gone.stderr, gone.stderr
    assert unreachable.returncode == 1 and "Traceback" not in unreachable.stderr, unreachable.stderr
    assert "the source http://127.0.0.1:9/x cannot be reached (ConnectError" in unreachable.stderr
    assert "PGHOST" not in unreachable.stderr
    assert asyncio.run(_features_of(target, "leipzig", "commercial-sites")) == asyncio.run(_features(hist_db, "halle"))


async def _onboard(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await upsert_municipality(conn, "leipzig", "Leipzig", "14713000", "Sachsen", 25833)
    finally:
        await conn.close()


def test_pruned_history_keeps_the_past_from_the_cut_and_a_mirror_behind_it_starts_again(cluster, demo_db, empty_db):
    import subprocess
    import time

    import httpx

    from tests.conftest import ROOT, serve_in_thread

    source = demo_db("geotwin_prune")
    target = empty_db()
    upgrade(target)
    asyncio.run(_onboard(target))
    editor = {"Authorization": f"Bearer {asyncio.run(new_key(source, 'halle', 'editor', 'Planungsamt'))}", **GEOJSON}
    geotwin = str(ROOT / ".venv" / "bin" / "geotwin")
    base, server, thread = serve_in_thread(create_app(settings_for(cluster, "geotwin_prune")))
    api = httpx.Client(base_url=f"{base}{SITES}", timeout=30)

    def names(as_of: datetime | None = None) -> dict[str, str]:
        params = {"limit": 1000, **({"asOf": as_of.isoformat()} if as_of else {})}
        return {f["id"]: f["properties"]["name"] for f in api.get("/items", params=params).json()["features"]}

    def mirror_run() -> subprocess.CompletedProcess:
        return subprocess.run([geotwin, "mirror", f"{base}{SITES}", "--municipality", "leipzig", "--url", target],
                              capture_output=True, text=True, timeout=120)

    try:
        first = api.post("/items", headers=editor, content=json.dumps(site("p-1", "Erste Fassung")))
        gone = api.post("/items", headers=editor, content=json.dumps(site("p-2", "Bald verkauft", 11.97)))
        assert mirror_run().returncode == 0  # the neighbour's copy has p-2
        api.put("/items/p-1", headers={**editor, "If-Match": first.headers["etag"]},
                content=json.dumps(site("p-1", "Zweite Fassung")))
        api.delete("/items/p-2", headers={**editor, "If-Match": gone.headers["etag"]})
        time.sleep(0.05)
        cut = datetime.now(UTC)
        time.sleep(0.05)
        third = api.get("/items/p-1").headers["etag"]
        api.put("/items/p-1", headers={**editor, "If-Match": third}, content=json.dumps(site("p-1", "Dritte")))
        at_cut, now = names(cut), names()
        assert at_cut["p-1"] == "Zweite Fassung" and "p-2" not in at_cut and now["p-1"] == "Dritte"

        pruned = subprocess.run([geotwin, "history", "prune", "--before", cut.isoformat(), "--url", source],
                                capture_output=True, text=True, timeout=120)
        assert pruned.returncode == 0, pruned.stderr
        assert "halle/commercial-sites:" in pruned.stdout and "change(s) removed" in pruned.stdout

        # From the cut on, the past reads as before; earlier, and feed readers behind the cut, get 410.
        deadline = time.monotonic() + 10
        while (early := api.get("/items", params={"asOf": "2000-01-01T00:00:00Z"})).status_code != 410:
            assert time.monotonic() < deadline, "the service learns of the cut"
            time.sleep(0.1)
        assert early.json()["parameter"] == "asOf" and early.json()["code"] == "HistoryPruned"
        assert names(cut) == at_cut and names() == now
        versions = api.get("/items/p-1/versions").json()
        assert [v["feature"]["properties"]["name"] for v in versions["versions"]] == ["Zweite Fassung", "Dritte"]
        assert versions["historyFrom"] == cut.isoformat()
        assert api.get("/items/p-2/versions").status_code == 404, "deleted before the cut: gone with it"
        behind = api.get("/changes", params={"after": 1})
        assert behind.status_code == 410 and behind.json()["parameter"] == "after"
        assert api.get("/changes", params={"since": "2000-01-01T00:00:00Z"}).status_code == 410
        assert api.get("/changes", params={"after": 0}).status_code == 200
        # A collection the prune took nothing from (its features were only ever inserted) keeps its whole past.
        zones = f"{base}/municipalities/halle/collections/planning-zones"
        assert api.get(f"{zones}/items", params={"asOf": "2000-01-01T00:00:00Z"}).status_code == 200
        assert httpx.get(f"{zones}/changes", params={"after": 1}).status_code == 200

        # The neighbour's copy was behind the cut: the mirror starts again, and p-2's deletion reaches it.
        # Its own change log gains only what changed (p-1's new name, p-2's deletion), not every feature.
        logged = asyncio.run(_change_count(target))
        again = mirror_run()
        assert again.returncode == 0, again.stderr
        assert asyncio.run(_change_count(target)) - logged == 2
        assert asyncio.run(_features_of(target, "leipzig", "commercial-sites")) == \
            asyncio.run(_features_of(source, "halle", "commercial-sites"))
        assert "0 change(s) applied" in mirror_run().stdout

        repeat = subprocess.run([geotwin, "history", "prune", "--before", cut.isoformat(), "--url", source],
                                capture_output=True, text=True, timeout=120)
        assert "0 change(s) before" in repeat.stdout
        for bad in (["--before", "gestern"], ["--before", "2999-01-01"],
                    ["--before", "2020-01-01", "--collection", "halle/nirgends"]):
            refused = subprocess.run([geotwin, "history", "prune", *bad, "--url", source],
                                     capture_output=True, text=True, timeout=60)
            assert refused.returncode == 2 and ("--before" in refused.stderr or "--collection" in refused.stderr)
    finally:
        api.close()
        server.should_exit = True
        thread.join(timeout=10)


def test_a_mirror_ahead_of_a_source_restored_from_an_older_backup_reads_it_again(cluster, demo_db, empty_db):
    """A source restored from an older backup hands out again change ids a mirror has passed. Its feed says so
    (410, as for a pruned log) instead of answering "nothing new", and the mirror reads it again from the
    start: the copy becomes the restored source, and follows the changes made after the restore, also when the
    restored source has handed out the copy's last change id again by then."""
    source = demo_db("geotwin_restored")
    editor = {"Authorization": f"Bearer {asyncio.run(new_key(source, 'halle', 'editor', 'Planungsamt'))}", **GEOJSON}
    cluster.psql('DROP DATABASE IF EXISTS "geotwin_backup"')
    cluster.psql('CREATE DATABASE "geotwin_backup" TEMPLATE "geotwin_restored"')  # the nightly backup
    cluster.psql('DROP DATABASE IF EXISTS "geotwin_backup_2"')
    cluster.psql('CREATE DATABASE "geotwin_backup_2" TEMPLATE "geotwin_restored"')  # the same, restored once more
    backup = cluster.url("geotwin_backup")
    target = empty_db()
    upgrade(target)
    asyncio.run(_onboard(target))

    async def run(database: str, fid: str) -> int:
        """Bring the copy up to date with the source on `database`, add `fid` there, bring it up to date again;
        returns what the feed first answered to the copy's cursor."""
        async with app_client(cluster, database) as (_, client):
            conn = await asyncpg.connect(target)
            try:
                cursor = await conn.fetchval("SELECT max(last_change_id) FROM mirror_cursor") or 0
                status = (await client.get(f"{SITES}/changes", params={"after": cursor})).status_code
                await mirror(client, f"http://testserver{SITES}", conn, "leipzig", "commercial-sites")
                posted = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site(fid, fid)))
                assert posted.status_code == 201, posted.text
                await mirror(client, f"http://testserver{SITES}", conn, "leipzig", "commercial-sites")
            finally:
                await conn.close()
        return status

    assert asyncio.run(run("geotwin_restored", "vor-dem-ausfall")) == 200
    assert "vor-dem-ausfall" in asyncio.run(_features_of(target, "leipzig", "commercial-sites"))
    # The source's disk fails; it comes back from the backup, which does not have the site added since.
    assert asyncio.run(run("geotwin_backup", "nach-dem-ausfall")) == 410
    copy = asyncio.run(_features_of(target, "leipzig", "commercial-sites"))
    assert copy == asyncio.run(_features_of(backup, "halle", "commercial-sites"))
    assert "nach-dem-ausfall" in copy and "vor-dem-ausfall" not in copy
    # Restored once more, and the source makes more changes than the backup lost before the copy's next run: its
    # ids have caught up, and the copy's last change id now names another change ("a"). By the id alone the feed
    # cannot tell and would hand out only "b"; with the time the copy kept beside it, it says 410 again.
    async def caught_up() -> tuple[int, httpx.Response]:
        async with app_client(cluster, "geotwin_backup_2") as (_, client):
            for fid in ("a", "b"):
                posted = await client.post(f"{SITES}/items", headers=editor, content=json.dumps(site(fid, fid)))
                assert posted.status_code == 201, posted.text
            conn = await asyncpg.connect(target)
            try:
                cursor, at = await conn.fetchrow("SELECT last_change_id, last_change_at FROM mirror_cursor")
                by_id = (await client.get(f"{SITES}/changes", params={"after": cursor})).status_code
                checked = await client.get(f"{SITES}/changes", params={"after": cursor, "afterAt": at.isoformat()})
                await mirror(client, f"http://testserver{SITES}", conn, "leipzig", "commercial-sites")
            finally:
                await conn.close()
        return by_id, checked

    by_id, checked = asyncio.run(caught_up())
    assert by_id == 200
    assert checked.status_code == 410 and checked.json()["code"] == "HistoryRewound", checked.text
    copy = asyncio.run(_features_of(target, "leipzig", "commercial-sites"))
    assert copy == asyncio.run(_features_of(cluster.url("geotwin_backup_2"), "halle", "commercial-sites"))
    assert {"a", "b"} <= set(copy) and "nach-dem-ausfall" not in copy


def test_an_etag_from_before_a_restore_does_not_match_the_version_after_it(cluster, demo_db):
    """After a restore from an older backup the change ids come again, to other versions. A planner's If-Match
    from before the restore names a version the database no longer has, even when the feature's version now
    has the same change id: 412, not an overwrite unseen. A cache revalidating with that ETag gets the version
    there is now, not a 304. An ETag of the form before the time was in it (the change id alone) still works."""
    source = demo_db("geotwin_etag")
    editor = {"Authorization": f"Bearer {asyncio.run(new_key(source, 'halle', 'editor', 'Planungsamt'))}",
              "Content-Type": "application/merge-patch+json"}
    cluster.psql('DROP DATABASE IF EXISTS "geotwin_etag_backup"')
    cluster.psql('CREATE DATABASE "geotwin_etag_backup" TEMPLATE "geotwin_etag"')  # the nightly backup
    item = f"{SITES}/items/gs-001"

    async def rename(database: str, name: str) -> str:
        async with app_client(cluster, database) as (_, client):
            etag = (await client.get(item)).headers["etag"]
            r = await client.patch(item, headers={**editor, "If-Match": etag},
                                   content=json.dumps({"properties": {"name": name}}))
            assert r.status_code == 200, r.text
            assert r.headers["etag"] == (await client.get(item)).headers["etag"]
            return r.headers["etag"]

    lost = asyncio.run(rename("geotwin_etag", "vor dem Ausfall"))  # then the disk fails
    now = asyncio.run(rename("geotwin_etag_backup", "nach dem Ausfall"))
    assert lost.split(".")[0] == now.split(".")[0] and lost != now  # the same change id, another version

    async def after_the_restore() -> None:
        async with app_client(cluster, "geotwin_etag_backup") as (_, client):
            cached = await client.get(item, headers={"If-None-Match": lost})
            assert cached.status_code == 200 and cached.json()["properties"]["name"] == "nach dem Ausfall"
            for stale in (lost, f'"{lost.split(".")[0].strip(chr(34))}.zz"', '"1.ffffffffffffffffffff"'):
                r = await client.patch(item, headers={**editor, "If-Match": stale},
                                       content=json.dumps({"properties": {"name": "überschrieben"}}))
                assert r.status_code == 412 and r.json()["parameter"] == "If-Match", (stale, r.text)
                assert now in r.json()["description"]
            by_id = now.split(".")[0] + '"'
            r = await client.patch(item, headers={**editor, "If-Match": by_id},
                                   content=json.dumps({"properties": {"name": "weiter"}}))
            assert r.status_code == 200, r.text
            gone = await client.delete(item, headers={"Authorization": editor["Authorization"], "If-Match": now})
            assert gone.status_code == 412
            assert (await client.delete(item, headers={"Authorization": editor["Authorization"],
                                                        "If-Match": r.headers["etag"]})).status_code == 204

    asyncio.run(after_the_restore())
