"""File import: GeoJSON, GeoPackage, FlatGeobuf, zipped Shapefile, CSV (WKT or x/y columns) into a collection.

All or nothing, in bounded memory, whatever the file's size:
1. the file is checked before GDAL sees it (`service.sources`: size, UTF-8 for text formats, a zip's entries:
   no paths that leave the archive, no bombs; a GeoPackage's layer). A CSV or GeoJSON file in another
   encoding (`encoding`: Excel saves CSV in cp1252) is read from a UTF-8 copy; for a Shapefile GDAL recodes
   the text itself;
2. GDAL (pyogrio) reads it in Arrow batches; each batch is mapped onto the layer type (a field mapping can
   be given) and checked (`service.importcheck`: geometry vectorised with Shapely, properties with the layer
   type's validator);
3. inside one transaction, which holds the collection from the start, each checked batch moves into the
   collection while the next one is read and checked: the database's work (indexes, change log) and
   Python's run side by side on two cores. From the first rejected feature on nothing more moves; the
   rest of the file is still checked, the transaction is rolled back and the report lists every rejected
   feature and why. Replacing deletes the old features first, in the same transaction.
The source CRS is read from the file; a file that does not say (CSV, a Shapefile without .prj) needs `crs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import asyncpg
import ijson
import numpy as np
import pyogrio

from service import geojsoncheck, xplan
from service.errors import Conflict, InvalidData, InvalidParameter
from service.importcheck import (
    CANNOT_READ,
    NOTHING_READ,
    SOME_RING_OPEN,
    ImportReport,
    IssueLog,
    Straighten,
    check_batch,
    field_mapping,
)
from service.layertypes import LayerType
from service.loader import EMPTY, FeatureIssue
from service.models import STORAGE_SRID
from service.sources import (
    ASK_WHOLE,
    WORK_PREFIX,
    ImportOptions,
    check_head,
    check_packed,
    check_size,
    choose_layer,
    extract,
    feature_count,
    gdal_path,
    gdal_words,
    not_text,
    open_options,
    remove_copy,
    source_crs,
    undecodable,
    unreadable,
    zip_content,
)
from service.sql.catalog import refresh_collection
from service.sql.write import act_as

BATCH = 20_000
# One batch on its way into `feature`, and the ids of every feature read so far (for the duplicate report).
STAGE = """
CREATE TEMP TABLE IF NOT EXISTS import_batch (
  n bigint, fid text, wkb bytea, properties text, valid_from date, valid_to date) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS import_ids (n bigint, fid text) ON COMMIT DROP
"""
BATCH_COLUMNS = ["n", "fid", "wkb", "properties", "valid_from", "valid_to"]
MOVE = f"""
INSERT INTO feature (collection_id, fid, geom, properties, valid_from, valid_to)
SELECT $1, fid, ST_ForcePolygonCCW(ST_Transform(ST_SetSRID(ST_GeomFromWKB(wkb), $2), {STORAGE_SRID})),
       properties::jsonb, valid_from, valid_to
FROM import_batch ORDER BY n
"""


# ---------------------------------------------------------------- the run

async def import_file(conn: asyncpg.Connection, collection_pk: int, layer: LayerType, path: Path,
                      options: ImportOptions, progress: Callable[[ImportReport], Any] | None = None,
                      actor: str = "") -> ImportReport:
    """Import `path` into the collection, all or nothing. Raises InvalidData with the report when any
    feature is rejected (nothing is written then)."""
    await asyncio.to_thread(check_head, path, options.encoding)  # a GeoPackage named .zip, say
    if xplan.is_xplan(path):
        return await _import_xplan(conn, collection_pk, layer, path, options, progress, actor)
    if path.suffix.lower() == ".zip":
        await asyncio.to_thread(check_size, path, options.max_bytes)
        kind, entry = await asyncio.to_thread(zip_content, path, options.max_bytes, options.layer)
        if kind != "shapefile":
            await asyncio.to_thread(check_packed, path, entry, options)
        if kind == "xplan":  # an XPlanArchiv
            return await _import_xplan(conn, collection_pk, layer, path, options, progress, actor, entry)
        if kind == "packed":  # a GeoPackage, say, zipped to be mailed
            return await _import_packed(conn, collection_pk, layer, path, entry, options, progress, actor)
    source, driver, read = await asyncio.to_thread(gdal_path, path, options)  # reads the file once (UTF-8 check)
    try:
        options.layer = await asyncio.to_thread(choose_layer, source, driver, options)
        total = await asyncio.to_thread(feature_count, read, source, driver, options)
        reading = pyogrio.raw.open_arrow(source, layer=options.layer, batch_size=BATCH, return_fids=True,
                                         use_pyarrow=True, **open_options(driver, options))
        try:
            meta, reader = await asyncio.to_thread(reading.__enter__)
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
            raise unreadable(driver, exc) from None
        except UnicodeDecodeError:
            raise not_text(driver, options, "the field names") from None
        try:
            def straighten(fids: list[int]) -> np.ndarray:
                return pyogrio.raw.read(source, layer=options.layer, fids=fids, columns=[],
                                        **open_options(driver, options))[2]

            return await _import(conn, collection_pk, layer, path, source, options, progress, actor, driver,
                                 total, meta, reader, straighten)
        finally:
            await asyncio.to_thread(reading.__exit__, None, None, None)
    finally:
        await asyncio.to_thread(remove_copy, path, read)


async def _import_packed(conn: asyncpg.Connection, collection_pk: int, layer: LayerType, path: Path, entry: str,
                         options: ImportOptions, progress: Callable[[ImportReport], Any] | None,
                         actor: str) -> ImportReport:
    """The one file a zip holds (`sources.zip_content`), unpacked into a directory of its own and imported
    as if it had come by itself; the report names the zip."""
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=WORK_PREFIX))
    try:
        unpacked = await asyncio.to_thread(extract, path, entry, work / PurePosixPath(entry).name)
        report = await import_file(conn, collection_pk, layer, unpacked, options, progress, actor)
        report.source = path.name
        return report
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


async def _import_xplan(conn: asyncpg.Connection, collection_pk: int, layer: LayerType, path: Path,
                        options: ImportOptions, progress: Callable[[ImportReport], Any] | None,
                        actor: str, entry: str | None = None) -> ImportReport:
    """An XPlanGML file (or the `entry` of an XPlanArchiv zip): its zones, converted to a GeoPackage
    (service.xplan), imported as such. When the conversion found zones it cannot express, the rest is still
    checked (and rolled back) so that the report lists every problem; indexes and names in the report are the
    XPlanGML file's."""
    xplan.check_layer_type(layer.name)
    await asyncio.to_thread(check_size, path, options.max_bytes)
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=WORK_PREFIX))
    try:
        gml = await asyncio.to_thread(extract, path, entry, work / "xplan.gml") if entry else path
        converted, issues = await _converted(gml, options.crs, work, path.name, progress)
        flat = dataclasses.replace(options, crs=None, mapping={}, layer=None, id_field="id", encoding=None)
        try:
            if not issues:
                report = await import_file(conn, collection_pk, layer, converted.path, flat, progress, actor)
                report.source, report.driver, report.skipped = path.name, converted.driver, converted.skipped
                report.linearized = converted.linearized
                return report
            rollback = conn.transaction()
            await rollback.start()
            try:
                checked = await import_file(conn, collection_pk, layer, converted.path, flat, progress, actor)
            finally:
                await rollback.rollback()
            found = checked.as_dict()
        except InvalidData as exc:
            found = exc.where.get("report")
            if found is None:  # the file as a whole, not a zone
                raise InvalidData(exc.description.replace(converted.path.name, path.name), parameter="file") from None
        raise _xplan_problems(path, converted, issues, found) from None
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


async def _converted(gml: Path, crs: str | None, work: Path, name: str,
                     progress: Callable[[ImportReport], Any] | None) -> tuple[xplan.Converted, list[FeatureIssue]]:
    """The XPlanGML file converted (in a thread). Converting a large plan takes a while before any zone is
    checked, so it is shown as progress meanwhile: the features read so far, of a total not yet known (0), then
    the zones converted of all of them."""
    reading = ImportReport(name, "XPlanGML", stage="reading")

    def seen(n: int) -> None:  # from the conversion's thread: one assignment, read by the loop below
        reading.processed = n

    def wrote(n: int, total: int) -> None:  # the same; a moment's mix of the two stages is shown once at most
        reading.stage, reading.total, reading.processed = "converting", total, n

    converting = asyncio.ensure_future(asyncio.to_thread(xplan.convert, gml, crs, work, seen, wrote))
    while progress is not None and not converting.done():
        await asyncio.wait({converting}, timeout=0.5)
        if reading.processed or reading.stage == "converting":
            await progress(reading)
    return await converting


def _xplan_problems(path: Path, converted: xplan.Converted, issues: list[FeatureIssue],
                    checked: dict[str, Any]) -> InvalidData:
    """The conversion's problems and the layer type's (found in the converted zones), as one report in the
    XPlanGML file's terms: each zone's index among the file's features, its gml:id."""
    report = ImportReport(path.name, converted.driver, checked.get("crs", ""), total=len(converted.positions),
                          processed=len(converted.positions), skipped=converted.skipped)
    positions = converted.positions
    found = [FeatureIssue(positions[i["index"]] if 0 <= i["index"] < len(positions) else i["index"], i["fid"],
                          i["property"], i["message"]) for i in checked.get("issues", [])]
    # A zone without its land use lacks it in the check, too; one without gml:id has no geometry there either.
    said = {(i.fid, i.property) for i in issues}
    unnamed = {i.fid for i in issues if i.property == "id"}
    found = [i for i in found if (i.fid, i.property) not in said and i.fid not in unnamed]
    for issue in sorted(issues + found, key=lambda i: (i.index, i.property)):
        report.issues.append(issue)
    report.rejected = report.issues.rejected
    first = report.issues[0]
    return InvalidData(f"{path.name}: nothing imported; {len(report.issues)} problem(s), first at feature "
                       f"{first.index} ({first.fid}): {first.property}: {first.message}",
                       index=first.index, property=first.property, report=report.as_dict())


async def _import(conn: asyncpg.Connection, collection_pk: int, layer: LayerType, path: Path, source: str,
                  options: ImportOptions, progress: Callable[[ImportReport], Any] | None, actor: str, driver: str,
                  total: int, meta: dict[str, Any], reader: Any, straighten: Straighten) -> ImportReport:
    crs = source_crs(meta, options, driver)
    fields = [str(f) for f in meta["fields"]]
    if options.id_field and options.id_field not in fields:
        raise InvalidParameter(f"id_field: the file has no field {options.id_field!r}", parameter="id_field")
    if not options.id_field and "id" in fields:
        options.id_field = "id"  # a GeoJSON feature's string id, or a column named id
    mapping, ignored, shortened = field_mapping(fields, layer, options, driver)
    geometry_column = meta.get("geometry_name") or "wkb_geometry"
    fid_column = meta.get("fid_column") or "OGC_FID"
    report = ImportReport(path.name, driver, crs.uri, total=total, ignored_fields=ignored, shortened_fields=shortened)
    issues = report.issues
    async with conn.transaction():
        await conn.execute(STAGE)
        # A batch's move sorts it by file order: in memory (a 20,000-site batch spilled ~9 MB to disk with the
        # default 4 MB). The sort's memory is bounded by BATCH.
        await conn.execute("SET LOCAL work_mem = '64MB'")
        # The collection's lock, as every writer takes it (act_as), from the start to commit: imports and edits
        # of the collection take turns, and the batches can move in while the file is still being read.
        await act_as(conn, actor, collection_pk, bulk=True)
        existing_up_to = 0  # the features there before this import have ids up to this (ids only grow)
        if options.mode == "replace":
            await conn.execute("DELETE FROM feature WHERE collection_id = $1", collection_pk)
        else:
            existing_up_to = await conn.fetchval(
                "SELECT coalesce(max(id), 0) FROM feature WHERE collection_id = $1", collection_pk)
        moving: asyncio.Task[bool] | None = None
        collided = False
        try:
            start = 0
            batches = iter(reader)
            # Reading and checking run in a thread: an import never stalls the requests this worker serves,
            # and they overlap with the previous batch's move into `feature`.
            while True:
                batch = await asyncio.to_thread(next, batches, None)
                rows = None
                if batch is not None:
                    try:
                        fids = batch.column(fid_column).to_pylist() if fid_column in batch.schema.names else None
                        rows = await asyncio.to_thread(check_batch, batch, geometry_column, fids, start, layer,
                                                       crs, mapping, options.id_field, report, straighten)
                    except UnicodeDecodeError:
                        found = await asyncio.to_thread(undecodable, batch)
                        if found is None:
                            raise not_text(driver, options, "the field names") from None
                        row, name = found
                        raise not_text(driver, options, f"feature {start + row}: {name}", start + row,
                                        name) from None
                if moving is not None:  # the previous batch, moving meanwhile
                    collided |= not await moving
                    moving = None
                if batch is None:
                    break
                if rows and not issues:
                    await conn.copy_records_to_table("import_ids", records=[row[:2] for row in rows])
                    if not collided:
                        await conn.copy_records_to_table("import_batch", records=rows, columns=BATCH_COLUMNS)
                        moving = asyncio.create_task(_move(conn, collection_pk, crs.srid, report))
                start += batch.num_rows
                report.processed = start
                if progress:
                    await progress(report)
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError,
                OSError) as exc:
            raise InvalidData(f"the file cannot be read to its end ({exc.__class__.__name__}: "
                              f"{gdal_words(str(exc))}); {ASK_WHOLE}", parameter="file") from None
        finally:
            if moving is not None:  # left by an error or a cancellation: the rollback needs the connection
                moving.cancel()
                with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError):
                    await moving
        if driver == "FlatGeobuf" and report.processed != total:
            # GDAL stops quietly where a cut FlatGeobuf ends between two features; its header says how many
            # there are.
            raise InvalidData(f"the file cannot be read to its end: it holds {report.processed:,} of the {total:,} "
                              "features its header announces; is it complete?", parameter="file")
        report.total = report.processed
        if collided and not issues:  # a unique id refused a batch: which ids, and why
            for fid, count in await conn.fetch(
                    "SELECT fid, count(*) FROM import_ids GROUP BY fid HAVING count(*) > 1 LIMIT 1000"):
                issues.append(FeatureIssue(-1, fid, "id", f"{count} features share the id {fid!r}"))
            if not issues:
                for (fid,) in await conn.fetch(
                        "SELECT s.fid FROM import_ids s JOIN feature f ON f.collection_id = $1 AND f.fid = s.fid "
                        "AND f.id <= $2 LIMIT 1000", collection_pk, existing_up_to):
                    issues.append(FeatureIssue(-1, fid, "id", f"the collection already has a feature {fid!r}"))
        if issues:
            if driver == "GeoJSON":
                await asyncio.to_thread(_explain_geometries, source, issues)
            report.rejected = issues.rejected
            report.imported = 0
            first = issues[0]
            raise InvalidData(
                f"{path.name}: nothing imported; {len(issues)} problem(s), first at feature {first.index} "
                f"({first.fid}): {first.property}: {first.message}",
                index=first.index, property=first.property, report=report.as_dict())
        if collided:
            # Writers take the collection's lock first (service.sql.write.act_as), so an id created by someone
            # else meanwhile should not happen; if one does, say so plainly.
            raise Conflict(f"{path.name}: nothing imported; another write to the collection collided with the "
                           "import; import again", parameter="file")
        await refresh_collection(conn, collection_pk)
    return report


def _explain_geometries(source: str, issues: IssueLog) -> None:
    """Say why GDAL read no geometry (or an empty one, or one with some ring open) for the GeoJSON features
    reported so, where their own text tells (service.geojsoncheck)."""
    unread = {issue.index: issue.fid for issue in issues.kept if issue.property == "geometry" and (
        issue.message in (NOTHING_READ, EMPTY, SOME_RING_OPEN) or issue.message.startswith(CANNOT_READ))}
    if not unread:
        return
    try:
        found = geojsoncheck.geometry_problems(source, unread)
    except (ijson.JSONError, ValueError, OSError):  # GDAL read it; if this cannot, the report stays as it is
        return
    issues.kept = [dataclasses.replace(issue, message=found[issue.index])
                   if issue.property == "geometry" and issue.index in found else issue for issue in issues.kept]


async def _move(conn: asyncpg.Connection, collection_pk: int, srid: int, report: ImportReport) -> bool:
    """Move the staged batch into `feature` (counted in the report); False, with nothing moved, when one of
    its ids is taken: the duplicate report that follows says which."""
    try:
        async with conn.transaction():  # a savepoint: the import goes on to check (and then report) the rest
            status = await conn.execute(MOVE, collection_pk, srid)
    except (asyncpg.UniqueViolationError, asyncpg.exceptions.TransactionRollbackError):
        return False
    await conn.execute("TRUNCATE import_batch")
    report.imported += int(status.split()[-1])
    return True
