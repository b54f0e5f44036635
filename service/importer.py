"""File import: GeoJSON, GeoPackage, FlatGeobuf, zipped Shapefile, CSV (WKT or x/y columns) into a collection.

All or nothing, in bounded memory, whatever the file's size:
1. the file is checked before GDAL sees it (`service.sources`: size, UTF-8 for text formats, a zip's entries:
   no paths that leave the archive, no bombs; a GeoPackage's layer). A CSV or GeoJSON file in another
   encoding (`encoding`: Excel saves CSV in cp1252) is read from a UTF-8 copy; for a Shapefile GDAL recodes
   the text itself;
2. GDAL (pyogrio) reads it in Arrow batches; each batch is mapped onto the layer type (a field mapping can
   be given) and checked (geometry vectorised with Shapely, properties with the layer type's validator);
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
import datetime as dt
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import ijson
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyogrio
import shapely

from service import geojsoncheck, xplan
from service.crs import Crs, to_lonlat
from service.errors import Conflict, InvalidData, InvalidParameter
from service.geojsoncheck import ring_not_closed
from service.layertypes import LayerType
from service.loader import EMPTY, FeatureIssue, id_problem
from service.models import STORAGE_SRID
from service.sources import (
    WORK_PREFIX,
    ImportOptions,
    check_size,
    choose_layer,
    extract,
    feature_count,
    gdal_path,
    not_text,
    open_options,
    remove_copy,
    source_crs,
    undecodable,
    unreadable,
    xplan_in_zip,
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


# The problems a report lists; all are counted. A file of millions of features, each with a problem (the wrong
# CRS, say), must not hold millions of them in memory.
MAX_REPORTED = 1000


class IssueLog:
    """The problems found in a file: every one counted (and the features they reject), the first
    MAX_REPORTED kept. Appended to like a list, by feature: one feature's problems come together."""

    def __init__(self) -> None:
        self.kept: list[FeatureIssue] = []
        self.count = 0
        self.rejected = 0
        self._last: tuple[int, str] | None = None

    def append(self, issue: FeatureIssue) -> None:
        self.count += 1
        if (issue.index, issue.fid) != self._last:
            self.rejected += 1
            self._last = (issue.index, issue.fid)
        if len(self.kept) < MAX_REPORTED:
            self.kept.append(issue)

    def __iadd__(self, issues: list[FeatureIssue]) -> IssueLog:
        for issue in issues:
            self.append(issue)
        return self

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> FeatureIssue:
        return self.kept[i]


@dataclass
class ImportReport:
    source: str
    driver: str = ""
    crs: str = ""
    total: int = 0
    processed: int = 0
    imported: int = 0
    rejected: int = 0
    issues: IssueLog = field(default_factory=IssueLog)
    ignored_fields: list[str] = field(default_factory=list)
    shortened_fields: dict[str, str] = field(default_factory=dict)  # property -> a Shapefile's shortened name
    linearized: int = 0  # curved geometries (arcs) read as straight segments
    skipped: dict[str, int] = field(default_factory=dict)  # an XPlanGML file's objects that are no zones, by class

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "driver": self.driver, "crs": self.crs, "total": self.total,
                "processed": self.processed, "imported": self.imported, "rejected": self.rejected,
                "problems": self.issues.count, "ignoredFields": self.ignored_fields,
                "shortenedFields": self.shortened_fields, "linearized": self.linearized,
                "skipped": self.skipped, "issues": [i.__dict__ for i in self.issues.kept]}


# ---------------------------------------------------------------- reading, mapping, checking

# A Shapefile's field names have at most 10 characters: GDAL, QGIS and ArcGIS cut longer ones there when they
# write one ("availability" becomes "availabili").
DBF_NAME_LENGTH = 10


def _mapping(fields: list[str], layer: LayerType, options: ImportOptions,
             driver: str) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """(target property -> source field, the file's fields left unused, the properties found under a
    Shapefile's shortened name). A mapping given names fields the file must have; the other properties are
    found by name (any case), and in a Shapefile by their first 10 characters when only one property starts
    so: a layer exported as Shapefile imports back as it was."""
    by_lower = {f.lower(): f for f in fields}
    for target, src in options.mapping.items():
        if src not in fields:
            raise InvalidParameter(f"mapping: the file has no field {src!r} (fields: {', '.join(fields)})",
                                   parameter="mapping", property=target)
    mapping = dict(options.mapping)
    targets = list(layer.schema.get("properties", {}))
    for target in targets:
        if target not in mapping and target.lower() in by_lower:
            mapping[target] = by_lower[target.lower()]
    used = set(mapping.values()) | ({options.id_field} if options.id_field else set())
    shortened: dict[str, str] = {}
    if driver == "ESRI Shapefile":
        for f in fields:
            if f in used or len(f) != DBF_NAME_LENGTH:
                continue
            candidates = [t for t in targets if t not in mapping and len(t) > DBF_NAME_LENGTH
                          and t.lower().startswith(f.lower())]
            if len(candidates) == 1:
                mapping[candidates[0]] = shortened[candidates[0]] = f
                used.add(f)
    rest = [f for f in fields if f not in used]
    if layer.open_properties:
        for f in rest:
            mapping.setdefault(f, f)
        rest = []
    return mapping, rest, shortened


# Dates as a German Excel saves them in CSV (31.12.2025) and as GDAL writes them into text (2025/12/31).
OTHER_DATES = (re.compile(r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})"),
               re.compile(r"(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})"))


def _iso_date(text: str) -> str:
    """A date property's text as YYYY-MM-DD when it is a real date in one of OTHER_DATES, else as it is (for
    the layer type's check to name)."""
    for pattern in OTHER_DATES:
        if match := pattern.fullmatch(text):
            try:
                return dt.date(int(match["y"]), int(match["m"]), int(match["d"])).isoformat()
            except ValueError:
                return text
    return text


def _value(value: Any, kind: str | None) -> Any:
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if kind == "date" else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
        if kind in ("number", "integer"):
            try:
                number = float(value)
                return int(number) if kind == "integer" and number.is_integer() else number
            except ValueError:
                return value
        if kind == "boolean" and value.lower() in ("true", "false", "1", "0", "ja", "nein"):
            return value.lower() in ("true", "1", "ja")
        if kind == "date":
            return _iso_date(value)
    if isinstance(value, float) and kind == "integer" and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and kind == "boolean" and value in (0, 1):
        return bool(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _column(array: pa.ChunkedArray, kind: str | None) -> list[Any]:
    """A column's values as `_value` gives them, converted column-wise where the Arrow type allows (the
    common case: 14 columns of 100,000 features cost 2.4 s value by value); anything else value by value."""
    t = array.type
    if pa.types.is_floating(t) and kind != "integer":
        return pc.if_else(pc.is_finite(array), array, None).to_pylist()
    if (pa.types.is_integer(t) and kind != "boolean") or pa.types.is_boolean(t):
        return array.to_pylist()
    if (pa.types.is_string(t) or pa.types.is_large_string(t)) and kind not in ("number", "integer", "boolean",
                                                                                  "date"):
        trimmed = pc.utf8_trim_whitespace(array)
        return pc.if_else(pc.equal(trimmed, ""), None, trimmed).to_pylist()
    return [_value(v, kind) for v in array.to_pylist()]


def check_batch(table: Any, geometry_column: str, fids: Any, start: int, layer: LayerType, crs: Crs,
                mapping: dict[str, str], id_field: str | None, report: ImportReport,
                straighten: Straighten | None = None) -> list[tuple]:
    """Rows ready for COPY from one Arrow batch; problems are appended to the report's issues (and their rows
    dropped)."""
    issues = report.issues
    n = table.num_rows
    wkb = table.column(geometry_column).to_numpy(zero_copy_only=False)
    try:
        geoms = shapely.from_wkb(wkb, on_invalid="ignore")
    except NotImplementedError:  # arcs (CurvePolygon, MultiSurface, …), which GEOS does not read
        geoms = _straightened(wkb, fids, straighten, report)
    geoms = shapely.force_2d(geoms)
    kinds = layer.property_kinds()
    allowed = layer.geometry_types
    type_names = np.array(["Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString",
                           "MultiPolygon", "GeometryCollection"])
    missing = shapely.is_missing(geoms)
    empty = ~missing & shapely.is_empty(geoms)
    ok = ~missing & ~empty
    type_ids = shapely.get_type_id(geoms)
    bad_type = ok & ~np.isin(type_names[np.clip(type_ids, 0, 7)], allowed) if allowed else np.zeros(n, bool)
    bounds = shapely.bounds(geoms)
    not_finite = ok & ~np.isfinite(bounds).all(axis=1)
    valid = shapely.is_valid(geoms)
    check = ok & ~not_finite
    outside = np.zeros(n, bool)
    if check.any():
        outside[check] = _outside(crs, bounds[check])
    ids = (table.column(id_field).to_pylist() if id_field else
           [str(x) for x in (fids if fids is not None else range(start + 1, start + n + 1))])
    targets = list(mapping)
    columns = [_column(table.column(mapping[t]), kinds.get(t)) for t in targets]
    values = zip(*columns, strict=True) if columns else iter([()] * n)
    wkbs = shapely.to_wkb(geoms)
    rows = []
    for i, row in enumerate(values):
        fid = "" if ids[i] is None else str(ids[i])
        props = {t: v for t, v in zip(targets, row, strict=True) if v is not None}
        problem = None
        if missing[i]:
            problem = unreadable_geometry(wkb[i])
        elif empty[i]:
            problem = EMPTY
        elif bad_type[i]:
            problem = f"{type_names[type_ids[i]]} is not allowed for {layer.name} ({', '.join(allowed or [])})"
        elif not_finite[i]:
            problem = "coordinates must be finite numbers"
        elif outside[i]:
            problem = f"coordinates lie outside where {crs.uri} is defined (wrong crs?)"
        elif not valid[i]:
            problem = f"invalid geometry: {shapely.is_valid_reason(geoms[i])}"
        before = len(issues)
        if problem:
            issues.append(FeatureIssue(start + i, fid, "geometry", problem))
        if not fid:
            issues.append(FeatureIssue(start + i, fid, "id", "no feature id"))
        elif wrong_id := id_problem(fid):
            issues.append(FeatureIssue(start + i, fid[:50], "id", wrong_id))
        issues += [FeatureIssue(start + i, fid, p.property, p.message) for p in layer.check(props)]
        if len(issues) == before:
            vf, vt = layer.validity_of(props)
            rows.append((start + i, fid, wkbs[i], orjson.dumps(props).decode(), vf, vt))
    return rows


# What GDAL's reader gave when it read no geometry, or none it could make sense of, or one GEOS cannot read (in
# GEOS's words), or a polygon with a ring left open (which one, the WKB of one with holes does not tell): for a
# GeoJSON file the import then reads the feature's own text to say more (service.geojsoncheck).
NOTHING_READ = "no geometry (or one that GDAL cannot read)"
SOME_RING_OPEN = "a ring of its geometry does not close: its first and last points differ"
CANNOT_READ = "the geometry cannot be read: "  # GEOS's reason follows, in GEOS's words


def unreadable_geometry(data: bytes | None) -> str:
    """Why a feature has no geometry that Shapely can take. GDAL passes some broken geometries on as they are
    (a polygon whose ring does not close, from a hand-made GeoJSON or a Shapefile; a GeoPackage's geometry cut
    short), and GEOS says what is wrong with them; others it reads as none, saying why only in a warning."""
    if data is None:
        return NOTHING_READ
    try:
        shapely.from_wkb(data)
    except shapely.errors.GEOSException as exc:
        reason = str(exc).split(": ", 1)[-1]
    except NotImplementedError:
        return "a curved geometry (arcs) that cannot be read as straight segments"
    else:  # pragma: no cover - read in the batch already
        return "no geometry"
    if "closed linestring" not in reason:
        return f"{CANNOT_READ}{reason}"
    closed = shapely.from_wkb(data, on_invalid="fix")
    rings = [] if closed is None else shapely.get_rings(shapely.get_parts(closed))
    if len(rings) != 1:
        return SOME_RING_OPEN
    coords = shapely.get_coordinates(rings[0])  # closed by GEOS, so the ring's own last point is the one before
    return ring_not_closed(*(" ".join(f"{v:.15g}" for v in xy) for xy in (coords[0], coords[-2])))


# Reads the features with these FIDs again, their curves as GDAL approximates them by straight segments.
Straighten = Callable[[list[int]], np.ndarray]


def _straightened(wkb: np.ndarray, fids: Any, straighten: Straighten | None, report: ImportReport) -> np.ndarray:
    """The batch's geometries, with those that have arcs read again from the file as straight segments (GDAL's
    linearisation: at most 4° of arc per segment). A file from CAD or the cadastre may hold circular arcs;
    the Arrow reader hands them on as they are, and the layer types, GeoJSON and the tiles know only straight
    lines. Without FIDs to read them again by, they stay unreadable and are reported so."""
    geoms = np.empty(len(wkb), dtype=object)
    curved = []
    for i, one in enumerate(wkb):
        try:
            geoms[i] = shapely.from_wkb(one, on_invalid="ignore")
        except NotImplementedError:
            curved.append(i)
    if curved and straighten is not None and fids is not None:
        straight = straighten([int(fids[i]) for i in curved])
        geoms[curved] = shapely.from_wkb(straight, on_invalid="ignore")
        report.linearized += len(curved)
    return geoms


def _outside(crs: Crs, bounds: np.ndarray) -> np.ndarray:
    """Per bounding box (minx, miny, maxx, maxy): whether it leaves the CRS's domain (vectorised)."""
    if crs.geographic:
        return ~((bounds[:, [0, 2]] >= -180).all(1) & (bounds[:, [0, 2]] <= 180).all(1)
                 & (bounds[:, [1, 3]] >= -90).all(1) & (bounds[:, [1, 3]] <= 90).all(1))
    lon, lat = to_lonlat(crs.srid).transform(np.concatenate([bounds[:, 0], bounds[:, 2]]),
                                              np.concatenate([bounds[:, 1], bounds[:, 3]]), errcheck=False)
    good = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 360) & (np.abs(lat) <= 90)
    half = len(bounds)
    return ~(good[:half] & good[half:])


# ---------------------------------------------------------------- the run

async def import_file(conn: asyncpg.Connection, collection_pk: int, layer: LayerType, path: Path,
                      options: ImportOptions, progress: Callable[[ImportReport], Any] | None = None,
                      actor: str = "") -> ImportReport:
    """Import `path` into the collection, all or nothing. Raises InvalidData with the report when any
    feature is rejected (nothing is written then)."""
    if xplan.is_xplan(path):
        return await _import_xplan(conn, collection_pk, layer, path, options, progress, actor)
    if path.suffix.lower() == ".zip":
        await asyncio.to_thread(check_size, path, options.max_bytes)
        entry = await asyncio.to_thread(xplan_in_zip, path, options.max_bytes)
        if entry is not None:  # an XPlanArchiv
            return await _import_xplan(conn, collection_pk, layer, path, options, progress, actor, entry)
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
    """The XPlanGML file converted (in a thread). Reading a large plan takes a while before any zone is checked,
    so the features read so far are shown as progress meanwhile, of a total not yet known (0)."""
    reading = ImportReport(name, "XPlanGML")

    def seen(n: int) -> None:  # from the conversion's thread: one assignment, read by the loop below
        reading.processed = n

    converting = asyncio.ensure_future(asyncio.to_thread(xplan.convert, gml, crs, work, seen))
    while progress is not None and not converting.done():
        await asyncio.wait({converting}, timeout=0.5)
        if reading.processed:
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
    mapping, ignored, shortened = _mapping(fields, layer, options, driver)
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
            raise InvalidData(f"the file cannot be read to its end ({exc.__class__.__name__}: {str(exc)[:300]}); "
                              "is it complete?", parameter="file") from None
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
