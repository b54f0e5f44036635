"""Reading a file's features for an import: the report and its problems, the file's fields mapped onto the
layer type, and each Arrow batch checked, geometry vectorised with Shapely and properties with the layer
type's validator, into rows ready for COPY. `service.importer` runs the import around it."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import geomet.wkb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from service.crs import Crs, to_lonlat
from service.errors import InvalidParameter
from service.geojsoncheck import open_ring
from service.layertypes import LayerType
from service.loader import EMPTY, FeatureIssue, id_problem
from service.sources import ImportOptions

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
    # What the import is doing, for its progress: an XPlanGML file is `reading` (total 0: not known yet), then
    # `converting` (zones of total), before every import's `checking` (features checked and moved, of total).
    stage: str = "checking"

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


def field_mapping(fields: list[str], layer: LayerType, options: ImportOptions,
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
    try:  # GEOS reads no WKB with a ring left open; geomet reads it as it is, so the report can say which
        raw = geomet.wkb.loads(data)
    except Exception:  # noqa: BLE001 - whatever geomet makes of it, the general words still hold
        return SOME_RING_OPEN
    return open_ring(raw, lambda v: f"{v:.15g}") or SOME_RING_OPEN


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
