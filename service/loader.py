"""Loading GeoJSON layers: read, validate every feature against its layer type, then write all or nothing.

Used by the demo loader (`geotwin load-demo`); the file importers of the publishing work build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import shapely
from shapely.geometry import shape

from service.crs import srid_from_name
from service.errors import InvalidData
from service.layertypes import LayerType, registry
from service.sql.write import FeatureRow, upsert_collection, upsert_municipality, write_features

DEMO_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


@dataclass(frozen=True)
class FeatureIssue:
    """Why one feature was rejected: its index in the file, its id, the property (or geometry), the reason."""

    index: int
    fid: str
    property: str
    message: str


def read_geojson(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Features and the source SRID (the legacy `crs` member GDAL writes; RFC 7946 files are CRS84)."""
    doc = orjson.loads(path.read_bytes())
    name = (doc.get("crs") or {}).get("properties", {}).get("name", "OGC:CRS84")
    return doc.get("features", []), srid_from_name(name)


def prepare(features: list[dict[str, Any]], layer: LayerType) -> tuple[list[FeatureRow], list[FeatureIssue]]:
    """Check every feature; return rows ready for COPY and every issue found (rows are void if any)."""
    rows: list[FeatureRow] = []
    issues: list[FeatureIssue] = []
    seen: set[str] = set()
    allowed = layer.geometry_types
    for i, feat in enumerate(features):
        fid = str(feat.get("id") if feat.get("id") is not None else i + 1)
        if fid in seen:
            issues.append(FeatureIssue(i, fid, "id", f"duplicate feature id {fid!r}"))
        seen.add(fid)
        props = feat.get("properties") or {}
        issues += [FeatureIssue(i, fid, p.property, p.message) for p in layer.check(props)]
        try:
            geom = shape(feat["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException) as exc:
            issues.append(FeatureIssue(i, fid, "geometry", f"not a GeoJSON geometry: {exc}"))
            continue
        if geom.is_empty:
            issues.append(FeatureIssue(i, fid, "geometry", "empty geometry"))
        elif allowed and geom.geom_type not in allowed:
            issues.append(FeatureIssue(i, fid, "geometry",
                                       f"{geom.geom_type} is not allowed for {layer.name} ({', '.join(allowed)})"))
        elif not geom.is_valid:
            issues.append(FeatureIssue(i, fid, "geometry", f"invalid geometry: {shapely.is_valid_reason(geom)}"))
        if not issues:
            start, end = layer.validity_of(props)
            rows.append((fid, shapely.to_wkb(geom, include_srid=False), orjson.dumps(props).decode(), start, end))
    return rows, issues


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
                rows, issues = prepare(features, layer)
                raise_for(issues, spec["file"])
                c_pk = await upsert_collection(conn, m_pk, spec["id"], spec["title"], spec["description"],
                                               layer.name, spec["licence"], spec["attribution"],
                                               spec["keywords"], spec["visibility"])
                n = await write_features(conn, c_pk, rows, srid)
                counts[f"{muni['slug']}/{spec['id']}"] = n
                if progress:
                    progress(f"{muni['slug']}/{spec['id']}", n)
    return counts
