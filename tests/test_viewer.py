"""The map viewer in headless Chromium: pick a root, layers draw from vector tiles, toggles, legend, click."""

from __future__ import annotations

from playwright.async_api import async_playwright

from tests.conftest import wait_until
from tests.test_html_map import CHROMIUM, DRAWN_SHARE, FLAGS


async def open_viewer(page, url: str) -> None:
    await page.goto(url)
    await wait_until(page, "window.geotwinViewerReady === true")


async def test_viewer_draws_toggles_explains_and_answers_clicks(live_server):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text)
                if msg.type == "error" and "Content Security Policy" in msg.text else None)
        try:
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
            await page.evaluate("window.geotwinMap.jumpTo({center: [12.0505, 51.5107], zoom: 15})")
            await wait_until(page, "window.geotwinMap.loaded() && window.geotwinMap.areTilesLoaded()")
            await page.wait_for_timeout(500)
            point = await page.evaluate("(() => { const p = window.geotwinMap.project([12.0505, 51.5107]);"
                                        " return [p.x, p.y]; })()")
            box = await page.locator("#map").bounding_box()
            await page.mouse.click(box["x"] + point[0], box["y"] + point[1])
            popup = page.locator(".maplibregl-popup")
            await popup.wait_for(timeout=10_000)
            assert "Star Park – Teilfläche A" in await popup.inner_text()

            # The region: Leipzig's and Magdeburg's layers draw too.
            await page.select_option("#root-select", "/region")
            await wait_until(page, "window.geotwinViewerReady === true")
            assert await page.evaluate(DRAWN_SHARE) > 0.001
            assert "root=%2Fregion" in page.url
        finally:
            await browser.close()
        assert not errors, errors
