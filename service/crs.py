"""Coordinate reference systems: names as clients and files spell them, resolved with pyproj, and the CRSs
an API offers (OGC API – Features Part 2).

PostGIS keeps x = easting/longitude whatever a CRS's axis order says, so OGC CRS84 and EPSG:4326 are both SRID
4326 in the database; they differ only on the wire, where EPSG:4326 is latitude first as EPSG defines it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
DEFAULT_CRS = ("CRS84", "EPSG:4326", "EPSG:3857", "EPSG:25832", "EPSG:25833")


def epsg_uri(code: int) -> str:
    return f"http://www.opengis.net/def/crs/EPSG/0/{code}"


def _is_crs84(text: str) -> bool:
    upper = text.strip().upper()
    return upper.endswith("/CRS84") or upper in ("CRS84", "OGC:CRS84", "WGS84", "[OGC:CRS84]")


@lru_cache(maxsize=256)
def srid_from_name(name: str) -> int:
    """The PostGIS SRID for a CRS name (URN, URI, `EPSG:n`, CRS84)."""
    text = name.strip()
    if _is_crs84(text):
        return 4326
    if text.startswith("[") and text.endswith("]"):  # a safe CURIE, [EPSG:25832]
        text = text[1:-1]
    try:
        code = CRS.from_user_input(text).to_epsg()
    except CRSError as exc:
        raise ValueError(f"unknown coordinate reference system {name!r}") from exc
    if code is None:
        raise ValueError(f"coordinate reference system {name!r} has no EPSG code")
    return code


@dataclass(frozen=True)
class Crs:
    """A CRS as the API offers it: its URI, the SRID PostGIS knows it by, and its axis order on the wire."""

    uri: str
    srid: int
    lat_first: bool
    geographic: bool

    @property
    def digits(self) -> int:
        """Decimals written: ~1 cm in degrees (7), 1 mm in metres (3)."""
        return 7 if self.geographic else 3

    @property
    def header(self) -> str:
        """The `Content-Crs` header value."""
        return f"<{self.uri}>"

    def to_xy(self, values: list[float]) -> list[float]:
        """Coordinates in this CRS's axis order → x/y (easting/longitude first) pairs, as PostGIS wants them."""
        if not self.lat_first:
            return values
        out = list(values)
        for i in range(0, len(out) - 1, 2):
            out[i], out[i + 1] = out[i + 1], out[i]
        return out


@lru_cache(maxsize=64)
def resolve(name: str) -> Crs:
    """A `Crs` for any spelling pyproj understands; ValueError when it is not a CRS with an EPSG code."""
    if _is_crs84(name):
        return Crs(CRS84, 4326, lat_first=False, geographic=True)
    srid = srid_from_name(name)
    crs = CRS.from_epsg(srid)
    first = crs.axis_info[0].direction.lower() if crs.axis_info else "east"
    return Crs(epsg_uri(srid), srid, lat_first=first in ("north", "south"), geographic=crs.is_geographic)


@dataclass(frozen=True)
class CrsList:
    """The CRSs offered for output (`crs`), bounding boxes (`bbox-crs`), filters (`filter-crs`) and bodies."""

    items: tuple[Crs, ...]

    @classmethod
    def from_names(cls, names: tuple[str, ...] | list[str]) -> CrsList:
        items = [resolve(CRS84)] + [resolve(n) for n in names]
        unique = {c.uri: c for c in items}
        return cls(tuple(unique.values()))

    @property
    def uris(self) -> list[str]:
        return [c.uri for c in self.items]

    def find(self, name: str) -> Crs | None:
        """The offered CRS `name` denotes, or None (unknown or not offered)."""
        try:
            wanted = resolve(name)
        except ValueError:
            return None
        return next((c for c in self.items if c == wanted), None)


@lru_cache(maxsize=64)
def to_lonlat(srid: int) -> Transformer:
    return Transformer.from_crs(srid, 4326, always_xy=True)


def inside_definition(crs: Crs, xs: list[float], ys: list[float]) -> bool:
    """Whether x/y points in `crs` map to real places (finite longitude/latitude), so PostGIS can transform
    them; far outside a projection's domain pyproj answers inf where ST_Transform would raise."""
    if crs.geographic:
        return all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in zip(xs, ys, strict=True))
    lons, lats = to_lonlat(crs.srid).transform(xs, ys, errcheck=False)
    return all(math.isfinite(v) and abs(v) <= 360 for v in (*lons, *lats))
