"""Query parameters of the OGC endpoints: parsed strictly, every error naming its parameter."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams

from service.crs import Crs, CrsList, inside_definition
from service.errors import InvalidParameter, UnknownParameter
from service.layertypes import LayerType

if TYPE_CHECKING:
    from service.cql import Queryable


def check_known(params: QueryParams, allowed: set[str]) -> None:
    """400 for a parameter the endpoint does not know (a typo must not silently widen a query)."""
    unknown = sorted(set(params.keys()) - allowed)
    if unknown:
        raise UnknownParameter(
            f"unknown query parameter {unknown[0]!r}; this endpoint "
            f"{'accepts: ' + ', '.join(sorted(allowed)) if allowed else 'takes none'}",
            parameter=unknown[0],
        )
    for key in params.keys():
        values = params.getlist(key)
        if len(values) > 1:
            raise InvalidParameter(f"parameter {key!r} is given more than once", parameter=key)
        if "\x00" in values[0]:
            # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
            raise InvalidParameter(f"parameter {key!r} contains a NUL character", parameter=key)


MAX_NUMBER = 999_999_999_999  # the largest whole number a parameter takes (12 digits, as parse_int reads)


def parse_int(raw: str | None, name: str, default: int, minimum: int) -> int:
    if raw is None:
        return default
    if not re.fullmatch(r"\s*\+?\d{1,12}\s*", raw):
        raise InvalidParameter(f"{name} must be a whole number ≥ {minimum}, got {raw!r}", parameter=name)
    value = int(raw)
    if value < minimum:
        raise InvalidParameter(f"{name} must be ≥ {minimum}, got {value}", parameter=name)
    return value


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    """A limit above the maximum is served as the maximum (OGC API – Features, /req/core/fc-limit-response-1)."""
    return min(parse_int(raw, "limit", default, 1), maximum)


def parse_bbox(raw: str | None, crs: Crs | None = None,
               name: str = "bbox") -> tuple[float, float, float, float] | None:
    """`minLon,minLat,maxLon,maxLat` (or with heights: 6 numbers) in CRS84, or in `crs` in that CRS's axis
    order (EPSG:4326: minLat,minLon,maxLat,maxLon). Returned as x/y: minX, minY, maxX, maxY."""
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) not in (4, 6):
        raise InvalidParameter(f"{name} needs 4 (or 6) comma-separated numbers, got {len(parts)}", parameter=name)
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise InvalidParameter(f"{name} values must be numbers, got {raw!r}", parameter=name) from None
    if not all(math.isfinite(n) for n in nums):
        raise InvalidParameter(f"{name} values must be finite numbers", parameter=name)
    corners = [nums[0], nums[1], nums[3], nums[4]] if len(nums) == 6 else nums
    if crs is not None and not (crs.srid == 4326 and not crs.lat_first):
        x1, y1, x2, y2 = crs.to_xy(corners)
        if x1 > x2 or y1 > y2:
            raise InvalidParameter(f"{name}: a minimum is greater than its maximum (axis order of {crs.uri}: "
                                   f"{'latitude first' if crs.lat_first else 'easting first'})", parameter=name)
        if not inside_definition(crs, [x1, x2], [y1, y2]):
            raise InvalidParameter(f"{name} lies outside where {crs.uri} is defined", parameter=name)
        return x1, y1, x2, y2
    x1, y1, x2, y2 = corners
    if not (-180 <= x1 <= 180 and -180 <= x2 <= 180 and -90 <= y1 <= 90 and -90 <= y2 <= 90):
        raise InvalidParameter(f"{name} is outside longitude -180..180 / latitude -90..90 (CRS84)", parameter=name)
    if y1 > y2:
        raise InvalidParameter(f"{name}: the lower latitude is greater than the upper one", parameter=name)
    if x1 > x2:
        raise InvalidParameter(f"{name} crossing the antimeridian is not supported: minimum longitude is greater "
                               "than maximum longitude", parameter=name)
    return x1, y1, x2, y2


def parse_crs(raw: str | None, offered: CrsList, name: str) -> Crs | None:
    """A CRS the API offers, by URI or other common spelling; None when not given."""
    if raw is None:
        return None
    crs = offered.find(raw)
    if crs is None:
        raise InvalidParameter(f"{name}: {raw!r} is not a CRS offered here; use one of: {', '.join(offered.uris)}",
                               parameter=name)
    return crs


def parse_bool(raw: str | None, name: str) -> bool:
    if raw is None:
        return False
    if raw.lower() not in ("true", "false"):
        raise InvalidParameter(f"{name} must be true or false, got {raw!r}", parameter=name)
    return raw.lower() == "true"


def parse_sortby(raw: str | None, queryables: dict[str, Queryable]) -> list[tuple[Queryable, bool]]:
    """`sortby=name,-area_net_ha`: queryables, each ascending (optional `+`) or descending (`-`)."""
    if raw is None:
        return []
    keys: list[tuple[Queryable, bool]] = []
    for part in raw.split(","):
        term = part.strip()
        desc = term.startswith("-")
        name = term[1:] if term[:1] in "+-" and term else term
        if not name:
            raise InvalidParameter("sortby has an empty entry", parameter="sortby")
        q = queryables.get(name)
        if q is None:
            raise InvalidParameter(f"sortby: {name!r} is not a queryable of this collection (queryables: "
                                   f"{', '.join(sorted(queryables))})", parameter="sortby", property=name)
        if q.kind == "geometry":
            raise InvalidParameter("sortby: features cannot be sorted by geometry", parameter="sortby",
                                   property=name)
        if any(k.name == name for k, _ in keys):
            raise InvalidParameter(f"sortby names {name!r} twice", parameter="sortby", property=name)
        keys.append((q, desc))
    return keys


def parse_properties(raw: str | None, known: set[str] | None) -> list[str] | None:
    """`properties=a,b`: only these properties in each feature (`properties=` for none). `known` None
    accepts any name (generic layers)."""
    if raw is None:
        return None
    names = [p.strip() for p in raw.split(",") if p.strip()]
    for name in names:
        if known is not None and name not in known:
            raise InvalidParameter(f"properties: {name!r} is not a property of this collection (known: "
                                   f"{', '.join(sorted(known))})", parameter="properties", property=name)
    return names


def instant(text: str, zone: tzinfo = UTC) -> datetime | None:
    """A moment as people write it: an RFC 3339 date-time, a date (its first moment), or either without a zone
    (then read in `zone`, the service's time zone); as UTC, or None when it is none of these. `T` or a space may
    separate date and time."""
    # An unencoded `+` in a URL's query arrives as a space: `…T12:00:00 01:00` meant `+01:00`.
    text = re.sub(r"(\d{2}:\d{2}(:\d{2}(\.\d+)?)?) (\d{2}:?\d{2})$", r"\1+\4", text.strip())
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([Zz]|[+-]\d{2}:?\d{2})?)?", text):
        return None
    try:
        moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:  # 2026-02-30, 25:00
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)


def _instant(text: str, zone: tzinfo) -> date | None:
    """A date, or a date-time that names its zone (RFC 3339, as OGC API – Features asks), as the day it falls on
    in `zone` (validity dates are the municipality's days)."""
    if text in ("", ".."):
        return None
    day = re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)
    zoned = re.search(r"[Tt].*([Zz]|[+-]\d{2}:?\d{2})$", text)
    if not (day or zoned) or (moment := instant(text)) is None:
        raise InvalidParameter(
            f"datetime: {text!r} is not an RFC 3339 date (2024-05-01) or date-time (2024-05-01T12:00:00Z)",
            parameter="datetime")
    return date.fromisoformat(text) if day else moment.astimezone(zone).date()


def parse_datetime(raw: str | None, zone: tzinfo = UTC) -> tuple[date | None, date | None] | None:
    """An instant or an interval (`a/b`, `../b`, `a/..`) compared by day (in `zone`) with the validity dates."""
    if raw is None:
        return None
    if "/" in raw:
        parts = raw.split("/")
        if len(parts) != 2 or parts == ["..", ".."] or parts == ["", ""]:
            raise InvalidParameter(f"datetime: {raw!r} is not an interval like 2020-01-01/2024-12-31 or ../2024-12-31",
                                   parameter="datetime")
        start, end = _instant(parts[0], zone), _instant(parts[1], zone)
        if start and end and start > end:
            raise InvalidParameter("datetime: the interval's start is after its end", parameter="datetime")
        return start, end
    if raw in ("", ".."):
        raise InvalidParameter("datetime must not be empty", parameter="datetime")
    day = _instant(raw, zone)
    return day, day


def property_filter(layer: LayerType, name: str, raw: str) -> tuple[str, Any]:
    """Turn `?name=value` into a typed value; returns ("json", value) for a typed property or ("text", raw)
    for a property of an open (generic) layer type."""
    kinds = layer.property_kinds()
    if name not in kinds:
        return "text", raw
    kind = kinds[name]
    try:
        if kind == "number":
            value: Any = float(raw)
            if not math.isfinite(value):
                raise ValueError
            value = int(value) if value.is_integer() else value
        elif kind == "integer":
            value = int(raw)
        elif kind == "boolean":
            if raw not in ("true", "false"):
                raise ValueError
            value = raw == "true"
        else:
            value = raw
    except ValueError:
        raise InvalidParameter(f"{name} is a {kind} property; {raw!r} is not a valid {kind}",
                               parameter=name) from None
    allowed = layer.enum_values(name)
    if allowed is not None and value not in allowed:
        raise InvalidParameter(f"{name} must be one of {', '.join(map(str, allowed))}; got {raw!r}", parameter=name)
    return "json", value
