"""Migrations upgrade a database that holds data: the previous head with the demo, edits and their history is
brought to the current head, and every feature, its history and every collection's metadata are still
there, unchanged; the service then serves them."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from service.cli import _load_demo
from service.migrate import alembic_config, head_revision, upgrade
from tests.conftest import app_client, fingerprint


def previous_head() -> str:
    script = ScriptDirectory.from_config(alembic_config("postgresql://"))
    return script.get_revision(head_revision()).down_revision


@pytest.fixture
def old_db(empty_db):
    """The demo is loaded by this code, at the head, and the schema then taken back to the previous head (which
    tests the downgrade too); the edits are made there."""
    url = empty_db()
    asyncio.run(_with_postgis(url))
    upgrade(url)
    asyncio.run(_load_demo(url))
    command.downgrade(alembic_config(url), previous_head())
    asyncio.run(_edit(url))
    return url


async def _with_postgis(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    finally:
        await conn.close()


async def _edit(url: str) -> None:
    """Changes after the load, so the history holds updates and deletes too."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('geotwin.actor', 'migration test', true)")
            await conn.execute("UPDATE feature SET properties = properties || '{\"name\": \"Umbenannt\"}' "
                               "WHERE fid = (SELECT min(fid) FROM feature)")
            await conn.execute("DELETE FROM feature WHERE fid = (SELECT max(fid) FROM feature)")
    finally:
        await conn.close()


async def test_upgrading_from_the_previous_head_keeps_every_row(cluster, old_db):
    before = await fingerprint(old_db)
    assert before[3] > 40  # demo inserts plus the update and the delete
    await asyncio.to_thread(upgrade, old_db)
    after = await fingerprint(old_db)
    assert after == before
    conn = await asyncpg.connect(old_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM collection c WHERE feature_count <> "
                                   "(SELECT count(*) FROM feature f WHERE f.collection_id = c.id)") == 0
    finally:
        await conn.close()
    database = old_db.rsplit("/", 1)[1]
    async with app_client(cluster, database) as (_, client):
        assert (await client.get("/ready")).json()["migration"] == head_revision()
        items = await client.get("/region/collections/commercial-sites/items", params={"limit": 100})
        assert items.status_code == 200 and items.json()["numberReturned"] > 0


async def test_properties_qgis_wrote_as_a_string_become_objects_on_upgrade(old_db):
    """Before 0014, QGIS 3.22 editing the table left properties as a JSON string; the upgrade repairs them, in
    the table and in the change log, and the repair is logged as a change of its own."""
    await asyncio.to_thread(command.downgrade, alembic_config(old_db), "0013")
    conn = await asyncpg.connect(old_db)
    try:
        fid = await conn.fetchval("SELECT min(fid) FROM feature")
        await conn.execute("UPDATE feature SET properties = to_jsonb(properties::text) WHERE fid = $1", fid)
        assert await conn.fetchval("SELECT jsonb_typeof(properties) FROM feature WHERE fid = $1", fid) == "string"
        await asyncio.to_thread(upgrade, old_db)
        rows = await conn.fetch("SELECT jsonb_typeof(properties) AS t, actor FROM feature_change WHERE fid = $1 "
                                "ORDER BY change_id", fid)
        assert {r["t"] for r in rows} == {"object"}
        assert rows[-1]["actor"].startswith("migration 0014")
        assert await conn.fetchval("SELECT properties->>'name' FROM feature WHERE fid = $1", fid) == "Umbenannt"
    finally:
        await conn.close()


async def test_validity_columns_that_disagree_with_the_properties_follow_them_on_upgrade(old_db):
    """Before 0015, an outside writer could change a zone's `repealed_on` and leave `valid_to` as it was; the
    upgrade sets the columns from the properties, and from then on the database keeps them so."""
    await asyncio.to_thread(command.downgrade, alembic_config(old_db), "0014")
    conn = await asyncpg.connect(old_db)
    zone = ("SELECT f.id FROM feature f JOIN collection c ON c.id = f.collection_id "
            "WHERE c.layer_type = 'ecological-zone' ORDER BY f.id LIMIT 1")
    try:
        pk = await conn.fetchval(zone)
        await conn.execute("UPDATE feature SET properties = properties || '{\"repealed_on\": \"2025-06-30\"}' "
                           "WHERE id = $1", pk)
        assert await conn.fetchval("SELECT valid_to FROM feature WHERE id = $1", pk) is None
        await asyncio.to_thread(upgrade, old_db)
        assert str(await conn.fetchval("SELECT valid_to FROM feature WHERE id = $1", pk)) == "2025-06-30"
        await conn.execute("UPDATE feature SET properties = properties - 'repealed_on' WHERE id = $1", pk)
        assert await conn.fetchval("SELECT valid_to FROM feature WHERE id = $1", pk) is None
    finally:
        await conn.close()


async def test_an_ags_of_six_or_seven_digits_is_refused_from_0016_on_and_an_old_one_named(old_db, caplog):
    """0001 let psql store 5 to 8 digits; from 0016 on, the database holds to 5 or 8 as the API does. A key
    stored before is kept (the upgrade must not stop the service from starting) and named in a warning."""
    await asyncio.to_thread(command.downgrade, alembic_config(old_db), "0015")
    conn = await asyncpg.connect(old_db)
    try:
        await conn.execute("UPDATE municipality SET ags = '150020' WHERE slug = 'halle'")
        with caplog.at_level("WARNING", logger="alembic.runtime.migration"):
            await asyncio.to_thread(upgrade, old_db)
        assert "halle (150020)" in caplog.text
        assert await conn.fetchval("SELECT ags FROM municipality WHERE slug = 'halle'") == "150020"
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE municipality SET ags = '1471300' WHERE slug = 'leipzig'")
        await conn.execute("UPDATE municipality SET ags = '15002000' WHERE slug = 'halle'")
        await conn.execute("ALTER TABLE municipality VALIDATE CONSTRAINT ck_municipality_ags_format")
    finally:
        await conn.close()
