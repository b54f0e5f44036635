"""XPlanGML imports: a development plan as a planning office delivers it becomes planning zones (through the
API's import job and the CLI), zones the layer type cannot express are reported in the file's terms with
nothing written, and hostile or foreign XML is refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import zipfile
from pathlib import Path

import asyncpg
import httpx
import pytest

from bench.imports import make_plan
from service import xplan
from service.errors import GeoTwinError
from service.importer import import_file
from service.layertypes import registry
from service.sources import ImportOptions
from service.xplan import _Object, _open_ring, _plan_properties
from tests.conftest import ROOT, announced, app_client, new_key, openapi_misfits, serve_cli

PLAN = ROOT / "fixtures" / "xplan" / "halle-bplan-214.gml"
# The plan's street area with its ring left open: GDAL's GML reader warns and reads no geometry for it.
UNCLOSED_RING = ("712300 5711000 712900 5711000 712900 5711020 712300 5711020 712300 5711000",
                 "712300 5711000 712900 5711000 712900 5711020")
ZONES = registry()["planning-zone"]
COLLECTION = "/municipalities/halle/collections/planning-zones"
PK = ("SELECT c.id FROM collection c JOIN municipality m ON m.id = c.municipality_id "
      "WHERE m.slug = 'halle' AND c.slug = $1")


@pytest.fixture(scope="module")
def xp_db(demo_db):
    return demo_db("geotwin_xplan")


async def zones(dsn: str) -> dict[str, tuple[float, dict]]:
    """The planning zones of Halle: id -> (area in m² in EPSG:25832, properties)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT f.fid, ST_Area(ST_Transform(f.geom, 25832)) AS area, f.properties FROM feature f "
            "JOIN collection c ON c.id = f.collection_id JOIN municipality m ON m.id = c.municipality_id "
            "WHERE m.slug = 'halle' AND c.slug = 'planning-zones'")
    finally:
        await conn.close()
    return {r["fid"]: (round(r["area"]), json.loads(r["properties"])) for r in rows}


async def run_import(dsn: str, path: Path, slug: str = "planning-zones", layer=ZONES, **options):
    conn = await asyncpg.connect(dsn)
    try:
        return await import_file(conn, await conn.fetchval(PK, slug), layer, path, ImportOptions(**options))
    finally:
        await conn.close()


def variant(tmp_path: Path, name: str, *replacements: tuple[str, str]) -> Path:
    text = PLAN.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


async def _wait(client, url: str, headers: dict) -> dict:
    deadline = time.monotonic() + 60
    while (job := (await client.get(url, headers=headers)).json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)
    return job


async def test_a_development_plan_imports_as_planning_zones_through_the_api(cluster, xp_db):
    before = await zones(xp_db)
    key = await new_key(xp_db, "halle", "editor", "Stadtplanung")
    auth = {"X-API-Key": key}
    async with app_client(cluster, "geotwin_xplan") as (_, client):
        r = await client.post(f"{COLLECTION}/imports", params={"filename": PLAN.name, "mode": "append"},
                              headers=auth, content=PLAN.read_bytes())
        assert r.status_code == 202, r.text
        job = await _wait(client, r.headers["location"], auth)
        assert job["status"] == "succeeded", job
        assert not await openapi_misfits(client, "/municipalities/halle/api", "get",
                                         "/collections/{collectionId}/imports/{jobId}", "200", job)
        report = job["report"]
        assert report["source"] == PLAN.name and report["driver"] == "XPlanGML 5.4", report
        assert report["imported"] == 4 and report["crs"].endswith("/25832"), report
        assert report["skipped"] == {"BP_BauGrenze": 1, "XP_PPO": 1} and report["linearized"] == 1, report
        # The zones are served like any other: the planner filters the new plan's industrial area.
        r = await client.get(f"{COLLECTION}/items", params={"filter": "plan_number = 'B-Plan Nr. 214'"})
        assert r.status_code == 200 and r.json()["numberMatched"] == 4, r.text
    after = await zones(xp_db)
    assert set(after) - set(before) == {"GML_gi-1", "GML_ge-1", "GML_strasse-1", "GML_gruen-1"}
    plan = {"plan_number": "B-Plan Nr. 214", "plan_name": "Gewerbegebiet Halle-Ost, Erweiterung Star Park",
            "plan_type": "BPLAN", "plan_status": "in_aufstellung"}
    assert after["GML_gi-1"] == (120_000, {**plan, "zone_name": "GI 1", "land_use": "GI", "grz": 0.8,
                                           "max_height_m": 25})
    area, props = after["GML_ge-1"]  # 400 × 180 m and the segment an arc of 50 m rise over 400 m adds
    assert 72_000 + 13_000 < area < 72_000 + 14_000, area
    assert props == {**plan, "zone_name": "GE 1", "land_use": "GE", "grz": 0.8, "gfz": 1.6, "max_storeys": 4}
    assert after["GML_strasse-1"] == (12_000, {**plan, "land_use": "VERKEHR"})
    assert after["GML_gruen-1"][1] == {**plan, "land_use": "GRUEN"}


async def test_zones_the_layer_type_cannot_express_are_reported_in_the_files_terms_and_nothing_is_written(
        xp_db, tmp_path):
    path = variant(tmp_path, "bplan-dorf.gml",
                   ("<xplan:besondereArtDerBaulNutzung>1700<", "<xplan:besondereArtDerBaulNutzung>9999<"),
                   ("<xplan:GRZ>0.8</xplan:GRZ>\n      <xplan:allgArt",
                    "<xplan:GRZ>1.5</xplan:GRZ>\n      <xplan:allgArt"),
                   ("<xplan:nutzungsform>2000<", "<xplan:nutzungsform>1000<"))
    before = await zones(xp_db)
    with pytest.raises(GeoTwinError) as err:
        await run_import(xp_db, path, mode="append")
    report = err.value.where["report"]
    found = [(i["index"], i["fid"], i["property"]) for i in report["issues"]]
    # The indexes are the features' places in the XPlanGML file (plan 0, area 1, zones 2 to 5).
    assert found == [(2, "GML_gi-1", "grz"), (3, "GML_ge-1", "land_use"), (5, "GML_gruen-1", "land_use")], found
    messages = {i["fid"]: i["message"] for i in report["issues"]}
    assert "9999 (sonstiges Gebiet), which the layer type planning-zone has no code for" in messages["GML_ge-1"]
    assert "private green" in messages["GML_gruen-1"], messages
    assert report["source"] == "bplan-dorf.gml" and report["rejected"] == 3 and report["imported"] == 0
    assert err.value.description.startswith("bplan-dorf.gml: nothing imported; 3 problem(s), first at feature 2 "
                                            "(GML_gi-1): grz:"), err.value.description
    assert await zones(xp_db) == before

    undated = variant(tmp_path, "undated.gml", ("<xplan:rechtsstand>2400</xplan:rechtsstand>", ""))
    with pytest.raises(GeoTwinError) as err:
        await run_import(xp_db, undated, mode="append")
    issues = err.value.where["report"]["issues"]
    assert [(i["fid"], i["property"]) for i in issues] == [  # each zone names its plan's problem
        (z, "plan_status") for z in ("GML_gi-1", "GML_ge-1", "GML_strasse-1", "GML_gruen-1")], issues
    assert issues[0]["message"] == ("the plan GML_plan-214 gives neither rechtsstand nor a date of entry into "
                                    "force"), issues
    assert await zones(xp_db) == before


async def test_a_land_use_plan_imports_its_building_land(xp_db, tmp_path):
    """An F-Plan presents building land (Bauflächen: W, M, G, S), often without the building zone."""
    fnp = variant(tmp_path, "fnp.gml", *((f"xplan:{bp}", f"xplan:{fp}") for bp, fp in (
        ("BP_Plan", "FP_Plan"), ("BP_Bereich", "FP_Bereich"), ("BP_BaugebietsTeilFlaeche", "FP_BebauungsFlaeche"),
        ("BP_StrassenVerkehrsFlaeche", "FP_Strassenverkehr"), ("BP_GruenFlaeche", "FP_Gruen"))),
        ("<xplan:besondereArtDerBaulNutzung>1800</xplan:besondereArtDerBaulNutzung>", ""),
        ("<xplan:besondereArtDerBaulNutzung>1700</xplan:besondereArtDerBaulNutzung>",
         "<xplan:allgArtDerBaulNutzung>2000</xplan:allgArtDerBaulNutzung>"))
    report = await run_import(xp_db, fnp, mode="replace")
    assert report.imported == 4, report
    found = {fid: (p["land_use"], p["plan_type"], p["plan_number"]) for fid, (_, p) in (await zones(xp_db)).items()}
    assert found == {"GML_gi-1": ("G", "FNP", "214"), "GML_ge-1": ("M", "FNP", "214"),
                     "GML_strasse-1": ("VERKEHR", "FNP", "214"), "GML_gruen-1": ("GRUEN", "FNP", "214")}, found


async def test_the_legend_names_the_codes_the_zones_use_and_follows_an_import(cluster, xp_db, tmp_path):
    """Planning zones have 21 codes; a map's legend lists those the collection uses, also after it changed."""
    style = f"{COLLECTION}/styles/default"
    async with app_client(cluster, "geotwin_xplan") as (app, client):
        await run_import(xp_db, PLAN, mode="replace")
        items = (await client.get(style)).json()["metadata"]["geotwin:legend"]["planning-zones"]["items"]
        assert [i["value"] for i in items] == ["GE", "GI", "GRUEN", "VERKEHR"], items
        before = app.state.catalog_cache.generation
        await run_import(xp_db, variant(tmp_path, "dorf.gml", ("<xplan:besondereArtDerBaulNutzung>1700<",
                                                               "<xplan:besondereArtDerBaulNutzung>1400<")))
        await announced(app, before)  # the catalog hears of the new version
        items = (await client.get(style)).json()["metadata"]["geotwin:legend"]["planning-zones"]["items"]
        assert [(i["value"], i["label"]) for i in items][:2] == [("MD", "Dorfgebiet"), ("GI", "Industriegebiet")]


@pytest.mark.parametrize("changes, problem", [
    ([('gml:id="GML_gi-1"', "")], (2, "", "id")),
    ([("<xplan:GRZ>0.8</xplan:GRZ>\n      <xplan:allgArt", "<xplan:GRZ>viel</xplan:GRZ>\n      <xplan:allgArt")],
     (2, "GML_gi-1", "grz")),
    ([('<gml:Polygon srsName="EPSG:25832" gml:id="GML_strasse-1-geom">',
       '<gml:Point srsName="EPSG:25832" gml:id="GML_strasse-1-geom"><gml:pos>712300 5711000</gml:pos></gml:Point>'
       '<!--'), ("5711020 712300 5711000</gml:posList></gml:LinearRing></gml:exterior>\n        </gml:Polygon>",
                 "-->")], (4, "GML_strasse-1", "geometry")),
    ([UNCLOSED_RING], (4, "GML_strasse-1", "geometry")),
    ([('gml:id="GML_gruen-1"', 'gml:id="GML_gi-1"')], (5, "GML_gi-1", "id")),
], ids=["no gml:id", "GRZ not a number", "a point", "an unclosed ring", "a gml:id twice"])
@pytest.mark.filterwarnings("ignore:Non closed ring detected:RuntimeWarning")  # GDAL's, expected here
async def test_a_broken_zone_is_named_with_its_reason_and_nothing_is_written(xp_db, tmp_path, changes, problem):
    before = await zones(xp_db)
    with pytest.raises(GeoTwinError) as err:
        await run_import(xp_db, variant(tmp_path, "broken.gml", *changes), mode="replace")
    issues = err.value.where["report"]["issues"]
    assert [(i["index"], i["fid"], i["property"]) for i in issues] == [problem], issues
    assert await zones(xp_db) == before


@pytest.mark.parametrize("status, start, end, expected", [
    ("2400", None, None, "in_aufstellung"), ("3000", None, None, "in_aufstellung"),
    ("4000", "2009-05-14", None, "rechtskraeftig"), ("45000", None, None, "rechtskraeftig"),
    ("50000", None, None, "aufgehoben"), (None, "2009-05-14", None, "rechtskraeftig"),
    (None, "2009-05-14", "2020-01-31", "aufgehoben")])
def test_the_legal_status_follows_rechtsstand_or_else_the_dates(status, start, end, expected):
    plan = _Object("BP_Plan", "GML_p", 0, direct={k: v for k, v in {
        "name": "Test", "nummer": "7", "planArt": "1000", "rechtsstand": status, "inkrafttretensDatum": start,
        "untergangsDatum": end}.items() if v})
    props, problems = _plan_properties(plan)
    assert not problems and props["plan_status"] == expected and props["plan_number"] == "B-Plan Nr. 7"
    assert (props["in_force_from"], props["in_force_until"]) == (start, end)


async def test_an_adv_srsname_is_understood_and_another_crs_may_be_named(xp_db, tmp_path):
    text = PLAN.read_text().replace('srsName="EPSG:25832"', 'srsName="urn:adv:crs:ETRS89_UTM32"')
    adv = tmp_path / "adv.gml"
    adv.write_text(text)
    report = await run_import(xp_db, adv, mode="replace")
    assert report.imported == 4 and report.crs.endswith("/25832"), report
    assert (await zones(xp_db))["GML_gi-1"][0] == 120_000
    bare = tmp_path / "bare.gml"
    bare.write_text(text.replace(' srsName="urn:adv:crs:ETRS89_UTM32"', ""))
    with pytest.raises(GeoTwinError) as err:
        await run_import(xp_db, bare)
    assert err.value.where == {"parameter": "crs"} and "srsName" in err.value.description
    report = await run_import(xp_db, bare, crs="EPSG:25832")  # named by the import, as for a CSV
    assert report.imported == 4


async def test_an_xplanarchiv_zip_with_its_attachments_imports_its_plan(xp_db, tmp_path):
    archive = tmp_path / "bplan-214.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:  # as XPlanBox and the XLeitstelle pack one
        z.write(PLAN, "xplan.gml")
        z.writestr("Begruendung_BP214.pdf", b"%PDF-1.4 " + bytes(range(256)) * 40)
        z.writestr("Planzeichnung_BP214.png", b"\x89PNG" + bytes(range(256)) * 40)
    report = await run_import(xp_db, archive, mode="replace")
    assert report.source == "bplan-214.zip" and report.driver == "XPlanGML 5.4" and report.imported == 4, report
    assert {"GML_gi-1", "GML_ge-1", "GML_strasse-1", "GML_gruen-1"} <= set(await zones(xp_db))
    escaping = tmp_path / "escaping.zip"
    with zipfile.ZipFile(escaping, "w") as z:
        z.write(PLAN, "../xplan.gml")
    with pytest.raises(GeoTwinError) as err:
        await run_import(xp_db, escaping)
    assert "points outside the archive" in err.value.description


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<xplan:XPlanAuszug xmlns:xplan="http://www.xplanung.de/xplangml/5/4">&lol2;</xplan:XPlanAuszug>"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<xplan:XPlanAuszug xmlns:xplan="http://www.xplanung.de/xplangml/5/4">&secret;</xplan:XPlanAuszug>"""
WFS = """<?xml version="1.0"?>
<wfs:FeatureCollection xmlns:wfs="http://www.opengis.net/wfs/2.0"></wfs:FeatureCollection>"""


async def test_hostile_foreign_and_cut_files_are_refused_and_nothing_is_written(xp_db, tmp_path):
    before = await zones(xp_db)
    cases = {"bomb.gml": (BOMB, "DTD"), "xxe.gml": (XXE, "DTD"), "wfs.gml": (WFS, "not an XPlanGML file"),
             "cut.gml": (PLAN.read_text()[:5000], "not well-formed XML"),
             "empty.gml": ("", "the file is empty"),
             "rp.gml": (PLAN.read_text().replace("BP_Plan", "RP_Plan"), "holds no BP_Plan or FP_Plan")}
    for name, (text, reason) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(GeoTwinError) as err:
            await run_import(xp_db, tmp_path / name)
        assert reason in err.value.description and err.value.where.get("parameter") == "file", (name, err.value)
    with pytest.raises(GeoTwinError) as err:  # a plan's zones go into a planning-zone collection only
        await run_import(xp_db, PLAN, slug="commercial-sites", layer=registry()["commercial-site"])
    assert "layer type planning-zone" in err.value.description
    assert await zones(xp_db) == before


async def test_a_large_plan_is_read_as_a_stream_with_progress_and_each_zone_keeps_its_geometry(
        xp_db, tmp_path, monkeypatch):
    monkeypatch.setattr(xplan, "BATCH", 1000)  # written (and read from GDAL) in three batches
    path = make_plan(2500, tmp_path)  # the plan, its area and 2,500 copies of its first zone on a grid
    seen: list[int] = []
    wrote: list[tuple[int, int]] = []
    converted, issues = xplan.convert(path, work=tmp_path, seen=seen.append, wrote=lambda *n: wrote.append(n))
    assert issues == [] and seen == [1000, 2000]  # features read so far, every thousand
    # then the zones converted: the counter moves on while GDAL reads their geometries once more (it stood
    # still for 12 s of a 29 s conversion of 100,000 zones)
    assert wrote == [(0, 2500), (1000, 2500), (2000, 2500), (2500, 2500)]
    assert len(converted.positions) == 2500 and sorted(converted.positions) == list(range(2, 2502))
    await run_import(xp_db, path, mode="replace")
    conn = await asyncpg.connect(xp_db)
    try:
        corner = {r["fid"]: (r["x"], r["y"]) for r in await conn.fetch(
            "SELECT fid, round(ST_XMin(g)) AS x, round(ST_YMin(g)) AS y FROM (SELECT fid, "
            "ST_Transform(geom, 25832) AS g FROM feature WHERE collection_id = $1) z",
            await conn.fetchval(PK, "planning-zones"))}
    finally:
        await conn.close()
    assert corner == {f"GML_gi-1-{k}": (712300 + 700 * (k % 200), 5710800 + 300 * (k // 200))
                      for k in range(2500)}, corner


def test_the_cli_imports_a_plan_and_says_what_it_left_out(cluster, xp_db, tmp_path):
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "geotwin", "PGDATABASE": "geotwin_xplan",
           "PATH": "/usr/bin:/bin", "COLUMNS": "160"}
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "geotwin"), "import", str(PLAN), "--municipality", "halle",
                             "--collection", "planning-zones"], capture_output=True, text=True, env=env, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "XPlanGML objects that are no planning zones, not imported: 1 BP_BauGrenze, 1 XP_PPO" in out, out
    assert "1 geometries with arcs read as straight segments" in out, out
    assert "4 features imported into halle/planning-zones" in out, out
    broken = variant(tmp_path, "broken.gml", UNCLOSED_RING)
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "geotwin"), "import", str(broken), "--municipality",
                             "halle", "--collection", "planning-zones"], capture_output=True, text=True, env=env,
                            timeout=120)
    out = " ".join((result.stdout + result.stderr).split())  # the console wraps long lines
    assert result.returncode == 1 and "feature 4 (GML_strasse-1): geometry: a ring of its geometry does not close: " \
        "it begins at 712300 5711000 and ends at 712900 5711020" in out, out
    # GDAL's warning in a line of its own, not with pyogrio's file and source line
    assert "warning: Non closed ring detected" in result.stderr and "raw.py" not in result.stderr, result.stderr


def test_what_gdal_warns_of_during_a_served_import_is_a_json_log_line(cluster, xp_db, tmp_path):
    """GDAL, through pyogrio, warns of an unclosed ring as a Python warning. Printed as it is, it put two lines of
    plain text among the service's JSON lines; a log shipper reading JSON lost them or choked."""
    key = asyncio.run(new_key(xp_db, "halle", "editor"))
    broken = variant(tmp_path, "broken.gml", UNCLOSED_RING)
    base, proc = serve_cli("geotwin_xplan", cluster, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        r = httpx.post(f"{base}{COLLECTION}/imports", params={"filename": "broken.gml"}, content=broken.read_bytes(),
                       headers={"X-API-Key": key})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while (job := httpx.get(r.headers["location"], headers={"X-API-Key": key}).json())["status"] != "failed":
            assert time.monotonic() < deadline and job["status"] != "succeeded", job
            time.sleep(0.2)
        assert "a ring of its geometry does not close" in json.dumps(job), job  # the report says why
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert not [line for line in err.splitlines() if line.strip() and not line.startswith("{")], err[-2000:]
    warned = [json.loads(line) for line in err.splitlines() if "Non closed ring" in line]
    assert warned and warned[0]["logger"] == "py.warnings" and warned[0]["level"] == "WARNING", err[-2000:]


@pytest.mark.parametrize("ring, problem", [
    ("<gml:posList>0 0 1 0 1 1 0 0</gml:posList>", ""),
    ('<gml:posList srsDimension="3">0 0 5 1 0 5 1 1 5 0 0 5.0</gml:posList>', ""),
    ("<gml:posList>0 0 1 0 1 1</gml:posList>", "it begins at 0 0 and ends at 1 1"),
    ("<gml:pos>0 0</gml:pos><gml:pos>1 0</gml:pos><gml:pos>1 1</gml:pos>", "it begins at 0 0 and ends at 1 1"),
    ("<gml:coordinates>0,0 1,0 1,1</gml:coordinates>", ""),  # a form left to GDAL
])
def test_a_ring_that_does_not_close_is_named(ring, problem):
    import xml.etree.ElementTree as ET

    elem = ET.fromstring(f'<gml:LinearRing xmlns:gml="http://www.opengis.net/gml/3.2">{ring}</gml:LinearRing>')
    assert _open_ring(elem).endswith(problem) and bool(_open_ring(elem)) == bool(problem)
