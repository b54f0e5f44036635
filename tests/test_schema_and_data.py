"""The database schema (Alembic), the layer-type contracts, the demo data and the loader's all-or-nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from jsonschema import Draft202012Validator

from service.db import connect
from service.errors import InvalidData
from service.layertypes import registry
from service.loader import DEMO_DIR, load_demo
from service.migrate import alembic_config, upgrade

ROOT = Path(__file__).resolve().parent.parent


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}
    finally:
        await conn.close()


def test_migrations_build_from_empty_and_match_the_models(empty_db):
    url = empty_db()
    upgrade(url)  # creates the PostGIS extension itself
    assert {"municipality", "collection", "feature", "alembic_version"} <= asyncio.run(_tables(url))
    command.check(alembic_config(url))  # raises if models and migrations drifted apart
    command.downgrade(alembic_config(url), "base")
    assert asyncio.run(_tables(url)) & {"municipality", "collection", "feature"} == set()
    upgrade(url)


def test_feature_storage_is_metric_and_indexed(cluster, db_url):
    srid = cluster.psql("SELECT Find_SRID('public', 'feature', 'geom')", database="geotwin_test")
    assert srid == "25832"
    indexes = cluster.psql("SELECT string_agg(indexdef, E'\\n') FROM pg_indexes WHERE tablename = 'feature'",
                           database="geotwin_test")
    assert "USING gist (collection_id, geom)" in indexes
    assert "USING gin (properties jsonb_path_ops)" in indexes
    assert "geotwin_num((properties -> 'area_net_ha'::text))" in indexes
    plan = cluster.psql(
        "SET enable_seqscan = off; EXPLAIN SELECT 1 FROM feature WHERE properties @> '{\"zoning\": \"GI\"}'",
        database="geotwin_test")
    assert "ix_feature_properties" in plan


def test_layer_type_schemas_are_valid_json_schema():
    for name, lt in registry().items():
        Draft202012Validator.check_schema(lt.schema)
        major, minor, _ = lt.version.split(".")
        assert lt.schema["$id"] == f"urn:geotwin:layer-type:{name}:{major}.{minor}"
    codes = registry()["ecological-zone"].enum_values("category")
    assert {"NSG", "LSG", "FFH", "SPA", "UESG", "BIOTOP"} <= set(codes)
    # 1.1 added the BauNVO zones WS, MD, MDW and the F-Plan's building land W, M, G, S; 1.0's codes all stay.
    assert set(registry()["planning-zone"].enum_values("land_use")) == {
        "WR", "WA", "WB", "MI", "MU", "MK", "GE", "GI", "SO", "GRUEN", "VERKEHR", "WASSER", "WALD",
        "LANDWIRTSCHAFT"} | {"WS", "MD", "MDW", "W", "M", "G", "S"}
    assert set(registry()["commercial-site"].enum_values("availability")) == {
        "verfuegbar", "reserviert", "vermarktet", "in_entwicklung"}


def test_layer_type_check_names_the_property():
    issues = registry()["commercial-site"].check(
        {"name": "x", "area_gross_ha": -1, "zoning": "XX", "availability": "verfuegbar", "extra": 1})
    by_property = {i.property: i.message for i in issues}
    assert set(by_property) == {"area_gross_ha", "zoning", "servicing", "extra"}
    assert registry()["planning-zone"].check({"plan_number": "1", "plan_name": "n", "plan_type": "BPLAN",
                                              "plan_status": "rechtskraeftig", "land_use": "GE",
                                              "in_force_from": "2020-13-01"})[0].property == "in_force_from"


def test_demo_files_are_in_their_official_crs_with_holes_multipolygons_and_umlauts():
    manifest = json.loads((DEMO_DIR / "manifest.json").read_text(encoding="utf-8"))
    crs_of = {m["slug"]: m["crs"] for m in manifest["municipalities"]}
    assert crs_of == {"halle": 25832, "leipzig": 25833, "magdeburg": 25832}
    kinds, names = set(), []
    for muni in manifest["municipalities"]:
        types = {c["layer_type"] for c in muni["collections"]}
        assert {"planning-zone", "commercial-site", "ecological-zone"} <= types
        for c in muni["collections"]:
            doc = json.loads((DEMO_DIR / c["file"]).read_text(encoding="utf-8"))
            assert doc["crs"]["properties"]["name"].endswith(f"::{muni['crs']}")
            for f in doc["features"]:
                g = f["geometry"]
                kinds.add(g["type"])
                if g["type"] == "Polygon" and len(g["coordinates"]) > 1:
                    kinds.add("Polygon with hole")
                names.append(json.dumps(f["properties"], ensure_ascii=False))
    assert {"Polygon", "MultiPolygon", "Polygon with hole", "Point"} <= kinds
    assert any(ch in "".join(names) for ch in "äöüßÄÖÜ")


def test_demo_sites_overlap_protected_zones_in_every_municipality(cluster, db_url):
    rows = cluster.psql("""
        SELECT m.slug || '=' || count(*) FROM feature s
        JOIN collection cs ON cs.id = s.collection_id AND cs.layer_type = 'commercial-site'
        JOIN feature z ON ST_Intersects(s.geom, z.geom) AND ST_Area(ST_Intersection(s.geom, z.geom)) > 100
        JOIN collection cz ON cz.id = z.collection_id AND cz.layer_type = 'ecological-zone'
             AND cz.municipality_id = cs.municipality_id
        JOIN municipality m ON m.id = cs.municipality_id GROUP BY m.slug ORDER BY m.slug""",
                        database="geotwin_test")
    overlaps = dict(line.split("=") for line in rows.splitlines())
    assert set(overlaps) == {"halle", "leipzig", "magdeburg"}
    assert all(int(n) >= 1 for n in overlaps.values())


def test_loader_is_all_or_nothing_and_reports_every_problem(tmp_path, empty_db):
    url = empty_db()
    upgrade(url)
    demo = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, demo)
    broken = json.loads((demo / "magdeburg-commercial-sites.geojson").read_text(encoding="utf-8"))
    broken["features"][1]["properties"]["availability"] = "sofort"
    broken["features"][2]["geometry"] = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10],
                                                                             [0, 0]]]}
    broken["features"][3]["id"] = broken["features"][0]["id"]
    (demo / "magdeburg-commercial-sites.geojson").write_text(json.dumps(broken), encoding="utf-8")

    async def attempt() -> tuple[InvalidData, int]:
        conn = await connect(url)
        try:
            with pytest.raises(InvalidData) as caught:
                await load_demo(conn, demo)
            return caught.value, await conn.fetchval("SELECT count(*) FROM feature")
        finally:
            await conn.close()

    err, written = asyncio.run(attempt())
    assert written == 0  # Halle and Leipzig were loaded first in the same transaction: rolled back
    issues = err.where["issues"]
    assert {(i["index"], i["property"]) for i in issues} == {(1, "availability"), (2, "geometry"), (3, "id")}
    assert "Self-intersection" in next(i["message"] for i in issues if i["property"] == "geometry")
    assert err.where["index"] == 1 and err.where["property"] == "availability"


def test_one_command_loads_the_demo_into_an_empty_database(empty_db):
    from typer.testing import CliRunner

    from service.cli import app

    url = empty_db()
    result = CliRunner().invoke(app, ["load-demo", "--url", url])
    assert result.exit_code == 0, result.output
    assert "59 features in 11 collections" in result.output

    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval("SELECT count(*) FROM feature")
        finally:
            await conn.close()

    assert asyncio.run(count()) == 59


def test_fast_and_explaining_validators_agree():
    """jsonschema-rs decides, Python's jsonschema explains: they must agree on what is valid."""
    import copy

    from service.generator import Spec, chunk

    mutations = [("area_gross_ha", -1), ("area_gross_ha", "12"), ("zoning", "XX"), ("last_update", "2020-13-01"),
                 ("last_update", "2020-1-1"), ("rail_siding", "yes"), ("name", ""), ("unknown", 1), ("servicing", None)]
    layer = registry()["commercial-site"]
    _, props = chunk(Spec("commercial-site", 10), 0)
    for base in props[:50]:
        assert layer.fast.is_valid(base) and not list(layer.validator.iter_errors(base))
        for key, value in mutations:
            broken = copy.deepcopy(base)
            broken[key] = value
            slow = list(layer.validator.iter_errors(broken))
            assert layer.fast.is_valid(broken) == (not slow), (key, value)
            assert layer.check(broken), (key, value)


def test_demo_cluster_port_is_remembered_and_avoids_a_taken_one(tmp_path):
    import socket

    from service.localdb import remembered_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        chosen = remembered_port(tmp_path, busy)
        assert chosen != busy
    assert remembered_port(tmp_path, 5) == chosen  # the first choice sticks
