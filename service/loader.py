"""Loading GeoJSON layers: read, validate every feature against its layer type, then write all or nothing.

Used by the demo loader (`geotwin load-demo`); the file importers of the publishing work build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
import shapely
from shapely.geometry import shape

from service.crs import CRS84, Crs, inside_definition, resolve, srid_from_name
from service.errors import InvalidData
from service.geojsoncheck import geometry_problem, holds_other_than_numbers, open_ring
from service.layertypes import LayerType, registry
from service.sql.write import FeatureRow, upsert_collection, upsert_municipality, write_features

DEMO_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
MAX_VERTICES = 1_000_000


@dataclass(frozen=True)
class FeatureIssue:
    """Why one feature was rejected: its index in the file, its id, the property (or geometry), the reason."""

    index: int
    fid: str
    property: str
    message: str


MAX_ID_LENGTH = 200
ID_RULE = (f"an id is a non-empty string or integer of at most {MAX_ID_LENGTH} characters, not ending in "
           "'/versions' (that path lists a feature's versions)")


def id_problem(raw_id: Any) -> str | None:
    """What is wrong with a feature id (None: nothing), the same for the API and imports: it is the last
    segment of the feature's URL (`/` inside is fine, sent as `%2F`)."""
    if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
        return ID_RULE
    text = str(raw_id)
    if not text or "\x00" in text or len(text) > MAX_ID_LENGTH or text.endswith("/versions"):
        return ID_RULE
    return None


def file_crs(srid: int) -> Crs:
    """The CRS of a file's coordinates: GeoJSON files are x/y (lon/lat) whatever EPSG:4326 would say."""
    return resolve(CRS84 if srid == 4326 else f"EPSG:{srid}")


def read_geojson(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Features and the source SRID (the legacy `crs` member GDAL writes; RFC 7946 files are CRS84)."""
    doc = orjson.loads(path.read_bytes())
    name = (doc.get("crs") or {}).get("properties", {}).get("name", "OGC:CRS84")
    return doc.get("features", []), srid_from_name(name)


def prepare(features: list[Any], layer: LayerType, crs: Crs | None = None, repair: bool = False,
            new_id: Callable[[int], str] | None = None) -> tuple[list[FeatureRow], list[FeatureIssue]]:
    """Check every feature; return rows ready for COPY and every issue found (rows are void if any).

    Coordinates are in `crs` (default CRS84) in its own axis order; rows carry x/y WKB in that CRS. With
    `repair`, an invalid polygon is made valid (its polygonal part kept) instead of being refused."""
    rows: list[FeatureRow] = []
    issues: list[FeatureIssue] = []
    seen: set[str] = set()
    for i, feat in enumerate(features):
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            issues.append(FeatureIssue(i, "", "type", "not a GeoJSON Feature (\"type\": \"Feature\")"))
            continue
        raw_id = feat.get("id")
        if raw_id is not None and (problem := id_problem(raw_id)):
            issues.append(FeatureIssue(i, str(raw_id)[:50], "id", problem))
            continue
        fid = str(raw_id) if raw_id is not None else (new_id(i) if new_id else str(i + 1))
        if fid in seen:
            issues.append(FeatureIssue(i, fid, "id", f"duplicate feature id {fid!r}"))
        seen.add(fid)
        props = feat.get("properties")
        if props is None:
            props = {}
        if not isinstance(props, dict):
            issues.append(FeatureIssue(i, fid, "properties", "properties must be a JSON object"))
            continue
        issues += [FeatureIssue(i, fid, p.property, p.message) for p in layer.check(props)]
        issues += [FeatureIssue(i, fid, name, NUL) for name, value in props.items() if _holds_nul(name, value)]
        geom, problem = _geometry(feat.get("geometry"), layer, crs, repair)
        if problem:
            issues.append(FeatureIssue(i, fid, "geometry", problem))
        if not issues:
            start, end = layer.validity_of(props)
            rows.append((fid, shapely.to_wkb(geom, include_srid=False), orjson.dumps(props).decode(), start, end))
    return rows, issues


EMPTY = "empty geometry"  # as edits and imports name it
# PostgreSQL's text and jsonb cannot hold the character U+0000; a body with it got a 400 naming no property.
NUL = "text may not hold the character U+0000 (NUL), which the database cannot store"


def _holds_nul(name: str, value: Any) -> bool:
    """Whether a property's name or value (at any depth) holds U+0000."""
    if "\x00" in name:
        return True
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k, v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul("", v) for v in value)
    return False


def _geometry(raw: Any, layer: LayerType, crs: Crs | None, repair: bool) -> tuple[Any, str | None]:
    """(geometry as x/y in the CRS, None) or (None, why it is refused)."""
    if not isinstance(raw, dict):
        return None, "missing: every feature needs a geometry"
    if not repair and (unclosed := open_ring(raw)):
        return None, f"{unclosed} (send ?repair=true to have it closed)"
    if holds_other_than_numbers(raw) and (problem := geometry_problem(raw)):
        return None, problem
    try:
        geom = shapely.force_2d(shape(raw))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, shapely.errors.ShapelyError) as exc:
        return None, geometry_problem(raw) or f"not a GeoJSON geometry: {exc}"
    allowed = layer.geometry_types
    if geom.is_empty:
        return None, EMPTY
    if allowed and geom.geom_type not in allowed:
        return None, f"{geom.geom_type} is not allowed for {layer.name} ({', '.join(allowed)})"
    coords = shapely.get_coordinates(geom)
    if not np.isfinite(coords).all():
        return None, "coordinates must be finite numbers (no NaN or Infinity)"
    if len(coords) > MAX_VERTICES:
        return None, f"{len(coords):,} vertices; at most {MAX_VERTICES:,} per feature"
    target = crs or resolve(CRS84)
    if target.lat_first:
        geom = shapely.transform(geom, lambda c: c[:, ::-1].copy())
        coords = coords[:, ::-1]
    if not inside_definition(target, coords[:, 0].tolist(), coords[:, 1].tolist()):
        return None, (f"coordinates lie outside where {target.uri} is defined (wrong CRS or axis order? "
                      "send Content-Crs with the CRS of the coordinates)")
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        if not repair:
            return None, f"invalid geometry: {reason} (send ?repair=true to have it made valid)"
        geom = _repaired(geom)
        if geom is None or (allowed and geom.geom_type not in allowed):
            kinds = " or ".join(allowed or ["geometry"])
            return None, f"invalid geometry that cannot be repaired into a {kinds}: {reason}"
    return geom, None


def _repaired(geom: Any) -> Any:
    fixed = shapely.make_valid(geom)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in ("Polygon", "MultiPolygon")]
        polygons = [p for g in parts for p in getattr(g, "geoms", [g])]
        if not polygons:
            return None
        return polygons[0] if len(polygons) == 1 and geom.geom_type == "Polygon" else shapely.MultiPolygon(polygons)
    return fixed if not fixed.is_empty else None


def raise_for(issues: list[FeatureIssue], source: str) -> None:
    if issues:
        first = issues[0]
        raise InvalidData(
            f"{source}: {len(issues)} problem(s); first at feature {first.index} ({first.fid}): "
            f"{first.property}: {first.message}",
            index=first.index, property=first.property,
            issues=[issue.__dict__ for issue in issues[:1000]],
        )


async def load_demo(conn: asyncpg.Connection, directory: Path = DEMO_DIR,
                    progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Load every municipality and collection of `manifest.json` in one transaction (replacing old data)."""
    manifest = orjson.loads((directory / "manifest.json").read_bytes())
    types = registry()
    counts: dict[str, int] = {}
    async with conn.transaction():
        for muni in manifest["municipalities"]:
            m_pk = await upsert_municipality(conn, muni["slug"], muni["name"], muni["ags"], muni["state"],
                                             muni["crs"])
            for spec in muni["collections"]:
                layer = types[spec["layer_type"]]
                features, srid = read_geojson(directory / spec["file"])
                rows, issues = prepare(features, layer, file_crs(srid))
                raise_for(issues, spec["file"])
                c_pk = await upsert_collection(conn, m_pk, spec["id"], spec["title"], spec["description"],
                                               layer.name, spec["licence"], spec["attribution"],
                                               spec["keywords"], spec["visibility"])
                n = await write_features(conn, c_pk, rows, srid)
                counts[f"{muni['slug']}/{spec['id']}"] = n
                if progress:
                    progress(f"{muni['slug']}/{spec['id']}", n)
    return counts
