"""The `geotwin` commands an administrator runs at the console: keys, municipalities, collections and the
change log's pruning; and what every command shares (the console, `--url`, a connection). `service.cli` adds
these groups to the `geotwin` command."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.localdb import SUPERUSER, running_port
from service.settings import DatabaseSettings, Settings

console = Console()
UrlOpt = Annotated[str | None, typer.Option("--url", help="libpq URL; default from PG* settings / .env")]


def print_table(headers: list[str], rows: list[list[str]], whole: set[str]) -> None:
    """A table of rows of text. The columns in `whole` hold names that go into commands (`halle/commercial-sites`,
    a key's prefix): in a narrow terminal the other columns wrap, these are never cut or wrapped."""
    from rich.table import Column, Table

    columns = [Column(h, min_width=max([len(h), *(len(r[i]) for r in rows)]), no_wrap=True) if h in whole
               else Column(h) for i, h in enumerate(headers)]
    table = Table(*columns)
    for r in rows:
        table.add_row(*r)
    console.print(table)


# The project's own cluster, which `./dev.sh serve` (geotwin demo) starts, and its database.
OWN_DATA = Path(__file__).resolve().parent.parent / ".data"
OWN_DATABASE = "geotwin"
CONNECTION_SETTINGS = {"host", "port", "user", "password", "database"}


def dsn_of(url: str | None) -> str:
    """The database to work on: `--url`, else DATABASE_URL, else the PG* settings. With none of them given,
    the project's own database while `./dev.sh serve` runs it (said on stderr), so that a command run beside
    the demo works on what the demo shows."""
    given = url or os.environ.get("DATABASE_URL")
    if given:
        return given
    settings = DatabaseSettings()
    port = None if settings.model_fields_set & CONNECTION_SETTINGS else running_port(OWN_DATA)
    if port is None:
        return settings.dsn()
    own = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{OWN_DATABASE}"
    Console(stderr=True).print(f"database: {own} (the project's own, started by ./dev.sh serve; --url or "
                               "PG* settings choose another)", highlight=False)
    return own


keys_app = typer.Typer(help="API keys: create (the key is shown once), list, revoke.", no_args_is_help=True)
municipality_app = typer.Typer(help="Municipalities: onboard one.", no_args_is_help=True)
history_app = typer.Typer(help="The change log: prune what is older than you keep.", no_args_is_help=True)
collections_app = typer.Typer(help="Collections: list, describe anew (title, visibility, …), delete.",
                              no_args_is_help=True)


async def with_conn(dsn: str, work):
    from service.db import connect

    conn = await connect(dsn)
    try:
        return await work(conn)
    finally:
        await conn.close()


@keys_app.command("create")
def keys_create(
    municipality: Annotated[str | None, typer.Option(help="slug, e.g. halle")] = None,
    role: Annotated[str, typer.Option(help="viewer, editor or admin")] = "editor",
    label: Annotated[str, typer.Option(help="who uses it; the change log shows it")] = "",
    platform: Annotated[bool, typer.Option("--platform", help="a platform administrator key")] = False,
    url: UrlOpt = None,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    from service.sql.keys import create_key

    if platform == (municipality is not None):
        raise typer.BadParameter("give either --municipality or --platform")
    if not platform and role not in ("viewer", "editor", "admin"):
        raise typer.BadParameter("role must be viewer, editor or admin")

    async def work(conn):
        if municipality and not await conn.fetchval("SELECT 1 FROM municipality WHERE slug = $1", municipality):
            raise typer.BadParameter(f"no municipality {municipality!r}")
        return await create_key(conn, municipality, "platform" if platform else role, label)

    created = asyncio.run(with_conn(dsn_of(url), work))
    console.print(f"key {created['id']} ({created['role']}"
                  f"{' of ' + municipality if municipality else ''}); store it now, it is not shown again:")
    print(created["key"])


@keys_app.command("list")
def keys_list(municipality: Annotated[str | None, typer.Option(help="slug; default: all")] = None,
              url: UrlOpt = None) -> None:
    """List keys (never their secrets)."""
    from service.sql.keys import list_keys

    keys = asyncio.run(with_conn(dsn_of(url), lambda conn: list_keys(conn, municipality, municipality is None)))
    print_table(["id", "prefix", "municipality", "role", "label", "created", "revoked"],
                [[str(k["id"]), k["prefix"], k["municipality"] or "(platform)", k["role"], k["label"],
                  k["created"][:19], (k["revoked"] or "")[:19]] for k in keys],
                whole={"id", "prefix", "municipality", "role"})


@keys_app.command("revoke")
def keys_revoke(key_id: int, url: UrlOpt = None) -> None:
    """Revoke a key at once (it stays listed, so the change log still names it)."""

    async def work(conn):
        return await conn.fetchval("UPDATE api_key SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL "
                                   "RETURNING id", key_id)

    if asyncio.run(with_conn(dsn_of(url), work)) is None:
        raise typer.BadParameter(f"no active key {key_id}")
    console.print(f"[green]key {key_id} revoked[/]")


@municipality_app.command("add")
def municipality_add(
        slug: str, name: str,
        ags: Annotated[str, typer.Argument(help="Amtlicher Gemeindeschlüssel: 8 digits, or 5 for a district")],
        state: Annotated[str | None, typer.Argument(help="the Land; by default the AGS's")] = None,
        crs: Annotated[str | None, typer.Option(help="25832 or 25833; by default the Land's official CRS")] = None,
        url: UrlOpt = None) -> None:
    """Onboard a municipality (or describe it anew): `geotwin municipality add saalekreis "Saalekreis" 15088`."""
    from pydantic import ValidationError

    from service.onboarding import NewMunicipality
    from service.sql.write import upsert_municipality

    try:
        m = NewMunicipality(slug=slug, name=name, ags=ags, state=state, crs=crs)
    except ValidationError as exc:  # as the admin endpoint refuses it, in the same words
        first = exc.errors()[0]
        raise typer.BadParameter(first["msg"], param_hint=str(first["loc"][0]).upper()) from None
    pk = asyncio.run(with_conn(dsn_of(url), lambda conn: upsert_municipality(conn, m.slug, m.name, m.ags, m.state,
                                                                             m.crs)))
    console.print(f"[green]municipality {m.slug} ({pk}) ready: {m.name}, {m.state}, AGS {m.ags}, data in "
                  f"EPSG:{m.crs}; create its first key with `geotwin keys create --municipality {m.slug} "
                  "--role admin`[/]")


CollectionRef = Annotated[str, typer.Argument(help="municipality/collection, e.g. halle/commercial-sites")]


async def _collection_row(conn, ref: str):
    municipality, _, collection = ref.partition("/")
    row = await conn.fetchrow(
        "SELECT c.id, c.slug, c.title, c.feature_count FROM collection c JOIN municipality m "
        "ON m.id = c.municipality_id WHERE m.slug = $1 AND c.slug = $2", municipality, collection)
    if row is None:
        raise typer.BadParameter(f"no collection {ref!r} (give municipality/collection; `geotwin collections "
                                 "list` shows them)")
    return row


@collections_app.command("list")
def collections_list(municipality: Annotated[str | None, typer.Option(help="slug; default: all")] = None,
                     url: UrlOpt = None) -> None:
    """The collections with their layer type, visibility, feature count and version."""
    rows = asyncio.run(with_conn(dsn_of(url), lambda conn: conn.fetch(
        "SELECT m.slug AS m, c.slug, c.title, c.layer_type, c.visibility, c.feature_count, c.version "
        "FROM collection c JOIN municipality m ON m.id = c.municipality_id "
        "WHERE $1::text IS NULL OR m.slug = $1 ORDER BY m.slug, c.slug", municipality)))
    print_table(["collection", "title", "layer type", "visibility", "features", "version"],
                [[f"{r['m']}/{r['slug']}", r["title"], r["layer_type"], r["visibility"], f"{r['feature_count']:,}",
                  str(r["version"])] for r in rows],
                whole={"collection", "layer type", "visibility"})


@collections_app.command("set")
def collections_set(
    collection: CollectionRef,
    title: Annotated[str | None, typer.Option(help="the new title")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    licence: Annotated[str | None, typer.Option()] = None,
    attribution: Annotated[str | None, typer.Option()] = None,
    keyword: Annotated[list[str] | None, typer.Option(help="replaces the keywords; repeatable")] = None,
    visibility: Annotated[str | None, typer.Option(help="public or internal")] = None,
    url: UrlOpt = None,
) -> None:
    """Describe a collection anew, as PATCH …/collections/{id} does: what is given changes, the rest stays."""
    from service.sql.write import describe_collection, lock_collection

    if visibility is not None and visibility not in ("public", "internal"):
        raise typer.BadParameter("public or internal", param_hint="--visibility")
    if title is not None and not title.strip():
        raise typer.BadParameter("a title cannot be empty", param_hint="--title")
    changes = {k: v for k, v in {"title": title, "description": description, "licence": licence,
                                 "attribution": attribution, "keywords": keyword,
                                 "visibility": visibility}.items() if v is not None}
    if not changes:
        raise typer.BadParameter("give at least one of --title, --description, --licence, --attribution, "
                                 "--keyword, --visibility")

    async def work(conn):
        row = await _collection_row(conn, collection)
        async with conn.transaction():
            await lock_collection(conn, "cli", row["id"])
            return await describe_collection(conn, row["id"], changes)

    changed = asyncio.run(with_conn(dsn_of(url), work))
    console.print(f"[green]{collection} changed ({', '.join(changes)}); version {changed['version']}[/]")


@collections_app.command("delete")
def collections_delete(collection: CollectionRef,
                       yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
                       url: UrlOpt = None) -> None:
    """Delete a collection with its features and history (asks first, unless --yes)."""
    from service.sql.write import delete_collection, lock_collection

    async def work(conn):
        row = await _collection_row(conn, collection)
        if not yes and not typer.confirm(f"Delete {collection} ({row['title']}) with its {row['feature_count']:,} "
                                         "features and their history?"):
            raise typer.Exit(1)
        async with conn.transaction():
            await lock_collection(conn, "cli", row["id"])
            await delete_collection(conn, row["id"])
        return row["feature_count"]

    count = asyncio.run(with_conn(dsn_of(url), work))
    console.print(f"[green]{collection} deleted with {count:,} features[/]")


@history_app.command("prune")
def history_prune(
    before: Annotated[str, typer.Option(help="keep the history from this date or RFC 3339 time on (in "
                                             "GEOTWIN_API__TIME_ZONE, Europe/Berlin by default, when no zone is "
                                             "given), e.g. 2025-01-01")],
    collection: Annotated[list[str] | None, typer.Option(
        help="municipality/collection, e.g. halle/commercial-sites; repeatable; default: every collection")] = None,
    url: UrlOpt = None,
) -> None:
    """Drop the change log before a time, keeping each feature's state then: `asOf` still works from that time
    on, earlier `asOf` and change-feed readers behind it get 410, and `geotwin mirror` starts such a copy
    again by itself. Each collection in one transaction."""
    from datetime import UTC, datetime

    import asyncpg

    from service.params import instant
    from service.sql.history import PRUNE

    horizon = instant(before, Settings().api.zone)
    if horizon is None:
        raise typer.BadParameter(f"not a date or RFC 3339 time: {before!r}", param_hint="--before")
    if horizon > datetime.now(UTC):
        raise typer.BadParameter("lies in the future", param_hint="--before")

    async def work(conn):
        rows = await conn.fetch("SELECT c.id, m.slug || '/' || c.slug AS name FROM collection c "
                                "JOIN municipality m ON m.id = c.municipality_id ORDER BY 2")
        chosen = [r for r in rows if not collection or r["name"] in collection]
        if unknown := sorted(set(collection or []) - {r["name"] for r in rows}):
            raise typer.BadParameter(f"no collection {', '.join(unknown)}", param_hint="--collection")
        removed, failed = 0, []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("pruning the change log", total=len(chosen))
            for r in chosen:
                progress.update(task, description=f"pruning {r['name']}")
                try:
                    async with conn.transaction():
                        n = await conn.fetchval(PRUNE, r["id"], horizon)
                except asyncpg.PostgresError as exc:  # e.g. cancelled, or a lock timeout: this one stays whole
                    progress.console.print(f"[red]{r['name']}: {exc}; nothing removed from it[/]")
                    failed.append(r["name"])
                    n = 0
                removed += n
                if n:
                    progress.console.print(f"{r['name']}: {n} change(s) removed")
                progress.advance(task)
        return removed, len(chosen), failed

    removed, collections, failed = asyncio.run(with_conn(dsn_of(url), work))
    console.print(f"[green]{removed} change(s) before {horizon.isoformat()} removed from {collections} "
                  "collection(s)[/]; PostgreSQL's autovacuum makes their space reusable.")
    if failed:
        console.print(f"[red]not pruned: {', '.join(failed)}; run it again for them[/]")
        raise typer.Exit(1)
