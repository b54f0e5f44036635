"""Downloads of a collection (or a filtered selection) as GeoJSON, CSV, GeoPackage, FlatGeobuf or a zipped
Shapefile, streamed.

Rows come from a server-side cursor in batches, so memory stays flat whatever the size. GeoJSON and CSV are
written to the response as the batches arrive. GeoPackage and FlatGeobuf are written by GDAL (pyogrio's
Arrow writer, fed batch by batch through a bounded queue from another thread) into a temporary file that is
streamed out and deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from service.catalog import Collection
from service.db import connection, stored_json
from service.errors import InvalidParameter, ServiceUnavailable
from service.i18n import N_
from service.models import STORAGE_SRID
from service.responses import link
from service.sql.features import Args, ItemsQuery, feature_json, order_by, scope_predicate, source_of, where_clause

log = logging.getLogger("geotwin.export")

BATCH = 5_000
# CSV and Excel exports format rows in Python, SLICE at a time (an Excel row takes ~0.15 ms), and let the event
# loop turn after TURN_S of it.
SLICE, TURN_S = 10, 0.002
CHUNK = 1 << 20


@dataclass(frozen=True)
class Format:
    media_type: str
    extension: str
    title: str
    driver: str | None = None


FORMATS = {
    "gpkg": Format("application/geopackage+sqlite3", "gpkg", "GeoPackage", "GPKG"),
    "fgb": Format("application/flatgeobuf", "fgb", "FlatGeobuf", "FlatGeobuf"),
    "geojson": Format("application/geo+json", "geojson", "GeoJSON"),
    "csv": Format("text/csv; charset=utf-8", "csv", N_("CSV (WKT geometry)")),
    "shp": Format("application/zip", "zip", N_("Shapefile (zipped)"), "ESRI Shapefile"),
    "xlsx": Format("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx",
                   N_("Excel (a point of each feature as x/y)")),
}
# A worksheet's rows, less the header: a larger selection gets a 400 naming `f` (a longer sheet is a file
# Excel repairs by cutting it short).
XLSX_MAX_ROWS = 1_048_575


def download_links(collection_url: str, params: list[tuple[str, str]], what: str) -> list[dict[str, str]]:
    """`enclosure` links (OGC API – Features' bulk download) to the export of `what` in each format, with
    `params` (the items filters) kept."""
    kept = [(k, v) for k, v in params if k not in ("f", "limit", "offset", "skipGeometry")]
    return [link(f"{collection_url}/export?{urlencode([*kept, ('f', name)])}", "enclosure", fmt.media_type,
                 f"{what} as {fmt.title}") for name, fmt in FORMATS.items()]
# GeoPackage keeps its R-tree (SQLite builds it on disk: +40 MB for 500,000 features). GDAL's FlatGeobuf writer
# holds its spatial index in memory (+155 MB for 500,000 features, +13 MB without): without it, memory stays
# flat at any size, and the file is still a valid FlatGeobuf that QGIS and GDAL read.
LAYER_OPTIONS = {"GPKG": {"SPATIAL_INDEX": "YES"}, "FlatGeobuf": {"SPATIAL_INDEX": "NO"},
                 # UTF-8 with a .cpg saying so: GDAL's default, ISO-8859-1, loses every character beyond it (–, €).
                 "ESRI Shapefile": {"ENCODING": "UTF-8"}}
# GeoPackage 1.2, as GDAL before 3.7 writes it: the 1.4 that newer GDAL writes makes Debian 12's GDAL 3.6 (and the
# QGIS 3.22 on it) warn on every open that the file "may only be partially supported". Nothing here needs 1.4.
DATASET_OPTIONS = {"GPKG": {"VERSION": "1.2"}}
ARROW_TYPES = {"string": pa.string(), "number": pa.float64(), "integer": pa.int64(), "boolean": pa.bool_(),
               "date": pa.date32()}


def export_sql(q: ItemsQuery, geojson: bool) -> tuple[str, list[Any]]:
    """Every selected feature in a stable order: GeoJSON text, or (id, municipality, properties, WKB)."""
    args = Args()
    with_clause, table = source_of(args, q)
    scope, muni = scope_predicate(args, q.members)
    where = where_clause(args, q, scope, muni)
    if geojson:
        select = feature_json(args, q.regional, q.multi, q.output)
        return (f"{with_clause}SELECT {select} FROM (SELECT f.id, {muni} AS muni FROM {table} f {where}) AS c "
                f"JOIN {table} f ON f.id = c.id ORDER BY {order_by(q, 'c.muni')}"), args.values
    srid = q.output.crs.srid if q.output.crs else 4326
    geom = "ST_Multi(f.geom)" if q.multi else "f.geom"
    if srid != STORAGE_SRID:
        geom = f"ST_Transform({geom}, {int(srid)})"
    fid = f"({muni} || ':' || f.fid)" if q.regional else "f.fid"  # ids as the API serves them
    return (f"{with_clause}SELECT {fid} AS fid, {muni} AS muni, f.properties::text AS properties, "
            f"ST_AsBinary({geom}) AS wkb FROM {table} f {where} ORDER BY {order_by(q, muni)}"), args.values


async def batches(pool: Any, sql: str, args: list[Any]) -> AsyncIterator[list[Any]]:
    async with connection(pool) as conn, conn.transaction(readonly=True):
        batch: list[Any] = []
        async for row in conn.cursor(sql, *args, prefetch=BATCH):
            batch.append(row)
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def columns(c: Collection, observed: dict[str, str]) -> list[tuple[str, str]]:
    """(property, kind) in the contract's order; generic layers add the keys they hold."""
    kinds = c.layer_type.property_kinds()
    for name, kind in observed.items():
        kinds.setdefault(name, kind)
    return list(kinds.items())


async def geojson_stream(pool: Any, q: ItemsQuery) -> AsyncIterator[bytes]:
    sql, args = export_sql(q, geojson=True)
    yield b'{"type":"FeatureCollection","features":['
    first = True
    async for batch in batches(pool, sql, args):
        text = ",".join(r[0] for r in batch).encode()
        yield text if first else b"," + text
        first = False
    yield b"]}"


async def in_slices(rows: Sequence[Any], work: Callable[[Sequence[Any]], None]) -> None:
    """Python-heavy work on a batch, a few rows at a time, letting the event loop serve the worker's other
    requests every TURN_S. A whole batch at once held them up for 150 ms (CSV); in a thread as long, since the
    thread keeps the GIL for up to 5 ms each time the event loop gives it up (at a request's every read and
    write): a neighbour's page took 44-66 ms (p50) during a CSV export and 22-33 ms during an Excel one."""
    deadline = time.perf_counter() + TURN_S
    for start in range(0, len(rows), SLICE):
        work(rows[start:start + SLICE])
        if time.perf_counter() >= deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + TURN_S


def _wkts(rows: list[Any]) -> Any:
    import shapely

    return shapely.to_wkt(shapely.from_wkb([r["wkb"] for r in rows]), rounding_precision=-1)


async def csv_stream(pool: Any, q: ItemsQuery, cols: list[tuple[str, str]]) -> AsyncIterator[bytes]:
    """One row per feature: id, (municipality), the properties, and the geometry as WKT (x/y order)."""
    sql, args = export_sql(q, geojson=False)
    header = ["id"] + (["municipality"] if q.regional else []) + [n for n, _ in cols] + ["wkt"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    yield ("\ufeff" + buffer.getvalue()).encode()  # a BOM, so spreadsheet programs read UTF-8 (umlauts)

    def write(part: Sequence[Any]) -> None:
        for row, wkt in part:
            props = stored_json(row["properties"])
            values = [row["fid"]] + ([row["muni"]] if q.regional else [])
            values += [_cell(props.get(n)) for n, _ in cols] + [wkt]
            writer.writerow(values)

    loop = asyncio.get_running_loop()
    async for batch in batches(pool, sql, args):
        buffer.seek(0)
        buffer.truncate()
        wkts = await loop.run_in_executor(None, _wkts, batch)  # GEOS, without the GIL
        await in_slices(list(zip(batch, wkts, strict=True)), write)
        yield buffer.getvalue().encode()


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def dbf_names(names: list[str]) -> list[str]:
    """Field names as a Shapefile keeps them, cut to 10 characters as GDAL cuts them (`availabili`; a second
    name cut alike gets `_1`, `_2`, …). Cut here, GDAL has nothing to warn about: its warnings go to stderr
    past the service's JSON log lines."""
    out: list[str] = []
    taken: set[str] = set()
    for name in names:
        cut, n = name[:10], 1
        while cut.lower() in taken:
            suffix = f"_{n}"
            cut, n = name[:10 - len(suffix)] + suffix, n + 1
        taken.add(cut.lower())
        out.append(cut)
    return out


# A Shapefile holds one kind of geometry: the layer type's, or for a layer type that names none (generic) what
# the collection holds, when that is one kind.
SHAPE_TYPES = {"ST_Point": "Point", "ST_MultiPoint": "MultiPoint", "ST_LineString": "MultiLineString",
               "ST_MultiLineString": "MultiLineString", "ST_Polygon": "MultiPolygon", "ST_MultiPolygon": "MultiPolygon"}


async def shapefile_geometry(pool: Any, c: Collection) -> str:
    """The geometry type a Shapefile of the collection gets; InvalidParameter (naming `f`) when the
    collection holds several kinds, which no Shapefile can."""
    if c.layer_type.multi_polygon:
        return "MultiPolygon"
    async with connection(pool) as conn:
        found = {r[0] for r in await conn.fetch(
            "SELECT DISTINCT ST_GeometryType(geom) FROM feature WHERE collection_id = ANY($1::int[])",
            [pk for pk, _ in c.members])}
    kinds = {SHAPE_TYPES.get(t, t) for t in found}
    if kinds == {"Point", "MultiPoint"}:
        kinds = {"MultiPoint"}
    if len(kinds) > 1:
        raise InvalidParameter(f"a Shapefile holds one kind of geometry; {c.id} has {', '.join(sorted(kinds))}: "
                               "choose f=gpkg or f=fgb", parameter="f")
    return kinds.pop() if kinds else "Point"


# A Shapefile's booleans as 0/1: GDAL writes them as DBF logicals otherwise, which Debian 12's GDAL and QGIS
# read as the text "T"/"F" and ArcGIS as text.
SHAPEFILE_TYPES = {**ARROW_TYPES, "boolean": pa.int32()}


def _schema(q: ItemsQuery, cols: list[tuple[str, str]], types: dict[str, pa.DataType] = ARROW_TYPES,
            points: bool = False) -> pa.Schema:
    """id, (municipality), the properties, and the geometry as WKB, or with `points` (a spreadsheet) as the
    x and y of a point on each feature in the output CRS (lon/lat by default)."""
    fields = [pa.field("id", pa.string())]
    if q.regional:
        fields.append(pa.field("municipality", pa.string()))
    fields += [pa.field(n, types.get(k, pa.string())) for n, k in cols]
    if points:
        fields += [pa.field("x", pa.float64()), pa.field("y", pa.float64())]
    else:
        fields.append(pa.field("geometry", pa.binary(), metadata={b"ARROW:extension:name": b"geoarrow.wkb"}))
    return pa.schema(fields)


def _points(rows: list[Any]) -> list[pa.Array]:
    """x and y of a point on each feature (inside a polygon, on a line), for a spreadsheet; empty for none."""
    import shapely

    point = shapely.point_on_surface(shapely.from_wkb([r["wkb"] for r in rows]))
    return [pa.array(shapely.get_x(point), pa.float64(), from_pandas=True),
            pa.array(shapely.get_y(point), pa.float64(), from_pandas=True)]


def _value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "date":
        try:
            return date.fromisoformat(value)
        except (TypeError, ValueError):
            return None
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "integer":  # 3.0 is 3; 3.5 is no integer (not 3), nor is what a 64-bit column cannot hold
        if numeric and isinstance(value, float) and value.is_integer():
            value = int(value)
        return value if numeric and isinstance(value, int) and -2**63 <= value < 2**63 else None
    if kind == "number":
        try:
            number = float(value) if numeric else None
        except OverflowError:  # an integer beyond any double
            return None
        return number if number is not None and math.isfinite(number) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _parsed_columns(cols: list[tuple[str, str]], rows: list[Any]) -> list[pa.Array] | None:
    """The properties as typed columns, parsed by pyarrow's JSON reader (2 µs a feature against 5.5 for a
    Python loop over the values: most of an export's own time). None when a value does not fit its column (a
    number as text, a date that is none, written from outside the API): the caller then goes value by value."""
    if not cols:
        return []
    data = "\n".join(r["properties"] for r in rows).encode()  # jsonb's text is one line
    schema = pa.schema([pa.field(n, pa.string() if k == "date" else ARROW_TYPES.get(k, pa.string())) for n, k in cols])
    try:
        table = pa_json.read_json(
            io.BytesIO(data), read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
        columns = [table.column(n).combine_chunks() for n, _ in cols]
        return [c.cast(pa.date32()) if k == "date" else _finite(c) if k == "number" else c
                for c, (_, k) in zip(columns, cols, strict=True)]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def _finite(numbers: pa.Array) -> pa.Array:
    """Numbers beyond a double (1e400 in jsonb) are read as infinity: empty, as they have no number here."""
    return pc.if_else(pc.is_finite(numbers), numbers, pa.scalar(None, numbers.type))


def _record_batch(schema: pa.Schema, q: ItemsQuery, cols: list[tuple[str, str]], rows: list[Any]) -> pa.RecordBatch:
    arrays = [pa.array([r["fid"] for r in rows], pa.string())]
    if q.regional:
        arrays.append(pa.array([r["muni"] for r in rows], pa.string()))
    columns = _parsed_columns(cols, rows)
    if columns is None:
        props = [stored_json(r["properties"]) for r in rows]
        columns = [pa.array([_value(p.get(name), kind) for p in props], ARROW_TYPES.get(kind, pa.string()))
                   for name, kind in cols]
    for values in columns:
        target = schema.field(len(arrays)).type  # by position: a Shapefile's names are cut (dbf_names)
        arrays.append(values if values.type == target else values.cast(target))
    if schema.names[-1] == "geometry":
        arrays.append(pa.array([r["wkb"] for r in rows], pa.binary()))
    else:
        arrays += _points(rows)
    return pa.record_batch(arrays, schema=schema)


async def nothing() -> AsyncIterator[bytes]:
    """No body: what a HEAD on an export streams (no Content-Length either, unlike an empty answer's 0)."""
    return
    yield b""  # pragma: no cover - makes this an async generator


async def started(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream with its first chunk already there: GDAL's file is written before the first byte goes out, so
    a failure is an error answer (its status and JSON) and not a download cut short after `200 OK`."""
    first = await anext(chunks, b"")

    async def rest() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        finally:  # a client that leaves early: the temporary file goes now, not when the collector finds it
            await chunks.aclose()  # type: ignore[attr-defined]

    return rest()


# The process that writes GDAL's formats (service/gdalwriter.py): GDAL holds the GIL while it writes a GeoPackage.
WRITER = [sys.executable, "-m", "service.gdalwriter"]
ARROW_END = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # the end of an Arrow IPC stream


async def gdal_stream(pool: Any, q: ItemsQuery, cols: list[tuple[str, str]], fmt: Format, layer: str,
                      geometry_type: str, written: Written | None = None) -> AsyncIterator[bytes]:
    """GDAL writes the file in a process of its own (service.gdalwriter) while batches come from the database,
    sent to it as an Arrow IPC stream; then the file is streamed."""
    sql, args = export_sql(q, geojson=False)
    shapefile = fmt.driver == "ESRI Shapefile"  # written as .shp, .shx, .dbf, .prj, .cpg; sent as one zip
    schema = _schema(q, cols, SHAPEFILE_TYPES if shapefile else ARROW_TYPES)
    if shapefile:
        names = dbf_names(schema.names[:-1]) + [schema.names[-1]]  # not the geometry's
        schema = pa.schema([f.with_name(n) for f, n in zip(schema, names, strict=True)])
    srid = q.output.crs.srid if q.output.crs else 4326
    directory = tempfile.mkdtemp(prefix="geotwin-export-")
    path = os.path.join(directory, f"{layer}.{'shp' if shapefile else fmt.extension}")
    spec = {"path": path, "layer": layer, "driver": fmt.driver, "geometry_type": geometry_type,
            "crs": f"EPSG:{srid}", "layer_options": LAYER_OPTIONS.get(fmt.driver or "", {}),
            "dataset_options": DATASET_OPTIONS.get(fmt.driver or "", {})}
    loop = asyncio.get_running_loop()
    writer = None
    try:
        try:
            writer = await asyncio.create_subprocess_exec(
                *WRITER, json.dumps(spec), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:  # no process to be had (too many, no memory)
            raise ServiceUnavailable(f"the {fmt.title} file could not be written ({exc}); try again later",
                                     parameter="f") from exc
        said = asyncio.ensure_future(writer.stderr.read())  # type: ignore[union-attr]
        try:
            writer.stdin.write(schema.serialize().to_pybytes())  # type: ignore[union-attr]
            async for batch in batches(pool, sql, args):
                record = await loop.run_in_executor(None, _record_batch, schema, q, cols, batch)
                writer.stdin.write(record.serialize().to_pybytes())  # type: ignore[union-attr]
                await writer.stdin.drain()  # type: ignore[union-attr]
            writer.stdin.write(ARROW_END)  # type: ignore[union-attr]
            writer.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, ConnectionResetError):
            pass  # the writer stopped early: what it says follows
        status, stderr = await writer.wait(), await said
        if status != 0:
            lines = stderr.decode(errors="replace").strip().splitlines() or [""]
            try:
                reason = json.loads(lines[-1])["message"]
            except (ValueError, KeyError, TypeError):
                reason = f"the writer ended with status {status}"
            # The rows are checked and typed by now: what fails is the disk or the machine, not the request.
            raise ServiceUnavailable(f"the {fmt.title} file could not be written ({reason}); try again later",
                                     parameter="f")
        if said_text := stderr.decode(errors="replace").strip():  # GDAL's warnings, for the operator
            log.warning("GDAL, writing %s for %s: %s", fmt.title, layer, said_text[:2000])
        if shapefile:
            path = os.path.join(directory, f"{layer}.zip")
        async for chunk in _chunks(path, written):
            yield chunk
    finally:
        if writer is not None and writer.returncode is None:  # the client went away mid-way
            with contextlib.suppress(ProcessLookupError):
                writer.kill()
            await writer.wait()
        _remove(directory)


@dataclass
class Written:
    """A file-based export's file, once it is complete: its size goes out as Content-Length, so that a browser
    shows how much of the download is left and a client knows a cut download for one."""

    size: int | None = None


async def _chunks(path: str, written: Written | None) -> AsyncIterator[bytes]:
    if written is not None:
        written.size = os.path.getsize(path)
    loop = asyncio.get_running_loop()
    with open(path, "rb") as handle:
        while chunk := await loop.run_in_executor(None, handle.read, CHUNK):
            yield chunk


def _remove(directory: str) -> None:
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            os.remove(os.path.join(directory, name))
        os.rmdir(directory)


class _Sheet:
    """An Excel workbook written row by row (XlsxWriter's constant-memory mode: each row goes to disk as it is
    written; GDAL's XLSX writer holds the whole sheet in memory, +912 MB for 1,000,000 sites). Texts stay texts:
    a value starting with `=` is no formula, a URL no link, digits no number."""

    def __init__(self, path: str, layer: str, header: list[str]) -> None:
        import xlsxwriter

        self.book = xlsxwriter.Workbook(path, {
            "constant_memory": True, "tmpdir": os.path.dirname(path), "default_date_format": "yyyy-mm-dd",
            "strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False})
        self.sheet = self.book.add_worksheet(layer[:31])  # Excel's limit for a sheet's name
        self.sheet.write_row(0, 0, header)
        self.sheet.freeze_panes(1, 0)
        self.row = 1

    def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        for values in rows:
            self.sheet.write_row(self.row, 0, values)
            self.row += 1

    def close(self) -> None:
        self.book.close()


async def xlsx_stream(pool: Any, q: ItemsQuery, cols: list[tuple[str, str]], fmt: Format,
                      layer: str, written: Written | None = None) -> AsyncIterator[bytes]:
    """The selection as an Excel worksheet in a temporary file, then sent. The typed columns come from a
    thread (pyarrow, without the GIL); the rows are written in slices between the worker's other requests."""
    sql, args = export_sql(q, geojson=False)
    schema = _schema(q, cols, points=True)
    directory = tempfile.mkdtemp(prefix="geotwin-export-")
    path = os.path.join(directory, f"{layer}.xlsx")
    loop = asyncio.get_running_loop()
    try:
        try:
            sheet = await loop.run_in_executor(None, _Sheet, path, layer, schema.names)
            async for batch in batches(pool, sql, args):
                record = await loop.run_in_executor(None, _record_batch, schema, q, cols, batch)
                await in_slices(list(zip(*(c.to_pylist() for c in record.columns), strict=True)), sheet.write)
            await loop.run_in_executor(None, sheet.close)
        except OSError as exc:  # the disk, not the data
            raise ServiceUnavailable(f"the {fmt.title} file could not be written ({exc}); try again later",
                                     parameter="f") from exc
        async for chunk in _chunks(path, written):
            yield chunk
    finally:
        _remove(directory)
