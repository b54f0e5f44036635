"""Layer types: the JSON Schema contracts in `schemas/`, loaded once, and validation of feature properties.

Validation runs twice over only where it fails: jsonschema-rs decides (about 1 µs a feature, so imports
and the generator can check every feature), and Python's jsonschema explains a failure property by
property in words a planner can act on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
from jsonschema import Draft202012Validator, FormatChecker

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

# The regional collection of each typed layer family (generic layers have no shared meaning to merge).
REGIONAL_IDS = {
    "planning-zone": "planning-zones",
    "commercial-site": "commercial-sites",
    "ecological-zone": "ecological-zones",
}


@dataclass(frozen=True)
class PropertyIssue:
    """One reason a feature's properties do not fit: the property (dotted path) and what is wrong."""

    property: str
    message: str


@dataclass
class LayerType:
    name: str
    schema: dict[str, Any]
    validator: Draft202012Validator = field(repr=False)
    fast: Any = field(repr=False, default=None)

    def __post_init__(self) -> None:
        self.fast = jsonschema_rs.validator_for(self.schema, validate_formats=True)

    @property
    def title(self) -> str:
        return self.schema.get("title", self.name)

    @property
    def version(self) -> str:
        return self.schema.get("x-geotwin", {}).get("version", "1.0.0")

    @property
    def geometry_types(self) -> list[str] | None:
        return self.schema.get("x-geotwin", {}).get("geometry")

    @property
    def validity(self) -> tuple[str, str] | None:
        v = self.schema.get("x-geotwin", {}).get("validity")
        return (v["start"], v["end"]) if v else None

    @property
    def multi_polygon(self) -> bool:
        """Polygonal layers are served as MultiPolygon throughout, so GIS clients see one geometry type."""
        return set(self.geometry_types or ()) == {"Polygon", "MultiPolygon"}

    def feature_schema(self, title: str, schema_id: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """JSON Schema of a whole GeoJSON feature of this layer type, as served (OGC API – Features Part 5
        style; GDAL reads it through the collection's `describedby` link to know every field up front)."""
        props = {k: v for k, v in self.schema.get("properties", {}).items()}
        props.update(extra or {})
        geometry: dict[str, Any] = {"type": "object", "format": "geometry-any"}
        if self.multi_polygon:
            geometry["format"] = "geometry-multipolygon"
        elif self.geometry_types and len(self.geometry_types) == 1:
            geometry["format"] = f"geometry-{self.geometry_types[0].lower()}"
        inner: dict[str, Any] = {"type": "object", "properties": props, "required": self.schema.get("required", [])}
        if self.open_properties:
            inner["additionalProperties"] = self.schema.get("additionalProperties", True)
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": schema_id,
            "title": title,
            "description": f"A feature of layer type {self.name} {self.version}: {self.schema.get('description', '')}",
            "type": "object",
            "required": ["type", "geometry", "properties"],
            "properties": {
                "type": {"type": "string", "enum": ["Feature"]},
                "id": {"type": "string"},
                "geometry": geometry,
                "properties": inner,
            },
        }

    @property
    def open_properties(self) -> bool:
        """True for a layer type that accepts properties it does not name (generic)."""
        return self.schema.get("additionalProperties") is not False

    def display_fields(self) -> dict[str, dict[str, Any]]:
        """What each property is called and what its codes mean, in the layer type's order, for people: the
        viewer's popups and the HTML pages show `Zoning: Industriegebiet (GI)`, not `zoning: GI`."""
        out: dict[str, dict[str, Any]] = {}
        for name, spec in self.schema.get("properties", {}).items():
            entry: dict[str, Any] = {"title": spec.get("title", name)}
            if spec.get("x-labels"):
                entry["labels"] = spec["x-labels"]
            if spec.get("format") == "date":  # shown as the page's language writes a date: 30.09.2026
                entry["format"] = "date"
            out[name] = entry
        return out

    def property_kinds(self) -> dict[str, str]:
        """Each named property with its kind: string, number, integer, boolean or date."""
        kinds = {}
        for name, spec in self.schema.get("properties", {}).items():
            if spec.get("format") == "date":
                kinds[name] = "date"
            elif "enum" in spec:
                kinds[name] = "string"
            else:
                kinds[name] = spec.get("type", "string")
        return kinds

    def ordered_keys(self, present: set[str]) -> list[str]:
        """`present` property names in the contract's order (unknown ones after, sorted) for tables."""
        named = [k for k in self.schema.get("properties", {}) if k in present]
        return named + sorted(present - set(named))

    def enum_values(self, name: str) -> list[Any] | None:
        return self.schema.get("properties", {}).get(name, {}).get("enum")

    def check(self, properties: Any) -> list[PropertyIssue]:
        """Every way `properties` breaks the contract (empty when it fits)."""
        if self.fast.is_valid(properties):
            return []
        issues = []
        for err in sorted(self.validator.iter_errors(properties), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in err.absolute_path)
            if not path and err.validator == "required":
                path = err.message.split("'")[1] if "'" in err.message else ""
            if not path and err.validator == "additionalProperties":
                extra = sorted(set(properties) - set(self.schema.get("properties", {})))
                path = ",".join(extra)
                err.message = f"not a property of layer type {self.name}: {path}"
            issues.append(PropertyIssue(path, err.message))
        return issues

    def validity_of(self, properties: dict[str, Any]) -> tuple[dt.date | None, dt.date | None]:
        """The feature's validity dates, read from the properties the layer type names for them."""
        if not self.validity:
            return None, None
        start, end = (properties.get(k) for k in self.validity)
        return (dt.date.fromisoformat(start) if start else None, dt.date.fromisoformat(end) if end else None)


@cache
def registry(schema_dir: Path = SCHEMA_DIR) -> dict[str, LayerType]:
    """All layer types by name (file `schemas/<name>.schema.json`)."""
    types = {}
    for path in sorted(schema_dir.glob("*.schema.json")):
        schema = orjson.loads(path.read_bytes())
        Draft202012Validator.check_schema(schema)
        name = path.name.removesuffix(".schema.json")
        types[name] = LayerType(name, schema, Draft202012Validator(schema, format_checker=FormatChecker()))
    return types


def sync_layer_types(connection: Any) -> None:
    """Bring the database's `layer_type` table (each layer type's validity keys, which the validity trigger of
    migration 0015 reads for writers other than the service) in step with `schemas/`. Runs at the end of every
    `alembic upgrade` (migrations/env.py); does nothing on a database from before 0015."""
    from sqlalchemy import text

    if connection.execute(text("SELECT to_regclass('layer_type')")).scalar() is None:
        return
    for name, layer in registry().items():
        start, end = layer.validity or (None, None)
        connection.execute(text(
            "INSERT INTO layer_type (name, validity_start, validity_end) VALUES (:name, :start, :end) "
            "ON CONFLICT (name) DO UPDATE SET validity_start = EXCLUDED.validity_start, "
            "validity_end = EXCLUDED.validity_end WHERE (layer_type.validity_start, layer_type.validity_end) "
            "IS DISTINCT FROM (EXCLUDED.validity_start, EXCLUDED.validity_end)"),
            {"name": name, "start": start, "end": end})
