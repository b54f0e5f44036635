"""The map viewer in headless Chromium: pick a root, layers draw from vector tiles, toggles, legend, click."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.main import create_app
from tests.conftest import app_client, free_port, serve_in_thread, settings_for, wait_until
from tests.test_html_map import DRAWN_SHARE, browser_page


async def open_viewer(page, url: str) -> None:
    await page.goto(url)
    await wait_until(page, "window.geotwinViewerReady === true")


async def click_star_park(page):
    """Zoom the viewer onto Star Park, click its first site, and return the popup once it shows."""
    await page.evaluate("window.geotwinMap.jumpTo({center: [12.0505, 51.5107], zoom: 15})")
    await wait_until(page, "window.geotwinMap.loaded() && window.geotwinMap.areTilesLoaded()")
    await page.wait_for_timeout(500)
    point = await page.evaluate("(() => { const p = window.geotwinMap.project([12.0505, 51.5107]);"
                                " return [p.x, p.y]; })()")
    box = await page.locator("#map").bounding_box()
    await page.mouse.click(box["x"] + point[0], box["y"] + point[1])
    popup = page.locator(".maplibregl-popup")
    await popup.wait_for(timeout=10_000)
    return popup


async def test_viewer_draws_toggles_explains_and_answers_clicks(live_server):
    async with browser_page(1280, 900) as page:
        await open_viewer(page, f"{live_server}/viewer?root=/municipalities/halle")
        options = await page.locator("#root-select option").all_inner_texts()
        assert {"Halle (Saale)", "Leipzig", "Magdeburg", "Region (all municipalities)"} <= set(options)
        drawn = await page.evaluate(DRAWN_SHARE)
        assert drawn > 0.02, drawn

        # Legend per layer type: codes with their labels.
        legend = await page.locator("#layers").inner_text()
        assert "verfügbar (available)" in legend and "Landschaftsschutzgebiet" in legend
        assert "allgemeines Wohngebiet" in legend

        # Toggling every layer off leaves only the background.
        for box in await page.locator("#layers input[type=checkbox]").all():
            await box.uncheck()
        await wait_until(page, "window.geotwinMap.loaded()")
        await page.wait_for_timeout(300)
        assert await page.evaluate(DRAWN_SHARE) < 0.001
        for box in await page.locator("#layers input[type=checkbox]").all():
            await box.check()

        # Zoom onto Star Park and click a site: its properties appear.
        popup = await click_star_park(page)
        shown = await popup.inner_text()
        assert "Star Park – Teilfläche A" in shown
        # As the legend does: the layer type's titles and code labels (the name stays in the tooltip).
        assert re.search(r"Zoning\s+Industriegebiet \(industrial area\) \(GI\)", shown), shown
        assert re.search(r"Net area \(ha\)\s+38\.5", shown), shown
        assert await popup.locator("th[title=area_net_ha]").count() >= 1
        close = await popup.locator(".maplibregl-popup-close-button").bounding_box()
        assert close["width"] < 40, "the close button is a button in the corner, not a bar over the caption"

        # The region: Leipzig's and Magdeburg's layers draw too.
        await page.select_option("#root-select", "/region")
        await wait_until(page, "window.geotwinViewerReady === true")
        assert await page.evaluate(DRAWN_SHARE) > 0.001
        assert "root=%2Fregion#" in page.url

        # The view is in the address: a link opens at its spot, not at the extent, and keeps it.
        await open_viewer(page, f"{live_server}/viewer?root=/municipalities/halle#15/51.5107/12.0505")
        view = await page.evaluate("(() => { const m = window.geotwinMap, c = m.getCenter();"
                                   " return [m.getZoom(), c.lat, c.lng]; })()")
        assert view == pytest.approx([15, 51.5107, 12.0505], abs=1e-4)
        assert page.url.endswith("?root=%2Fmunicipalities%2Fhalle#15/51.5107/12.0505")


# Its data and font URLs are relative to the style, as in many self-hosted basemaps.
BASEMAP = {"version": 8, "name": "test basemap", "glyphs": "fonts/{fontstack}/{range}.pbf",
           "sources": {"basemap-points": {"type": "geojson", "data": "data/places.geojson"}},
           "layers": [{"id": "basemap-land", "type": "background", "paint": {"background-color": "#ff00ff"}},
                      {"id": "basemap-places", "type": "circle", "source": "basemap-points"}]}
# Share of the canvas in the basemap's magenta, and in anything that is neither magenta nor GeoTwin's background.
MAGENTA_SHARE = DRAWN_SHARE.replace(
    "Math.abs(d[i] - 0xee) + Math.abs(d[i + 1] - 0xf1) + Math.abs(d[i + 2] - 0xea) > 40",
    "d[i] > 240 && d[i + 1] < 15 && d[i + 2] > 240")
DATA_SHARE = DRAWN_SHARE.replace(
    "Math.abs(d[i] - 0xee) + Math.abs(d[i + 1] - 0xf1) + Math.abs(d[i + 2] - 0xea) > 40",
    "Math.abs(d[i] - 0xee) + Math.abs(d[i + 1] - 0xf1) + Math.abs(d[i + 2] - 0xea) > 40"
    " && Math.abs(d[i] - 0xff) + d[i + 1] + Math.abs(d[i + 2] - 0xff) > 40")


def serve_json(documents: dict[str, dict]) -> tuple[str, ThreadingHTTPServer, list[str]]:
    """A plain-http server of its own origin, readable by any origin (CORS): the documents by path, an empty
    FeatureCollection for any other path; (its base URL, the server, the paths asked for)."""
    requested: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            requested.append(self.path)
            body = json.dumps(documents.get(self.path, {"type": "FeatureCollection", "features": []})).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd, requested


@pytest.fixture
def basemap_server() -> Iterator[tuple[str, ThreadingHTTPServer, list[str]]]:
    """A basemap style on another origin, plain http as on a municipal intranet."""
    base, httpd, requested = serve_json({"/maps/style.json": BASEMAP})
    yield f"{base}/maps/style.json", httpd, requested
    httpd.shutdown()
    httpd.server_close()


async def test_the_basemap_lies_under_the_viewer_and_the_maps_and_its_absence_breaks_neither(
        cluster, db_url, basemap_server):
    url, httpd, requested = basemap_server
    base, server, thread = serve_in_thread(create_app(settings_for(cluster, basemap_style_url=url)))
    try:
        async with browser_page(1280, 900) as page:
            await open_viewer(page, f"{base}/viewer?root=/municipalities/halle")
            assert await page.evaluate(MAGENTA_SHARE) > 0.05, "the basemap shows where there is no data"
            assert await page.evaluate(DATA_SHARE) > 0.02, "the layers draw over it"
            style = await page.evaluate("window.geotwinMap.getStyle()")
            assert {"basemap-points", "geotwin"} <= set(style["sources"])
            # Its relative URLs point to where the style came from, not to GeoTwin.
            maps = url.removesuffix("style.json")
            assert style["glyphs"] == maps + "fonts/{fontstack}/{range}.pbf"
            assert "/maps/data/places.geojson" in requested
            ids = [layer["id"] for layer in style["layers"]]
            assert ids[:2] == ["basemap-land", "basemap-places"] and "background" not in ids

            await page.goto(f"{base}/municipalities/halle/collections/ecological-zones?f=html")
            await wait_until(page, "window.geotwinMapReady === true")
            assert await page.evaluate(MAGENTA_SHARE) > 0.05 and await page.evaluate(DATA_SHARE) > 0.02

            # The basemap's server goes away: both still draw the data, on the plain background.
            httpd.shutdown()
            httpd.server_close()
            await page.goto(f"{base}/municipalities/halle/collections/ecological-zones?f=html")
            await wait_until(page, "window.geotwinMapReady === true")
            assert await page.evaluate(MAGENTA_SHARE) == 0 and await page.evaluate(DRAWN_SHARE) > 0.05
            await open_viewer(page, f"{base}/viewer?root=/municipalities/halle")
            assert await page.evaluate(MAGENTA_SHARE) == 0 and await page.evaluate(DRAWN_SHARE) > 0.02
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_pages_let_maps_read_a_plain_http_basemap_and_only_that(cluster, db_url):
    async with app_client(cluster, "geotwin_test", basemap_style_url="http://karten.intranet:8080/style.json") as (
            _, client):
        csp = (await client.get("/viewer")).headers["content-security-policy"]
    assert "connect-src 'self' https: http://karten.intranet:8080;" in csp
    assert "img-src 'self' data: blob: https: http://karten.intranet:8080;" in csp
    assert csp.count("http://") == 3  # connect, img and font sources; nothing else
    async with app_client(cluster, "geotwin_test", basemap_style_url="http://karten.intranet:8080/style.json",
                          basemap_origins=["http://kacheln.intranet:9000", "https://cdn.example"]) as (_, client):
        csp = (await client.get("/viewer")).headers["content-security-policy"]
    assert "connect-src 'self' https: http://karten.intranet:8080 http://kacheln.intranet:9000;" in csp
    assert csp.count("http://") == 6 and "cdn.example" not in csp  # https: admits it already


async def test_a_basemap_loads_from_a_further_plain_http_origin_once_it_is_named(cluster, db_url):
    """The style on one intranet server, its data on another: the pages' CSP lets the browser read the second
    only when GEOTWIN_API__BASEMAP_ORIGINS names it."""
    data_base, data_httpd, data_requested = serve_json({})
    style = {**BASEMAP, "sources": {"basemap-points": {"type": "geojson", "data": f"{data_base}/places.geojson"}}}
    style_base, style_httpd, _ = serve_json({"/maps/style.json": style})
    try:
        for origins, reached in (([], False), ([data_base], True)):
            data_requested.clear()
            app = create_app(settings_for(cluster, basemap_style_url=f"{style_base}/maps/style.json",
                                          basemap_origins=origins))
            base, server, thread = serve_in_thread(app)
            try:
                async with browser_page(1280, 900) as page:
                    await open_viewer(page, f"{base}/viewer?root=/municipalities/halle")
                    assert await page.evaluate(MAGENTA_SHARE) > 0.05, "the style itself loads either way"
                    assert ("/places.geojson" in data_requested) is reached, origins
            finally:
                server.should_exit = True
                thread.join(timeout=10)
    finally:
        for httpd in (data_httpd, style_httpd):
            httpd.shutdown()
            httpd.server_close()


def test_further_basemap_origins_must_be_origins():
    from pydantic import ValidationError

    from service.settings import ApiSettings

    assert ApiSettings(basemap_origins=["http://kacheln.intranet:9000/"]).basemap_origins == \
        ["http://kacheln.intranet:9000"]
    for bad in ("kacheln.intranet", "http://kacheln.intranet/tiles", "ftp://kacheln.intranet",
                "http://a; script-src *"):
        with pytest.raises(ValidationError, match="not an origin"):
            ApiSettings(basemap_origins=[bad])
