"""What is wrong with a GeoJSON geometry, in words and with where: for edits (service.loader) and imports.

An edit's body is checked here when Shapely cannot make a geometry of it, or when its coordinates hold
anything but numbers (Shapely would read "51.2" as a number; GDAL does not). An import's file is read by GDAL,
whose GeoJSON reader gives a feature whose geometry it cannot make sense of no geometry at all (or an empty
one), and says why only in a warning that names no feature: a ring of one position, a position that is not
numbers, a misspelt type, coordinates nested one level too deep or too shallow. A polygon with holes and a ring
left open it passes on as it is, and GEOS refuses it without saying which ring. A planner who drew the file by
hand needs to know which and where. So once the check has found such features, the importer reads the file's
own text again, as a stream (ijson: memory stays flat for a file of any size), up to the last of them, and
checks each one's geometry member against GeoJSON (RFC 7946) with geojson-pydantic.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ijson
import orjson
from geojson_pydantic.geometries import Geometry
from pydantic import TypeAdapter, ValidationError

_GEOMETRY: TypeAdapter[Any] = TypeAdapter(Geometry)
_POSITION = ("Position2D", "Position3D")
_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection")
# Lists that geojson-pydantic asks to be that long, by geometry type and depth below `coordinates`.
_TOO_SHORT = {("LineString", 0): "a line needs at least 2 positions",
              ("MultiLineString", 1): "a line needs at least 2 positions",
              ("Polygon", 1): "a ring needs at least 4 positions (the last one repeating the first)",
              ("MultiPolygon", 2): "a ring needs at least 4 positions (the last one repeating the first)"}


def geometry_problems(path: str | Path, wanted: dict[int, str]) -> dict[int, str]:
    """For the features at these indexes (0-based, in file order; each with the id the import read for it,
    or ""), what is wrong with their geometry member, where that can be told. A feature whose geometry is
    a correct GeoJSON geometry is left out: GDAL had another reason. If the file's features do not line up
    with what GDAL read (an id differs), nothing is said rather than something wrong."""
    found: dict[int, str] = {}
    last = max(wanted, default=-1)
    with open(path, "rb") as handle:
        for index, feature in enumerate(ijson.items(handle, "features.item", use_float=True)):
            if index > last:
                break
            if index not in wanted:
                continue
            if not isinstance(feature, dict):
                return {}
            fid = feature.get("id")
            if fid is not None and wanted[index] and str(fid) != wanted[index]:
                return {}
            problem = ("the feature has no geometry member" if "geometry" not in feature
                       else geometry_problem(feature["geometry"]))
            if problem:
                found[index] = problem
    return found


def text_with_nul(path: str | Path) -> tuple[int, str, str] | None:
    """The first feature (index, id or "", property) whose text holds U+0000, read as a stream; None when no
    feature's properties or id hold it (a member elsewhere does)."""
    with open(path, "rb") as handle:
        for index, feature in enumerate(ijson.items(handle, "features.item", use_float=True)):
            if not isinstance(feature, dict):
                return None
            fid = feature.get("id")
            shown = "" if fid is None else str(fid).replace("\x00", "\\u0000")
            if isinstance(fid, str) and "\x00" in fid:
                return index, shown, "id"
            properties = feature.get("properties")
            for name, value in (properties.items() if isinstance(properties, dict) else ()):
                if "\x00" in name or _holds_nul(value):
                    return index, shown, name.replace("\x00", "\\u0000")
    return None


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def geometry_problem(raw: Any) -> str | None:
    """What is wrong with a GeoJSON geometry, or None if nothing is."""
    if raw is None:
        return "no geometry (null)"
    if not isinstance(raw, dict):
        return f"the geometry is not a GeoJSON geometry object but {_shown(raw)}"
    if unclosed := open_ring(raw):  # which ring, where GDAL's WKB of a polygon with holes could not tell
        return unclosed
    try:
        with warnings.catch_warnings():  # geojson-pydantic's advice on GeometryCollections of one geometry
            warnings.simplefilter("ignore")
            _GEOMETRY.validate_python(raw, strict=True)  # strict: "51.2" is text, not a number
    except ValidationError as exc:
        return _in_words(exc.errors()[0], raw)
    return None


def holds_other_than_numbers(raw: dict) -> bool:
    """Whether a geometry's coordinates hold anything but numbers and lists (text, true, false, null) anywhere.
    Shapely reads "51.2" as 51.2 without a word, where an import (GDAL) refuses it; an edit asks this first,
    and geometry_problem names the place when it does. JSON written back out by orjson shows any of them at
    a fraction of the cost of walking the lists in Python (1.8 ms for 10,000 positions, against 5)."""
    if isinstance(members := raw.get("geometries"), list):
        return any(isinstance(g, dict) and holds_other_than_numbers(g) for g in members)
    try:
        text = orjson.dumps(raw.get("coordinates"))
    except orjson.JSONEncodeError:  # what orjson cannot write out, geometry_problem has a look at
        return True
    return any(mark in text for mark in (b'"', b"true", b"false", b"null"))


def open_ring(raw: dict, show: Callable[[Any], str] = str) -> str:
    """What is wrong with the first ring of a GeoJSON (Multi)Polygon whose last position is not its first; ""
    when all close. Shapely closes such a ring without a word, with a line from its last point back to the
    first: a repair, made only when asked (RFC 7946 §3.1.6: the first and last positions are identical; an
    import refuses such a ring too). `show` writes one coordinate (as the file had it, by default)."""
    coords = raw.get("coordinates")
    polygons = [coords] if raw.get("type") == "Polygon" else coords if raw.get("type") == "MultiPolygon" else []
    for polygon in polygons if isinstance(polygons, list) else []:
        for ring in polygon if isinstance(polygon, list) else []:
            if isinstance(ring, list) and len(ring) >= 2:
                first, last = ring[0], ring[-1]
                if isinstance(first, list) and isinstance(last, list) and first != last:
                    return ring_not_closed(*(" ".join(show(v) for v in end) for end in (first, last)))
    return ""


def ring_not_closed(begins: str, ends: str) -> str:
    """The problem of a ring that does not close, as every reader (edits, imports, XPlanGML) names it."""
    return f"a ring of its geometry does not close: it begins at {begins} and ends at {ends}"


def _in_words(error: Any, raw: dict[str, Any]) -> str:
    kind, loc, ctx = error["type"], list(error["loc"]), error.get("ctx") or {}
    inside = f"{_where(loc)}: " if [part for part in loc if part not in _TYPES] else ""  # a collection's member
    if kind == "union_tag_invalid":
        return (f"{inside}type {_shown(ctx.get('tag', raw.get('type')))} is not a GeoJSON geometry type (one of "
                f"{ctx.get('expected_tags', '')})")
    if kind == "union_tag_not_found":
        return f"{inside}the geometry has no type"
    if _POSITION[0] in loc or _POSITION[1] in loc:  # inside a position: say what the position is
        path = loc[:next(i for i, part in enumerate(loc) if part in _POSITION)]
        found = _at(raw, path)
        hint = (" (are the coordinates nested one level too shallow?)"
                if isinstance(found, int | float) and not isinstance(found, bool)
                else " (numbers written as text? RFC 7946 wants them as JSON numbers)"
                if isinstance(found, list) and any(isinstance(v, str) for v in found) else "")
        return f"{_where(path)}: a position is 2 or 3 numbers (x, y, and z if any), not {_shown(found)}{hint}"
    where = _where(loc)
    if kind == "missing":
        return f"{where}: missing"
    if kind == "too_short" and "coordinates" in loc:
        last = len(loc) - 1 - loc[::-1].index("coordinates")
        tag = loc[last - 1] if last and loc[last - 1] in _TYPES else raw.get("type")
        need = _TOO_SHORT.get((tag, len(loc) - last - 1), f"needs at least {ctx.get('min_length')} items")
        return f"{where}: {need}, not {ctx.get('actual_length')}"
    if kind == "list_type":
        return f"{where}: a list is expected here, not {_shown(_at(raw, loc))}"
    return f"{where}: {error['msg']}"


def _where(loc: list[Any]) -> str:
    """`coordinates[0][2]`, `geometries[1].coordinates`: where in the geometry member (without the union's tags,
    which pydantic puts in its locations)."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc if part not in _TYPES)
    return path.lstrip(".") or "geometry"


def _at(raw: Any, path: list[Any]) -> Any:
    for part in (p for p in path if p not in _TYPES):
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
