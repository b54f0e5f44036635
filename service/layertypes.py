"""Layer types: the JSON Schema contracts in `schemas/`, loaded once, and validation of feature properties."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

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
    def open_properties(self) -> bool:
        """True for a layer type that accepts properties it does not name (generic)."""
        return self.schema.get("additionalProperties") is not False

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

    def enum_values(self, name: str) -> list[Any] | None:
        return self.schema.get("properties", {}).get(name, {}).get("enum")

    def check(self, properties: Any) -> list[PropertyIssue]:
        """Every way `properties` breaks the contract (empty when it fits)."""
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
