"""Alembic environment: the URL comes from GeoTwin's settings (or `-x url=...`), the driver is asyncpg."""

from __future__ import annotations

import asyncio

from alembic import context
from geoalchemy2 import alembic_helpers
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from service.layertypes import sync_layer_types
from service.models import Base
from service.settings import DatabaseSettings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    url = url or DatabaseSettings().dsn()
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def _include_object(obj, name, type_, reflected, compare_to):
    # PostGIS owns these; they are not ours to migrate.
    if type_ == "table" and name in {"spatial_ref_sys"}:
        return False
    return alembic_helpers.include_object(obj, name, type_, reflected, compare_to)


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include_object,
        process_revision_directives=alembic_helpers.writer,
        render_item=alembic_helpers.render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        sync_layer_types(connection)  # the validity keys of schemas/, whatever changed there since


async def _run_online() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_configure)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
