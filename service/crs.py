"""Coordinate reference systems: names as clients and files spell them, resolved with pyproj."""

from __future__ import annotations

from functools import lru_cache

from pyproj import CRS
from pyproj.exceptions import CRSError

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


def epsg_uri(code: int) -> str:
    return f"http://www.opengis.net/def/crs/EPSG/0/{code}"


@lru_cache(maxsize=256)
def srid_from_name(name: str) -> int:
    """The PostGIS SRID for a CRS name (URN, URI, `EPSG:n`, CRS84). PostGIS keeps x = easting/longitude
    whatever the CRS's axis order, so OGC CRS84 and EPSG:4326 are both SRID 4326 in storage."""
    text = name.strip()
    if text.upper().endswith("CRS84") or text.upper() in ("OGC:CRS84", "WGS84"):
        return 4326
    try:
        code = CRS.from_user_input(text).to_epsg()
    except CRSError as exc:
        raise ValueError(f"unknown coordinate reference system {name!r}") from exc
    if code is None:
        raise ValueError(f"coordinate reference system {name!r} has no EPSG code")
    return code
