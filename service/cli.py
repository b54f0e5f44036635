"""The `geotwin` command: migrate, load the demo, generate test data, serve, or run the whole local demo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.cli_admin import (
    OWN_DATA,
    OWN_DATABASE,
    UrlOpt,
    collections_app,
    console,
    dsn_of,
    history_app,
    keys_app,
    municipality_app,
)
from service.settings import settings_problems, unknown_settings


def connection_problem(exc: BaseException) -> str | None:
    """What an error says about reaching the database, in one line; None when it is about something else."""
    import socket

    import asyncpg

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror):
            return f"the database host is unknown ({e})"
        if isinstance(e, ConnectionRefusedError | ConnectionResetError | TimeoutError):
            return f"the database does not answer ({e.__class__.__name__}: {e})"
        if isinstance(e, asyncpg.InvalidCatalogNameError | asyncpg.InvalidPasswordError | asyncpg.CannotConnectNowError
                      | asyncpg.InvalidAuthorizationSpecificationError | asyncpg.TooManyConnectionsError):
            return f"the database refused the connection: {e}"
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return None


def _say_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning (GDAL's "Non closed ring detected" while an import reads a file) as one line, without
    the library's file and source line that Python prints."""
    Console(stderr=True).print(f"[yellow]warning: {escape(str(message))}[/]", highlight=False)


class _Commands(typer.Typer):
    """Typer, with a database that cannot be reached, or a setting that cannot be read, reported in a line
    instead of a traceback, and warnings in a line each."""

    def __call__(self, *args, **kwargs):
        warnings.showwarning = _say_warning
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            lines = settings_problems(exc)
            if lines is None:
                raise
            Console(stderr=True).print("[red]" + "\n".join(lines) + "[/]\nThe settings come from the environment "
                                       "and .env; .env.example explains each.", highlight=False)
            raise SystemExit(2) from None
        except Exception as exc:
            problem = connection_problem(exc)
            if problem is None:
                raise
            where = "--url" if "--url" in sys.argv else "PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE (or .env)"
            Console(stderr=True).print(f"[red]{problem}[/]\nThe connection comes from {where}.", highlight=False)
            raise SystemExit(1) from None


app = _Commands(help="GeoTwin: municipal planning layers as OGC APIs.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(municipality_app, name="municipality")
app.add_typer(history_app, name="history")
app.add_typer(collections_app, name="collections")
DEMO_PORT = 54329


def option_variables() -> list[str]:
    """The environment variables the commands' options read (`geotwin mirror --key`: GEOTWIN_MIRROR_KEY)."""
    found: list[str] = []
    todo = [typer.main.get_command(app)]
    while todo:
        command = todo.pop()
        todo += getattr(command, "commands", {}).values()  # a group's (typer's own click classes)
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            found += [envvar] if isinstance(envvar, str) else list(envvar or [])
    return found




@app.command()
def migrate(url: UrlOpt = None) -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from service.migrate import upgrade

    upgrade(dsn_of(url))
    console.print("[green]schema is up to date[/]")


async def _load_demo(dsn: str) -> dict[str, int]:
    from service.db import connect
    from service.loader import DEMO_DIR, load_demo

    manifest_count = sum(1 for _ in DEMO_DIR.glob("*.geojson"))
    conn = await connect(dsn)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("loading demo layers", total=manifest_count)

            def step(name: str, n: int) -> None:
                progress.update(task, advance=1, description=f"loaded {name} ({n} features)")

            return await load_demo(conn, progress=step)
    finally:
        await conn.close()


@app.command("load-demo")
def load_demo_cmd(url: UrlOpt = None) -> None:
    """Load the demo municipalities (Halle, Leipzig, Magdeburg) and their layers, replacing earlier demo data.
    Works on an empty database: the schema is brought up to date first."""
    from service.migrate import upgrade

    upgrade(dsn_of(url))
    counts = asyncio.run(_load_demo(dsn_of(url)))
    console.print(f"[green]{sum(counts.values())} features in {len(counts)} collections[/]")


@app.command("mirror")
def mirror_cmd(
    source: Annotated[str, typer.Argument(help="the source collection's URL, e.g. "
                                               "https://geo.halle.de/municipalities/halle/collections/commercial-sites")],
    municipality: Annotated[str, typer.Option(help="the municipality here that keeps the copy")],
    collection: Annotated[str | None, typer.Option(help="collection id here (default: the source's)")] = None,
    key: Annotated[str | None, typer.Option(help="API key at the source (for internal collections)",
                                            envvar="GEOTWIN_MIRROR_KEY")] = None,
    again: Annotated[bool, typer.Option(
        "--again", help="read the source's whole feed again and drop what it no longer has (a source restored "
                        "from an older backup is noticed without it; this mends a copy by hand)")] = False,
    url: UrlOpt = None,
) -> None:
    """Bring a copy of another GeoTwin's collection up to date through its change feed (run it from cron)."""
    import httpx

    from service.mirror import mirror

    target = collection or source.rstrip("/").rsplit("/", 1)[-1]

    async def run() -> int:
        from service.db import connect

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        conn = await connect(dsn_of(url))
        try:
            async with httpx.AsyncClient(headers=headers, timeout=60, follow_redirects=True) as client:
                with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=console) as progress:
                    task = progress.add_task(f"mirroring into {municipality}/{target}", total=None)

                    def step(done: int, latest: int) -> None:
                        progress.update(task, completed=done, total=max(done, 1))

                    return await mirror(client, source.rstrip("/"), conn, municipality, target, step, again)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(run())
    except httpx.HTTPStatusError as exc:  # the source answered, but not with the collection
        status = exc.response.status_code
        why = {401: "it wants a key (--key, GEOTWIN_MIRROR_KEY)", 403: "the key may not read it",
               404: "no such collection there (deleted, renamed, or internal without --key)"}.get(
            status, exc.response.text[:200])
        Console(stderr=True).print(f"[red]the source answered {status} for {exc.request.url}: {why}[/]",
                                   highlight=False)
        raise SystemExit(1) from None
    except httpx.HTTPError as exc:  # before the database's own errors: this is about the source
        Console(stderr=True).print(f"[red]the source {source} cannot be reached ({exc.__class__.__name__}: "
                                   f"{exc}); the pages applied before stay, and the next run goes on from there[/]",
                                   highlight=False)
        raise SystemExit(1) from None
    console.print(f"[green]{applied} change(s) applied; {municipality}/{target} is up to date[/]")


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=(
        ".geojson, .gpkg, .fgb, .zip (Shapefile or XPlanArchiv), .csv, .gml (XPlanGML)"))],
    municipality: Annotated[str, typer.Option(help="slug, e.g. halle")],
    collection: Annotated[str, typer.Option(help="collection id")],
    mode: Annotated[str, typer.Option(help="replace or append")] = "replace",
    crs: Annotated[str | None, typer.Option(help="source CRS when the file does not say, e.g. EPSG:25833")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="property=source_field (repeatable)")] = None,
    layer: Annotated[str | None, typer.Option(help="layer of a multi-layer file")] = None,
    id_field: Annotated[str | None, typer.Option(help="source field with the feature ids")] = None,
    encoding: Annotated[str | None, typer.Option(
        help="text encoding of a CSV/GeoJSON that is not UTF-8 or a Shapefile without .cpg, e.g. cp1252")] = None,
    layer_type: Annotated[str | None, typer.Option(help="create the collection with this layer type if missing")]
    = None,
    url: UrlOpt = None,
) -> None:
    """Import a file into a collection: every feature is checked first; all or nothing, with a report."""
    from service.errors import GeoTwinError
    from service.importer import import_file
    from service.layertypes import registry
    from service.sources import ImportOptions

    mapping = {}
    for item in map_ or []:
        target, _, source = item.partition("=")
        if not target or not source:
            raise typer.BadParameter(f"--map takes property=source_field, got {item!r}")
        mapping[target] = source
    if mode not in ("replace", "append"):
        raise typer.BadParameter("mode must be replace or append")
    options = ImportOptions(mode=mode, crs=crs, mapping=mapping, layer=layer, id_field=id_field, encoding=encoding,
                            max_bytes=1 << 40)

    async def run():
        from service.db import connect
        from service.sql.write import delete_collection, upsert_collection

        conn = await connect(dsn_of(url))
        try:
            row = await conn.fetchrow(
                "SELECT c.id, c.layer_type, m.id AS m_pk FROM municipality m LEFT JOIN collection c "
                "ON c.municipality_id = m.id AND c.slug = $2 WHERE m.slug = $1", municipality, collection)
            if row is None:
                raise typer.BadParameter(f"no municipality {municipality!r}")
            pk, kind, created = row["id"], row["layer_type"], False
            if pk is None:
                if layer_type not in registry():
                    known = ", ".join(sorted(registry()))
                    raise typer.BadParameter(f"no layer type {layer_type!r}; there are {known}" if layer_type else
                                             f"no collection {collection!r}: give --layer-type ({known}) to create it")
                pk = await upsert_collection(conn, row["m_pk"], collection, collection, "", layer_type, "", "", [],
                                             "public")
                kind, created = layer_type, True
            try:
                with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=console) as progress:
                    task = progress.add_task(f"reading {file.name}", total=None)

                    async def step(report) -> None:  # an XPlanGML file is read and converted first
                        progress.update(task, completed=report.processed, total=report.total or None,
                                        description=f"{report.stage} {file.name}")

                    report = await import_file(conn, pk, registry()[kind], file, options, step, "cli")
                    progress.update(task, description=f"imported {file.name}")
            except BaseException:
                if created:  # all or nothing: the collection made for this import goes with it
                    # ... unless the connection is what failed: then the import's own error is the one to show
                    with contextlib.suppress(Exception):
                        await delete_collection(conn, pk)
                raise
            return report
        finally:
            await conn.close()

    try:
        report = asyncio.run(run())
    except GeoTwinError as exc:
        console.print(f"[red]{exc.description}[/]")
        failed = exc.where.get("report") or {}
        for issue in failed.get("issues", [])[:50]:
            console.print(f"  feature {issue['index']} ({issue['fid']}): {issue['property']}: {issue['message']}")
        if failed.get("ignoredFields"):  # often the reason: a property under another name (give --map)
            console.print(f"[yellow]fields not in the layer type, not read (--map property=field reads one): "
                          f"{', '.join(failed['ignoredFields'])}[/]")
        raise typer.Exit(1) from None
    if report.shortened_fields:
        console.print("Shapefile fields read as the layer type's: " + ", ".join(
            f"{source} → {target}" for target, source in report.shortened_fields.items()))
    if report.linearized:
        console.print(f"{report.linearized} geometries with arcs read as straight segments (at most 4° of arc each)")
    if report.skipped:
        console.print("XPlanGML objects that are no planning zones, not imported: " + ", ".join(
            f"{count} {kind}" for kind, count in sorted(report.skipped.items())))
    if report.ignored_fields:
        console.print(f"[yellow]fields not in the layer type, not imported: {', '.join(report.ignored_fields)}[/]")
    console.print(f"[green]{report.imported} features imported into {municipality}/{collection}[/]")


async def _generate(dsn: str, municipality: str, collection: str, spec) -> int:
    from service.db import connect
    from service.generator import CHUNK, features
    from service.layertypes import registry
    from service.models import STORAGE_SRID
    from service.sql.catalog import refresh_collection
    from service.sql.write import upsert_collection, write_features

    conn = await connect(dsn)
    try:
        m_pk = await conn.fetchval("SELECT id FROM municipality WHERE slug = $1", municipality)
        if m_pk is None:
            raise typer.BadParameter(f"no municipality {municipality!r}; load the demo first",
                                     param_hint="--municipality")
        layer = registry()[spec.layer]
        total = 0
        async with conn.transaction():
            c_pk = await upsert_collection(
                conn, m_pk, collection, f"{layer.title} (generated, {spec.size:,})",
                f"Deterministic test data: seed {spec.seed}, {spec.size} features.", spec.layer, "CC0-1.0",
                "GeoTwin generator", ["generated"], "public")
            await conn.execute("DELETE FROM feature WHERE collection_id = $1", c_pk)
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console) as progress:
                task = progress.add_task(f"generating {collection}", total=spec.size)
                for rows in features(spec):
                    total += await write_features(conn, c_pk, rows, STORAGE_SRID, replace=False, refresh=False)
                    progress.update(task, advance=min(len(rows), CHUNK))
            await refresh_collection(conn, c_pk)
        # VACUUM, not only ANALYZE: it sets the visibility map, without which paging (index-only scans over
        # (collection_id, id)) reads the heap; measured 3x slower items pages after a table rewrite.
        await conn.execute("VACUUM ANALYZE feature")
        return total
    finally:
        await conn.close()


@app.command()
def generate(
    features_: Annotated[int, typer.Option("--features", min=1, help="how many features")] = 10_000,
    layer: Annotated[str, typer.Option(help="commercial-site, planning-zone or ecological-zone")] = "commercial-site",
    seed: int = 42,
    vertices: Annotated[int, typer.Option(min=8, help="vertices per ecological zone ring")] = 48,
    municipality: str = "halle",
    collection: Annotated[str | None, typer.Option(help="collection id; default generated-<layer>s")] = None,
    url: UrlOpt = None,
) -> None:
    """Generate deterministic features into a collection (the same seed gives the same features at any size)."""
    from service.generator import LAYERS, Spec

    if layer not in LAYERS:
        raise typer.BadParameter(f"choose one of {', '.join(LAYERS)}", param_hint="--layer")
    spec = Spec(layer, features_, seed, vertices)
    n = asyncio.run(_generate(dsn_of(url), municipality, collection or f"generated-{layer}s", spec))
    console.print(f"[green]{n} features written[/]")


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          access_log: Annotated[bool, typer.Option(help="log every request as JSON (costs ~10% at high rates)")]
          = False,
          log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
          ) -> None:
    """Serve the API (database from PG* settings / .env). Logs are JSON lines on stderr."""
    import logging.config

    import uvicorn

    from service.observability import log_config

    logging.config.dictConfig(log_config(log_level.upper(), access_log))
    for warning in unknown_settings(os.environ, also=option_variables()):
        logging.getLogger("geotwin").warning(warning)
    _warn_if_connections_short(workers)
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # The workers share their metrics through files here, so /metrics sums them whichever one answers.
        metrics_dir = Path(tempfile.mkdtemp(prefix="geotwin-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        uvicorn.run("service.main:served_app", factory=True, host=host, port=port, workers=workers,
                    proxy_headers=True, access_log=False, log_config=log_config(log_level.upper(), access_log))
    finally:
        if metrics_dir:  # ours alone; a directory the admin set stays
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _warn_if_connections_short(workers: int) -> None:
    """Say at start, not under load at 2 a.m., when the workers may open more connections than the database
    admits. An unreachable database is not this check's business: the service starts and says 503 on /ready."""
    import logging

    import asyncpg

    from service.db import connection_room, connections_per_worker
    from service.settings import Settings

    db = Settings().db
    try:
        room = asyncio.run(connection_room(db.dsn()))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return
    need = workers * connections_per_worker(db)
    if need > room:
        logging.getLogger("geotwin").warning(
            "%d worker(s) may open up to %d database connections (each 2 × GEOTWIN_DB_POOL_MAX=%d + %d), but the "
            "database admits %d: lower GEOTWIN_DB_POOL_MAX or --workers, raise max_connections, or put PgBouncer "
            "(transaction mode) in between", workers, need, db.pool_max, need // workers - 2 * db.pool_max, room)


@app.command()
def demo(
    host: str = "127.0.0.1", port: int = 8000,
    data_dir: Annotated[Path, typer.Option(help="where the project's own PostgreSQL cluster lives")] = OWN_DATA,
    db_port: Annotated[int | None, typer.Option(help="port of that cluster on 127.0.0.1 (default: the one it "
                                                     f"was created with; {DEMO_PORT} or a free one at first)")] = None,
) -> None:
    """Start a project-managed PostGIS, migrate, load the demo data if it is missing, and serve."""
    from service.localdb import SUPERUSER, LocalCluster, remembered_port
    from service.migrate import upgrade

    db_port = db_port or remembered_port(data_dir, DEMO_PORT)
    cluster = LocalCluster(data_dir / "pg", db_port)
    with console.status("starting PostgreSQL + PostGIS"):
        try:
            cluster.start()
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
        dsn = cluster.create_database(OWN_DATABASE)
    console.print(f"database: {dsn}")
    upgrade(dsn)
    loaded = cluster.psql("SELECT count(*) FROM municipality", database=OWN_DATABASE)
    if loaded == "0":
        asyncio.run(_load_demo(dsn))
    os.environ.update(PGHOST="127.0.0.1", PGPORT=str(db_port), PGUSER=SUPERUSER, PGDATABASE=OWN_DATABASE)
    console.print(f"[bold green]GeoTwin on http://{host}:{port}/[/]  (Ctrl+C stops it; the database keeps running:"
                  f" `pg_ctl stop -D {cluster.datadir}`)")
    serve(host=host, port=port, access_log=True)


if __name__ == "__main__":
    app()
