"""The HTML pages' maps in a real browser (Debian's chromium through Playwright): they draw, and a click
shows the feature's properties."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from playwright.async_api import async_playwright

from tests.conftest import wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]

# Share of the map canvas painted in something other than the background colour (#eef1ea). Transparent
# pixels do not count: a canvas that could not be read back (or was never drawn) scores 0, not 1.
DRAWN_SHARE = """() => {
  const c = window.geotwinMap.getCanvas();
  const tmp = document.createElement("canvas");
  tmp.width = c.width; tmp.height = c.height;
  const ctx = tmp.getContext("2d");
  ctx.drawImage(c, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] === 255 && Math.abs(d[i] - 0xee) + Math.abs(d[i + 1] - 0xf1) + Math.abs(d[i + 2] - 0xea) > 40) n++;
  }
  return n / (c.width * c.height);
}"""


@asynccontextmanager
async def browser_page(width: int = 1100, height: int = 900, locale: str = "en-US") -> AsyncIterator:
    """A page in headless Chromium (its language `locale`, sent as Accept-Language); on leaving, no script error
    and nothing the CSP blocked."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await browser.new_page(viewport={"width": width, "height": height}, locale=locale)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # A script or worker the Content-Security-Policy blocks shows only as a console error.
        page.on("console", lambda msg: errors.append(msg.text)
                if msg.type == "error" and "Content Security Policy" in msg.text else None)
        try:
            yield page
        finally:
            await browser.close()
        assert not errors, errors


@pytest.fixture
async def page():
    async with browser_page() as page:
        yield page


BACKGROUND_SHARE = DRAWN_SHARE.replace("> 40) n++", "<= 40) n++")


async def open_map(page, url: str) -> float:
    await page.goto(url)
    await wait_until(page, "window.geotwinMapReady === true")
    assert await page.evaluate(BACKGROUND_SHARE) > 0.05, "the map canvas could not be read back"
    return await page.evaluate(DRAWN_SHARE)


@pytest.mark.parametrize(("path", "share"), [
    ("/municipalities/halle/collections/ecological-zones?f=html", 0.05),
    ("/region/collections/commercial-sites/items?f=html", 0.0002),  # 15 sites over 100 km: small, but there
    # A page fits its own features, not the whole collection: Halle's sites drawn large enough to tell apart.
    ("/region/collections/commercial-sites/items?f=html&bbox=11.9,51.45,12.1,51.55", 0.002),
    ("/municipalities/leipzig/collections/planning-zones/items/bp-zentrum-1?f=html", 0.05),
])
async def test_maps_draw_the_features(live_server, page, path, share):
    assert await open_map(page, live_server + path) > share


async def test_a_table_of_many_properties_scrolls_by_itself_and_reads_as_text(live_server, page):
    await open_map(page, f"{live_server}/region/collections/commercial-sites/items?f=html")
    widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth,"
                                 " document.querySelector('.wide').scrollWidth]")
    assert widths[0] <= widths[1] < widths[2], "the page keeps its width; only the table scrolls"
    rail = await page.evaluate("""() => { const head = [...document.querySelectorAll('.wide th')]
        .map(th => th.title || th.textContent), i = head.indexOf('rail_siding');
        return [...document.querySelectorAll('.wide tr')].slice(1).map(tr => tr.children[i].textContent); }""")
    assert set(rail) <= {"yes", "no", ""} and "yes" in rail and "no" in rail

    # The start page's API addresses, which planners copy into QGIS, stay whole inside their cards.
    await page.goto(f"{live_server}/?f=html")
    assert await page.evaluate("""() => [...document.querySelectorAll('.card code')].every(c =>
        c.getBoundingClientRect().right <= c.closest('.card').getBoundingClientRect().right)""")


async def test_click_on_a_feature_shows_its_properties(live_server, page):
    await open_map(page, f"{live_server}/municipalities/halle/collections/commercial-sites/items/gs-001?f=html")
    box = await page.locator("#map").bounding_box()
    await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    popup = page.locator(".maplibregl-popup")
    await popup.wait_for(timeout=10_000)
    text = await popup.inner_text()
    assert "Star Park – Teilfläche A" in text and "vermarktet" in text
    assert re.search(r"Availability\s+vermarktet \(sold or let\) \(vermarktet\)", text), text
    assert "Sep 30, 2026" in text and "2026-09-30" not in text, "a date as the page's language writes it"


async def generic_collection(conn, slug: str) -> int:
    """A collection of Halle's for a probe, written straight into the database; the caller deletes it."""
    m_pk = await conn.fetchval("SELECT id FROM municipality WHERE slug = 'halle'")
    return await conn.fetchval("INSERT INTO collection (municipality_id, slug, title, layer_type) "
                               "VALUES ($1, $2, $3, 'generic') RETURNING id", m_pk, slug, slug)


async def test_property_values_are_shown_as_text_never_run(live_server, page, db_url):
    """A municipality's data is not markup: HTML in a property shows as text in the table and the popup."""
    import asyncpg

    hostile = '<img src=x onerror="window.pwned=1">'
    conn = await asyncpg.connect(db_url)
    try:
        c_pk = await generic_collection(conn, "xss-probe")
        await conn.execute(
            "INSERT INTO feature (collection_id, fid, geom, properties) VALUES "
            "($1, 'p1', ST_Buffer(ST_SetSRID(ST_MakePoint(706193, 5707666), 25832), 200), "
            "jsonb_build_object('note', $2::text))", c_pk, hostile)
        await open_map(page, f"{live_server}/municipalities/halle/collections/xss-probe/items/p1?f=html")
        assert hostile in await page.locator("table").last.inner_text()
        box = await page.locator("#map").bounding_box()
        await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.locator(".maplibregl-popup").wait_for(timeout=10_000)
        assert hostile in await page.locator(".maplibregl-popup").inner_text()
        assert await page.evaluate("window.pwned") is None
    finally:
        await conn.execute("DELETE FROM collection WHERE slug = 'xss-probe'")
        await conn.close()


async def test_a_feature_of_many_vertices_is_fitted_and_drawn(live_server, page, db_url):
    """A detailed zone (here 160,001 vertices) is fitted by a running minimum, not by spreading every coordinate
    into Math.min, which runs out of stack."""
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        c_pk = await generic_collection(conn, "detailed")
        await conn.execute(
            "INSERT INTO feature (collection_id, fid, geom, properties) VALUES "
            "($1, 'z1', ST_Buffer(ST_SetSRID(ST_MakePoint(706193, 5707666), 25832), 300, 40000), '{}')", c_pk)
        for path in ("items/z1", "items"):
            assert await open_map(page, f"{live_server}/municipalities/halle/collections/detailed/{path}?f=html") > 0.05
    finally:
        await conn.execute("DELETE FROM collection WHERE slug = 'detailed'")
        await conn.close()


async def test_a_collection_page_says_when_its_map_shows_only_part(live_server, db_url):
    import asyncpg
    import httpx

    conn = await asyncpg.connect(db_url)
    try:
        c_pk = await generic_collection(conn, "many")
        await conn.execute("INSERT INTO feature (collection_id, fid, geom, properties) SELECT $1, 'p' || i, "
                           "ST_SetSRID(ST_MakePoint(706000 + i, 5707000), 25832), '{}' "
                           "FROM generate_series(1, $2::int) i", c_pk, 1001)
        async with httpx.AsyncClient() as client:
            many = (await client.get(f"{live_server}/municipalities/halle/collections/many?f=html")).text
            few = (await client.get(f"{live_server}/municipalities/halle/collections/commercial-sites?f=html")).text
        assert "The map shows the first 1,000 of 1,001 features" in many
        assert f'href="{live_server}/viewer?root=/municipalities/halle"' in many
        assert "map-subset" not in few
    finally:
        await conn.execute("DELETE FROM collection WHERE slug = 'many'")
        await conn.close()


async def test_conflicts_page_draws_sites_and_overlaps(live_server, page):
    share = await open_map(page, f"{live_server}/processes/conflicts/map?sites=/municipalities/halle/collections/"
                                 "commercial-sites&constraints=/municipalities/halle/collections/ecological-zones")
    assert share > 0.002  # six sites over ~15 km
    overlap_red = await page.evaluate(DRAWN_SHARE.replace(
        "Math.abs(d[i] - 0xee) + Math.abs(d[i + 1] - 0xf1) + Math.abs(d[i + 2] - 0xea) > 40",
        "d[i] > 150 && d[i + 1] < 110 && d[i + 2] < 110"))
    assert overlap_red > 0.00005, "the overlaps are drawn in red (nothing else on the map is red)"
    assert "Star Park" in await page.inner_text("table")


async def test_statistics_page_charts_what_its_tables_say(live_server, page):
    await page.goto(f"{live_server}/processes/statistics/chart")
    await wait_until(page, "window.geotwinCharts && Object.keys(window.geotwinCharts).length === 4")
    # Each chart's bars add up to the areas in the page's tables (per municipality, all codes).
    charted = await page.evaluate("""() => Object.fromEntries(Object.entries(window.geotwinCharts).map(([id, c]) =>
        [id, Object.fromEntries(c.data.labels.map((m, i) =>
            [m, c.data.datasets.reduce((s, d) => s + d.data[i], 0)]))]))""")
    stats = await page.evaluate("JSON.parse(document.getElementById('stats').textContent)")
    for dim in ("availability", "zoning", "servicing"):
        expected: dict[str, float] = {}
        for r in stats["sites"][dim]:
            if r["municipality"] != "region":
                expected[r["municipality"]] = expected.get(r["municipality"], 0) + r["areaHa"]
        assert charted[f"chart-{dim}"] == pytest.approx(expected), dim
    assert set(charted["chart-protection"]) == {r["municipality"] for r in stats["protection"]}
    # The legends name the codes as the tables do: "Naturschutzgebiet (nature reserve) (NSG)", not "NSG".
    named = await page.evaluate("window.geotwinCharts['chart-protection'].data.datasets.map(d => d.label)")
    assert "Naturschutzgebiet (nature reserve) (NSG)" in named, named
    # and they are drawn: every canvas has painted pixels
    painted = await page.evaluate("""() => [...document.querySelectorAll('canvas')].map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n / (c.width * c.height); })""")
    assert len(painted) == 4 and min(painted) > 0.02, painted
    assert "halle" in await page.inner_text("section[data-table=availability] table")
    bad = await page.goto(f"{live_server}/processes/statistics/chart?municipalities=atlantis")
    assert bad.status == 400


async def test_api_documentation_page_runs_under_its_content_security_policy(live_server, page):
    await page.goto(f"{live_server}/api?f=html")
    await wait_until(page, "document.querySelectorAll('.opblock').length > 20")


async def test_a_stale_link_shows_a_page_that_leads_back(live_server):
    """A feature deleted since a planner bookmarked it: Chromium shows the error as a page in German, whose
    start link leads back to the municipalities."""
    async with browser_page(locale="de-DE") as page:
        answer = await page.goto(f"{live_server}/municipalities/halle/collections/commercial-sites/items/gone")
        assert answer.status == 404
        assert await page.locator("h1").inner_text() == "Nicht gefunden"
        assert "gone" in await page.get_by_test_id("error-description").inner_text()
        await page.locator("main a", has_text="Start").click()
        await page.wait_for_url(f"{live_server}/")
        assert "Halle (Saale)" in await page.locator("main").inner_text()


async def test_a_planner_picks_a_date_and_sees_the_collection_as_it_was(live_server):
    """The items page's date field sends a plain date (`asOf=2026-11-01`): the page says which moment it shows,
    on the municipality's clock, keeps the other parameters (here a filter) and leads back to today's state."""
    async with browser_page(locale="de-DE") as page:
        await page.goto(f"{live_server}/municipalities/halle/collections/commercial-sites/items?f=html&zoning=GI")
        today = await page.locator("main p").first.inner_text()
        await page.fill("input[name=asOf]", "2000-01-01")
        await page.get_by_role("button", name="Anzeigen").click()
        await page.wait_for_url(re.compile(r"asOf=2000-01-01"))
        assert "zoning=GI" in page.url
        # The date's start on Halle's clock (the service's time zone), and the field keeps the date it was given.
        assert "Stand vom 01.01.2000, 00:00:00 MEZ" in await page.locator(".notice").inner_text()
        assert await page.locator("input[name=asOf]").input_value() == "2000-01-01"
        assert (await page.locator("main p").first.inner_text()).startswith("0 von 0")
        heads = await page.locator(".wide th").all_inner_texts()
        assert "Gebietsart" in heads, "an empty table still names its columns"

        await page.get_by_role("link", name="Aktuellen Stand zeigen").click()
        await page.wait_for_url(re.compile(r"zoning=GI"))
        assert "asOf" not in page.url and await page.locator(".notice").count() == 0
        assert await page.locator("main p").first.inner_text() == today
