"""Query parameters of the OGC endpoints: parsed strictly, every error naming its parameter."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from typing import Any

from starlette.datastructures import QueryParams

from service.errors import InvalidParameter, UnknownParameter
from service.layertypes import LayerType


def check_known(params: QueryParams, allowed: set[str]) -> None:
    """400 for a parameter the endpoint does not know (a typo must not silently widen a query)."""
    unknown = sorted(set(params.keys()) - allowed)
    if unknown:
        raise UnknownParameter(
            f"unknown query parameter {unknown[0]!r}; this endpoint accepts: {', '.join(sorted(allowed))}",
            parameter=unknown[0],
        )
    for key in params.keys():
        values = params.getlist(key)
        if len(values) > 1:
            raise InvalidParameter(f"parameter {key!r} is given more than once", parameter=key)
        if "\x00" in values[0]:
            # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
            raise InvalidParameter(f"parameter {key!r} contains a NUL character", parameter=key)


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


def parse_bbox(raw: str | None) -> tuple[float, float, float, float] | None:
    """`minLon,minLat,maxLon,maxLat` (or with heights: 6 numbers) in CRS84."""
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) not in (4, 6):
        raise InvalidParameter(f"bbox needs 4 (or 6) comma-separated numbers, got {len(parts)}", parameter="bbox")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise InvalidParameter(f"bbox values must be numbers, got {raw!r}", parameter="bbox") from None
    if not all(math.isfinite(n) for n in nums):
        raise InvalidParameter("bbox values must be finite numbers", parameter="bbox")
    x1, y1, x2, y2 = (nums[0], nums[1], nums[3], nums[4]) if len(nums) == 6 else nums
    if not (-180 <= x1 <= 180 and -180 <= x2 <= 180 and -90 <= y1 <= 90 and -90 <= y2 <= 90):
        raise InvalidParameter("bbox is outside longitude -180..180 / latitude -90..90 (CRS84)", parameter="bbox")
    if y1 > y2:
        raise InvalidParameter("bbox: the lower latitude is greater than the upper one", parameter="bbox")
    if x1 > x2:
        raise InvalidParameter("bbox crossing the antimeridian is not supported: minimum longitude is greater "
                               "than maximum longitude", parameter="bbox")
    return x1, y1, x2, y2


def _instant(text: str) -> date | None:
    if text in ("", ".."):
        return None
    try:
        if "T" in text or "t" in text:
            moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError("no time zone")
            return moment.astimezone(UTC).date()
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError("not a date")
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidParameter(
            f"datetime: {text!r} is not an RFC 3339 date (2024-05-01) or date-time (2024-05-01T12:00:00Z)",
            parameter="datetime") from None


def parse_datetime(raw: str | None) -> tuple[date | None, date | None] | None:
    """An instant or an interval (`a/b`, `../b`, `a/..`) compared by day with the validity dates."""
    if raw is None:
        return None
    if "/" in raw:
        parts = raw.split("/")
        if len(parts) != 2 or parts == ["..", ".."] or parts == ["", ""]:
            raise InvalidParameter(f"datetime: {raw!r} is not an interval like 2020-01-01/2024-12-31 or ../2024-12-31",
                                   parameter="datetime")
        start, end = _instant(parts[0]), _instant(parts[1])
        if start and end and start > end:
            raise InvalidParameter("datetime: the interval's start is after its end", parameter="datetime")
        return start, end
    if raw in ("", ".."):
        raise InvalidParameter("datetime must not be empty", parameter="datetime")
    day = _instant(raw)
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
