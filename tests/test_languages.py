"""The HTML pages speak German to a German browser and English to others (Accept-Language); the API's JSON is
the same in every language. Every text the pages show has its German translation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from service import i18n
from service.export import FORMATS
from service.layertypes import registry
from tests.conftest import wait_until
from tests.test_html_map import browser_page
from tests.test_viewer import click_star_park, open_viewer

GERMAN = {"Accept-Language": "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"}
ENGLISH = {"Accept-Language": "en-GB,en;q=0.9"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("header", "language"), [
    ("de-DE,de;q=0.9,en;q=0.8", "de"), ("en-US,en;q=0.9,de;q=0.8", "en"), ("de-AT", "de"),
    ("en;q=0.4, de;q=0.7", "de"), ("fr-FR,fr;q=0.9", "en"), ("", "en"), ("*", "en"), ("de;q=abc, en", "en"),
    ("DE", "de"), ("de;q=0", "en"),
])
def test_the_language_is_the_browsers_first_choice_of_german_and_english(header, language):
    assert i18n.negotiate_language(header) == language


async def test_a_german_browser_gets_german_pages_and_an_english_one_english(client):
    url = "/municipalities/halle/collections/commercial-sites/items/gs-001?f=html"
    german = await client.get(url, headers=GERMAN)
    assert german.status_code == 200
    assert german.headers["content-language"] == "de"
    assert {"Accept", "Accept-Language"} <= {v.strip() for v in german.headers["vary"].split(",")}
    assert '<html lang="de">' in german.text
    # The layer type's titles and code labels in German, the property's name in the tooltip.
    assert re.search(r'<th title="zoning">Gebietsart</th><td>Industriegebiet \(GI\)</td>', german.text)
    assert '<th title="availability">Verfügbarkeit</th><td>vermarktet (vermarktet)</td>' in german.text
    assert '<th title="ownership">Eigentum</th><td>kommunal (kommunal)</td>' in german.text
    assert re.search(r'<th title="rail_siding">Gleisanschluss</th><td>(ja|nein)</td>', german.text)
    assert '<th title="area_net_ha">Nettofläche (ha)</th><td>38,5</td>' in german.text
    assert ">Objekte</a>" in german.text and "offene Planungsdaten" in german.text

    english = await client.get(url, headers=ENGLISH)
    assert english.headers["content-language"] == "en" and '<html lang="en">' in english.text
    assert re.search(r'<th title="zoning">Zoning</th><td>Industriegebiet \(industrial area\) \(GI\)</td>', english.text)
    assert '<th title="area_net_ha">Net area (ha)</th><td>38.5</td>' in english.text
    assert '<td>vermarktet (sold or let) (vermarktet)</td>' in english.text  # the schema's label, as it is

    # Each language is its own representation: its own ETag, so a cached English page is never shown as German.
    assert german.headers["etag"] != english.headers["etag"]
    again = await client.get(url, headers={**GERMAN, "If-None-Match": english.headers["etag"]})
    assert again.status_code == 200 and again.headers["content-language"] == "de"
    same = await client.get(url, headers={**GERMAN, "If-None-Match": german.headers["etag"]})
    assert same.status_code == 304


@pytest.mark.parametrize("path", [
    "/?f=html", "/municipalities/halle?f=html", "/municipalities/halle/collections?f=html",
    "/municipalities/halle/collections/commercial-sites?f=html",
    "/region/collections/commercial-sites/items?f=html&limit=2", "/municipalities/halle/conformance?f=html",
    "/viewer", "/api?f=html",
])
async def test_every_page_is_german_for_a_german_browser(client, path):
    answer = await client.get(path, headers=GERMAN)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-language"] == "de" and '<html lang="de">' in answer.text
    assert ">Start</a>" in answer.text and "offene Planungsdaten" in answer.text
    english_only = ["open planning data", "Browse the features", "Download all", "Layer type", "features.",
                    "API documentation", "Zoom to extent", "Open the map viewer", "Collections</"]
    assert not [t for t in english_only if t in answer.text], path


async def test_the_api_answers_the_same_in_every_language(client):
    for path in ("/municipalities/halle/collections/commercial-sites", "/municipalities/halle/collections"
                 "/commercial-sites/items?limit=2"):
        german, english = await client.get(path, headers=GERMAN), await client.get(path, headers=ENGLISH)
        assert german.json() | {"timeStamp": None} == english.json() | {"timeStamp": None}
        assert german.headers["etag"] == english.headers["etag"]
        assert "content-language" not in german.headers


# Code labels the schemas write in English only. Every other label without English in brackets is German only
# ("Gewerbegebiet") and needs a gloss in the English catalog; GE-e's brackets hold its code, not English.
ENGLISH_LABELS = {"municipal", "private", "mixed", "B-Plan in force", "B-Plan in preparation", "no B-Plan"}
CODE_IN_BRACKETS = {"eingeschränktes Gewerbegebiet (GE-e)"}


def test_english_pages_gloss_the_code_labels_that_are_german_only():
    """The schemas name some codes in German only (BauNVO's "Gewerbegebiet"). An English page adds the English
    in brackets, as the schemas do for the others ("verfügbar (available)"); the catalog glosses nothing else."""
    with (ROOT / "service" / "locale" / "en" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="en")
    glossed = {m.id: m.string for m in catalog if m.id and any(m.string if isinstance(m.string, tuple) else [m.string])}
    labels = {label for layer in registry().values() for spec in layer.schema.get("properties", {}).values()
              for label in (spec.get("x-labels") or {}).values()}
    assert set(glossed) == {label for label in labels if "(" not in label} - ENGLISH_LABELS | CODE_IN_BRACKETS
    for label, text in glossed.items():
        assert text.startswith(label.removesuffix(")") + ", " if label in CODE_IN_BRACKETS else f"{label} ("), text
    assert i18n.translations("en").gettext("Wald") == "Wald (forest)"
    assert i18n.translations("en").gettext("Site name") == "Site name"  # English stays as it is


def test_every_text_of_the_pages_has_its_german_translation():
    """What Babel collects by babel.cfg (the templates' `_()` and ngettext, the code's N_(), every title in
    schemas/) and what the pages translate besides: each has a German text with the same placeholders."""
    with (ROOT / "service" / "locale" / "de" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="de")
    with (ROOT / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    wanted = {m[2] for m in extract_from_dir(str(ROOT), method_map, options_map)}
    needed = {i18n.YES, i18n.NO, FORMATS["csv"].title, FORMATS["shp"].title}
    for layer in registry().values():
        needed |= {layer.title} | {f["title"] for f in layer.display_fields().values()}
    assert needed <= wanted, f"babel.cfg does not collect {needed - wanted}"
    missing, wrong = [], []
    for msgid in wanted:
        message = catalog.get(msgid)
        if message is None or not message.string or (isinstance(message.string, tuple) and not all(message.string)):
            missing.append(msgid)
            continue
        ids = msgid if isinstance(msgid, tuple) else (msgid,)
        texts = message.string if isinstance(message.string, tuple) else (message.string,)
        if {p for i in ids for p in re.findall(r"%\(\w+\)[sd]|\{\w+\}", i)} != \
                {p for t in texts for p in re.findall(r"%\(\w+\)[sd]|\{\w+\}", t)}:
            wrong.append(msgid)
    assert not missing, f"no German text for {missing}"
    assert not wrong, f"placeholders differ in {wrong}"


async def test_the_viewer_speaks_german_in_a_german_browser(live_server):
    async with browser_page(1280, 900, locale="de-DE") as page:
        await open_viewer(page, f"{live_server}/viewer?root=/municipalities/halle")
        panel = await page.locator(".panel").inner_text()
        assert "Kommune oder Region" in panel and "Auf Ausdehnung zoomen" in panel
        assert "Region (alle Kommunen)" in await page.locator("#root-select").inner_text()
        await page.select_option("#root-select", "/region")
        await wait_until(page, "window.geotwinViewerReady === true")
        legend = await page.locator("#layers").inner_text()
        assert "Schutzgebiet – Region" in legend
        assert "Naturschutzgebiet\n" in legend + "\n" and "nature reserve" not in legend  # the codes' labels
        await open_viewer(page, f"{live_server}/viewer?root=/municipalities/halle")
        shown = await (await click_star_park(page)).inner_text()
        assert re.search(r"Gebietsart\s+Industriegebiet \(GI\)", shown), shown
        assert re.search(r"Nettofläche \(ha\)\s+38,5", shown), shown  # a German decimal comma
        assert re.search(r"Gleisanschluss\s+(ja|nein)", shown), shown
        assert re.search(r"Verfügbarkeit\s+vermarktet \(vermarktet\)", shown), shown


@pytest.mark.parametrize(("language", "expected"), [
    ("de", ["200.000", "3.870,25", "0,1234567", "1998", "38,5"]),
    ("en", ["200,000", "3,870.25", "0.1234567", "1998", "38.5"]),
])
def test_numbers_are_written_as_the_pages_language_writes_them(language, expected):
    """Counts grouped, hectares with two decimals, property values with every digit and never grouped (a year,
    a code), all with the language's decimal sign."""
    from service.responses import _count, _hectares, _shown

    token = i18n.use(language)
    try:
        assert [_count(200_000), _hectares(3870.254), _shown(0.1234567), _shown(1998), _shown(38.5)] == expected
    finally:
        i18n.reset(token)


async def test_downloads_and_columns_are_named_in_the_pages_language(client):
    page = (await client.get("/region/collections/commercial-sites/items?f=html&limit=2", headers=GERMAN)).text
    assert "download>Excel (ein Punkt je Objekt als x/y)</a>" in page and "download>GeoPackage</a>" in page
    assert '<th title="municipality">Kommune</th>' in page
    assert "<h1>Gewerbe- und Industrieflächenpotenzial – Region</h1>" in page  # a regional collection's title
    # What the catalog writes itself, in German with its values; the JSON keeps the English.
    page = (await client.get("/region/collections/ecological-zones?f=html", headers=GERMAN)).text
    assert re.search(r"<p>Schutzgebiet aller Kommunen, die sie veröffentlichen \(Halle \(Saale\), [^<]*\)\.</p>", page)
    page = (await client.get("/municipalities/halle?f=html", headers=GERMAN)).text
    assert "<p>Von Halle (Saale) veröffentlichte Ebenen (Sachsen-Anhalt, AGS 15002000).</p>" in page
    doc = (await client.get("/municipalities/halle", headers={**GERMAN, "Accept": "application/json"})).json()
    assert doc["description"] == "Layers published by Halle (Saale) (Sachsen-Anhalt, AGS 15002000)."
    page = (await client.get("/municipalities/halle/collections/commercial-sites?f=html", headers=ENGLISH)).text
    assert "download>Excel (a point of each feature as x/y)</a>" in page
    assert "download>Shapefile (zipped)</a>" in page
    page = (await client.get("/?f=html", headers=GERMAN)).text
    assert "Jede Kommune hat ihre eigene API-Adresse" in page
    page = (await client.get("/processes/statistics/chart", headers=GERMAN)).text  # codes with their labels
    assert '<th title="availability">Verfügbarkeit</th>' in page
    assert "<td>vermarktet (vermarktet)</td>" in page and "<td>Naturschutzgebiet (NSG)</td>" in page
    assert '"NSG": "Naturschutzgebiet"' in page  # the chart's legend names the codes as the tables do
    root = (await client.get("/?f=json", headers=GERMAN)).json()
    assert root["description"].startswith("Planning, commercial-land")  # the JSON is the same in any language
