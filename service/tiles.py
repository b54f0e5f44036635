"""Tile matrix sets and tile geometry: WebMercatorQuad, WorldCRS84Quad and an ETRS89 / UTM 32N grid
(morecantile).

The UTM grid has the origin and level-0 resolution of the AdV tiling scheme for EPSG:25832, so its tiles line
up with those of German state and federal tile services.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache

import morecantile
from pyproj import CRS, Transformer

from service.errors import NotFound

UTM32_ORIGIN = (-46133.17, 6301219.54)
UTM32_RES0 = 4891.96981025128
# How far we serve each grid. WebMercatorQuad z20 is ~15 cm per pixel at 51° N; UTM32 z17 is ~4 cm;
# WorldCRS84Quad z19 is ~9 cm east-west at 51° N.
MAX_ZOOM = {"WebMercatorQuad": 20, "WorldCRS84Quad": 19, "UTM32ETRS89Quad": 17}
EXTENT = 4096  # MVT grid units per tile
BUFFER = 64  # MVT units around each tile, so lines and fills join seamlessly
# Below these WebMercatorQuad zooms a layer type is not in tiles (declared in TileJSON, tileset metadata and the
# viewer). At z8 a pixel is ~380 m at 51° N: a typical 5-50 ha site is 0.6-1.9 px, so 200,000 of them are one
# grey blanket in a multi-megabyte tile; from z10 (~95 m/px) they are 2-7 px and readable. Plan zones are
# smaller still; protected areas are large and belong in the overview.
MIN_ZOOM = {"commercial-site": 10, "planning-zone": 11, "ecological-zone": 6, "generic": 0}
REFERENCE_LAT = 51.5  # the region's latitude, for comparing ground resolutions across grids


@cache
def matrix_sets() -> dict[str, morecantile.TileMatrixSet]:
    size = 256 * UTM32_RES0
    x0, y1 = UTM32_ORIGIN
    utm = morecantile.TileMatrixSet.custom(
        [x0, y1 - size, x0 + size, y1], CRS.from_epsg(25832), id="UTM32ETRS89Quad",
        title="ETRS89 / UTM zone 32N (EPSG:25832), AdV tiling scheme", minzoom=0, maxzoom=MAX_ZOOM["UTM32ETRS89Quad"])
    # WorldCRS84Quad: GDAL's OGCAPI driver prefers it, and reads it with the collection's CRS84 extent as is.
    return {"WebMercatorQuad": morecantile.tms.get("WebMercatorQuad"),
            "WorldCRS84Quad": morecantile.tms.get("WorldCRS84Quad"), "UTM32ETRS89Quad": utm}


@dataclass(frozen=True)
class TileRef:
    tms_id: str
    srid: int
    z: int
    row: int
    col: int
    bounds: tuple[float, float, float, float]  # in the matrix set's CRS

    @property
    def key(self) -> str:
        return f"{self.tms_id}/{self.z}/{self.row}/{self.col}"


def get_tms(tms_id: str) -> morecantile.TileMatrixSet:
    try:
        return matrix_sets()[tms_id]
    except KeyError:
        raise NotFound(f"no tile matrix set {tms_id!r}; known: {', '.join(matrix_sets())}",
                       parameter="tileMatrixSetId") from None


SRIDS = {"WebMercatorQuad": 3857, "WorldCRS84Quad": 4326, "UTM32ETRS89Quad": 25832}
# Metres per degree of longitude at the equator (for ground resolutions in the geographic grid).
DEGREE_M = 111_320.0
# Tiles whose bounds and footprint are remembered per worker: the hot ones. Each tile ever asked for stays until
# evicted, so this bounds memory (a 10-minute soak with 65,536 grew a worker by ~1 MB a minute).
TILE_MEMO = 4096


@lru_cache(maxsize=TILE_MEMO)
def tile_ref(tms_id: str, z: int, row: int, col: int) -> TileRef:
    """The tile, or a 404 naming the coordinate that is outside the matrix set. Remembered per tile (a 404 is
    not): 0.3 µs a tile instead of 6 µs with its bounds remembered alone."""
    tms = get_tms(tms_id)
    if not 0 <= z <= MAX_ZOOM[tms_id]:
        raise NotFound(f"tileMatrix {z} is outside 0..{MAX_ZOOM[tms_id]} of {tms_id}", parameter="tileMatrix")
    matrix = tms.matrix(z)
    if not 0 <= row < matrix.matrixHeight:
        raise NotFound(f"tileRow {row} is outside 0..{matrix.matrixHeight - 1} at tileMatrix {z}",
                       parameter="tileRow")
    if not 0 <= col < matrix.matrixWidth:
        raise NotFound(f"tileCol {col} is outside 0..{matrix.matrixWidth - 1} at tileMatrix {z}",
                       parameter="tileCol")
    b = tms.xy_bounds(morecantile.Tile(col, row, z))
    return TileRef(tms_id, SRIDS[tms_id], z, row, col, (b.left, b.bottom, b.right, b.top))


def ground_resolution(tms_id: str, z: int) -> float:
    """Metres on the ground per pixel (256 px tiles) at the region's latitude."""
    cell = get_tms(tms_id).matrix(z).cellSize
    if tms_id == "WebMercatorQuad":
        return cell * math.cos(math.radians(REFERENCE_LAT))
    if SRIDS[tms_id] == 4326:  # degrees; east-west
        return cell * DEGREE_M * math.cos(math.radians(REFERENCE_LAT))
    return cell


@cache
def _from_crs84(tms_id: str) -> Transformer:
    return Transformer.from_crs(4326, SRIDS[tms_id], always_xy=True)


def matrix_limits(tms_id: str, bbox: tuple[float, float, float, float],
                  min_z: int) -> list[dict[str, object]] | None:
    """tileMatrixSetLimits (OGC 17-083r4): for each tile matrix from `min_z` up, the rows and columns of the
    tiles that cover `bbox` (CRS84). A client that reads them asks for no tile outside the data. None when the
    extent has no place in the matrix set's CRS (nothing to limit by)."""
    def index(offset: float, size: float, count: int) -> int:
        return min(max(math.floor(offset / size), 0), count - 1)

    tms = get_tms(tms_id)
    left, bottom, right, top = _from_crs84(tms_id).transform_bounds(*bbox, densify_pts=21)
    if not all(math.isfinite(v) for v in (left, bottom, right, top)):
        return None
    limits: list[dict[str, object]] = []
    for z in range(min_z, MAX_ZOOM[tms_id] + 1):
        m = tms.matrix(z)
        (x0, y0), width, height = m.pointOfOrigin, m.cellSize * m.tileWidth, m.cellSize * m.tileHeight
        limits.append({"tileMatrix": m.id,
                       "minTileRow": index(y0 - top, height, m.matrixHeight),
                       "maxTileRow": index(y0 - bottom, height, m.matrixHeight),
                       "minTileCol": index(left - x0, width, m.matrixWidth),
                       "maxTileCol": index(right - x0, width, m.matrixWidth)})
    return limits


def min_zoom(layer_type: str, tms_id: str) -> int:
    """The layer type's minimum zoom in this matrix set (same ground resolution as in WebMercatorQuad)."""
    wm_zoom = MIN_ZOOM.get(layer_type, 0)
    if tms_id == "WebMercatorQuad":
        return wm_zoom
    target = ground_resolution("WebMercatorQuad", wm_zoom)
    return next((z for z in range(MAX_ZOOM[tms_id] + 1) if ground_resolution(tms_id, z) <= target * 1.01),
                MAX_ZOOM[tms_id])
