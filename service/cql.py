"""CQL2 filters (OGC API – Features Part 3) → PostgreSQL with bound values only.

The `cql2` library (cql2-rs) parses cql2-text and cql2-json into one JSON form; this module checks that form
against the collection's queryables and writes SQL. Every name is looked up (unknown → 400 naming it), every
literal is bound, every operand is type-checked, and anything the translator does not implement is refused
with a 400 rather than passed on. Geometry literals are read with Shapely and reprojected with pyproj here,
so PostGIS only ever sees valid geometry in the storage CRS.

Temporal predicates compare by day: validity in GeoTwin is kept as dates. A property instant that is null is
unknown (the predicate is false); an interval end that is null or `..` is open.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cql2
import numpy as np
import orjson
import shapely
from pyproj import Transformer

from service.crs import Crs, inside_definition
from service.errors import InvalidParameter
from service.models import STORAGE_SRID, property_expr

FILTER_LANGS = ("cql2-text", "cql2-json")
MAX_LITERAL_VERTICES = 100_000

# SQL for a compiled node: given the bound-value collector and the municipality expression of the query.
Sql = Callable[[Any, str], str]

COMPARISONS = {"=": "=", "<>": "<>", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
SPATIAL = {"s_intersects": "ST_Intersects({a}, {b})", "s_disjoint": "NOT ST_Intersects({a}, {b})",
           "s_within": "ST_Within({a}, {b})", "s_contains": "ST_Contains({a}, {b})",
           "s_equals": "ST_Equals({a}, {b})", "s_touches": "ST_Touches({a}, {b})",
           "s_overlaps": "ST_Overlaps({a}, {b})", "s_crosses": "ST_Crosses({a}, {b})"}
# Allen's interval relations on closed day intervals [s, e] (an instant has s = e), as CQL2 defines them.
TEMPORAL = {
    "t_after": "{as} > {be}", "t_before": "{ae} < {bs}",
    "t_contains": "{as} < {bs} AND {ae} > {be}", "t_during": "{as} > {bs} AND {ae} < {be}",
    "t_disjoint": "NOT ({as} <= {be} AND {ae} >= {bs})", "t_intersects": "{as} <= {be} AND {ae} >= {bs}",
    "t_equals": "{as} = {bs} AND {ae} = {be}",
    "t_finishedby": "{as} < {bs} AND {ae} = {be}", "t_finishes": "{as} > {bs} AND {ae} = {be}",
    "t_meets": "{ae} = {bs}", "t_metby": "{as} = {be}",
    "t_overlappedby": "{as} > {bs} AND {as} < {be} AND {ae} > {be}",
    "t_overlaps": "{as} < {bs} AND {ae} > {bs} AND {ae} < {be}",
    "t_startedby": "{as} = {bs} AND {ae} > {be}", "t_starts": "{as} = {bs} AND {ae} < {be}",
}
ORDERABLE = {"string", "number", "date"}


@dataclass(frozen=True)
class Queryable:
    """A name a filter or `sortby` may use: its kind, its JSON Schema (for /queryables) and its SQL."""

    name: str
    kind: str  # string, number, boolean, date, geometry
    schema: dict[str, Any]
    column: str = ""  # a fixed expression; empty = the property of that name in f.properties
    needs_muni: bool = False

    def sql(self, muni: str) -> str:
        if self.column:
            return self.column.replace("{muni}", muni)
        return property_expr(self.name, "number" if self.kind == "number" else "text", "f")

    def typed_sql(self, muni: str) -> str:
        base = self.sql(muni)
        if self.column or self.kind in ("string", "number"):
            return base
        raw = f"f.properties -> '{self.name.replace(chr(39), chr(39) * 2)}'"
        if self.kind == "boolean":
            return f"(CASE WHEN jsonb_typeof({raw}) = 'boolean' THEN ({raw})::boolean END)"
        # Dates: the layer type checks the format on every write.
        return f"(CASE WHEN jsonb_typeof({raw}) = 'string' THEN ({base})::date END)"


@dataclass(frozen=True)
class Node:
    kind: str  # a queryable kind, "predicate", "interval", "array" or "null"
    sql: Sql
    values: tuple[Any, ...] = ()  # for arrays: the literal values
    prop: Queryable | None = None  # for a property: what it is (its enum, if any)
    text: str | None = None  # for a text literal: its value


class Filter:
    """A checked filter, ready to be written into a query with its own bound values."""

    def __init__(self, node: Node, text: str) -> None:
        self._node = node
        self.text = text  # the filter as cql2-text, normalised (for cache keys and logs)

    def sql(self, args: Any, muni: str) -> str:
        return "(" + self._node.sql(args, muni) + ")"


def _bad(message: str, **where: Any) -> InvalidParameter:
    return InvalidParameter(message, parameter="filter", **where)


def parse(raw: str, lang: str | None, crs: Crs, queryables: dict[str, Queryable],
          zone: dt.tzinfo = dt.UTC) -> Filter:
    """Parse and check a filter; every problem is a 400 naming the parameter and, where it helps, the
    property or position. A TIMESTAMP compared with a date is the day it falls on in `zone`."""
    lang = lang or "cql2-text"
    if lang not in FILTER_LANGS:
        raise InvalidParameter(f"filter-lang must be one of {', '.join(FILTER_LANGS)}; got {lang!r}",
                               parameter="filter-lang")
    if not raw.strip():
        raise _bad("filter is empty")
    try:
        if lang == "cql2-json":
            try:
                orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise _bad(f"filter is not valid JSON: {exc}") from None
            expr = cql2.parse_json(raw)
            expr.validate()
        else:
            expr = cql2.parse_text(raw)
        tree = expr.to_json()
        try:
            text = expr.to_text()
        except Exception as exc:  # noqa: BLE001 - cql2 raises a bare Exception for a literal it cannot spell
            raise _bad(f"filter cannot be read: {_first_line(str(exc))}") from None  # 1e400 is infinity
    except cql2.ParseError as exc:
        raise _syntax_error(str(exc), lang) from None
    except cql2.ValidationError as exc:
        raise _bad(f"filter is not valid cql2-json: {_first_line(str(exc))}") from None
    except ValueError as exc:  # cql2 raises it for literals it cannot convert
        raise _bad(f"filter cannot be read: {_first_line(str(exc))}") from None
    node = _Compiler(crs, queryables, zone).node(tree)
    if node.kind == "boolean":
        inner = node.sql
        node = Node("predicate", lambda a, m: f"{inner(a, m)} IS TRUE")
    if node.kind != "predicate":
        raise _bad("filter must be a condition (true or false for each feature), not a value")
    return Filter(node, text)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:300] if message.strip() else "invalid"


def _syntax_error(message: str, lang: str) -> InvalidParameter:
    where = re.search(r"-->\s*(\d+):(\d+)", message) or re.search(r"line (\d+) column (\d+)", message)
    expected = re.search(r"=\s*(expected .*)", message)
    detail = expected.group(1) if expected else _first_line(message)
    if where:
        line, column = int(where.group(1)), int(where.group(2))
        return _bad(f"{lang} syntax error at line {line}, column {column}: {detail}",
                    position={"line": line, "column": column})
    return _bad(f"{lang} syntax error: {detail}")


def _kinds_compatible(a: str, b: str) -> bool:
    return a == b or "null" in (a, b)


def _check_codes(prop: Node, others: tuple[Node, ...]) -> None:
    """A property with a list of codes (zoning, availability, …) compared for equality with text that is none
    of them: a typo that would find nothing, refused as `zoning=XX` is."""
    allowed = prop.prop.schema.get("enum") if prop.prop else None
    if not allowed:
        return
    for other in others:
        if other.text is not None and other.text not in allowed:
            raise _bad(f"{prop.prop.name} must be one of {', '.join(map(str, allowed))}; the filter compares it "
                       f"with {other.text!r}", property=prop.prop.name)


class _Compiler:
    def __init__(self, crs: Crs, queryables: dict[str, Queryable], zone: dt.tzinfo) -> None:
        self.crs = crs
        self.queryables = queryables
        self.zone = zone

    # ----- dispatch
    def node(self, tree: Any) -> Node:
        if isinstance(tree, bool):
            return Node("boolean", lambda a, m, v=tree: "TRUE" if v else "FALSE")
        if isinstance(tree, int | float):
            return self._bound("number", float(tree), "float8")
        if isinstance(tree, str):
            return Node("string", lambda a, m: f"{a(tree)}::text", text=tree)
        if tree is None:
            return Node("null", lambda a, m: "NULL")
        if isinstance(tree, list):
            items = [self.node(t) for t in tree]
            kinds = {i.kind for i in items}
            if len(kinds) > 1:
                raise _bad(f"a list mixes {', '.join(sorted(kinds))} values")
            return Node("array", lambda a, m: "", tuple(items))
        if not isinstance(tree, dict):
            raise _bad("filter contains something that is neither a value nor an expression")
        if "property" in tree:
            return self._property(tree["property"])
        if "op" in tree:
            return self._op(str(tree["op"]), tree.get("args") or [])
        if "date" in tree:
            return self._bound("date", self._day(tree["date"], "DATE"), "date")
        if "timestamp" in tree:
            return self._bound("date", self._day(tree["timestamp"], "TIMESTAMP"), "date")
        if "interval" in tree:
            return self._interval(tree["interval"])
        if "bbox" in tree:
            return self._geometry_literal(tree)
        if "type" in tree:
            return self._geometry_literal(tree)
        raise _bad("filter contains an expression this server does not know")

    def _bound(self, kind: str, value: Any, cast: str) -> Node:
        return Node(kind, lambda a, m: f"{a(value)}::{cast}")

    def _property(self, name: Any) -> Node:
        q = self.queryables.get(str(name))
        if q is None:
            known = ", ".join(sorted(self.queryables))
            raise _bad(f"{name!r} is not a queryable of this collection (queryables: {known})", property=str(name))
        return Node(q.kind, lambda a, m: q.typed_sql(m), prop=q)

    def _day(self, value: Any, what: str) -> dt.date:
        text = str(value)
        try:
            if what == "DATE":
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                    raise ValueError
                return dt.date.fromisoformat(text)
            moment = dt.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError
            return moment.astimezone(self.zone).date()
        except ValueError:
            raise _bad(f"{what}({text!r}) is not a valid {what.lower()} (RFC 3339)") from None

    # ----- operators
    def _op(self, op: str, raw_args: list[Any]) -> Node:
        name = op.lower()
        if not isinstance(raw_args, list):
            raise _bad(f"the arguments of {op} must be a list")
        if name in ("and", "or"):
            parts = [self._predicate(self.node(x), op) for x in raw_args]
            if len(parts) < 2:
                raise _bad(f"{op.upper()} needs at least two conditions")
            joiner = f" {name.upper()} "
            return Node("predicate", lambda a, m: joiner.join(f"({p.sql(a, m)})" for p in parts))
        if name == "not":
            inner = self._predicate(self._one(op, raw_args), op)
            return Node("predicate", lambda a, m: f"NOT ({inner.sql(a, m)})")
        if name in COMPARISONS:
            return self._compare(op, COMPARISONS[name], raw_args)
        if name == "like":
            return self._like(op, raw_args)
        if name == "between":
            return self._between(op, raw_args)
        if name == "in":
            return self._in(op, raw_args)
        if name == "isnull":
            inner = self._one(op, raw_args)
            if inner.kind in ("predicate", "array", "interval"):
                raise _bad("IS NULL applies to a property")
            return Node("predicate", lambda a, m: f"{inner.sql(a, m)} IS NULL")
        if name == "casei":
            inner = self._one(op, raw_args)
            if inner.kind not in ("string", "null"):
                raise _bad(f"CASEI applies to text, not to a {inner.kind}")
            return Node("string", lambda a, m: f"lower({inner.sql(a, m)})")
        if name in SPATIAL:
            return self._spatial(name, op, raw_args)
        if name in TEMPORAL:
            return self._temporal(name, op, raw_args)
        if name in ("+", "-", "*", "/", "%", "^", "div"):
            raise _bad(f"arithmetic ({op}) is not supported in filters here")
        if name.startswith("a_"):
            raise _bad(f"array functions ({op}) are not supported: GeoTwin's properties are single values")
        if name == "accenti":
            raise _bad("ACCENTI is not supported; CASEI is")
        raise _bad(f"unknown function or operator {op!r}")

    def _one(self, op: str, raw_args: list[Any]) -> Node:
        if len(raw_args) != 1:
            raise _bad(f"{op} takes one argument, got {len(raw_args)}")
        return self.node(raw_args[0])

    def _two(self, op: str, raw_args: list[Any]) -> tuple[Node, Node]:
        if len(raw_args) != 2:
            raise _bad(f"{op} takes two arguments, got {len(raw_args)}")
        return self.node(raw_args[0]), self.node(raw_args[1])

    def _predicate(self, node: Node, op: str) -> Node:
        if node.kind == "boolean":
            return Node("predicate", lambda a, m: f"{node.sql(a, m)} IS TRUE")
        if node.kind != "predicate":
            raise _bad(f"{op.upper()} combines conditions, but one argument is a {node.kind} value")
        return node

    def _scalar(self, node: Node, op: str) -> Node:
        if node.kind in ("predicate", "array", "interval", "geometry"):
            raise _bad(f"{op} compares values; a {node.kind} cannot be compared this way")
        return node

    def _compare(self, op: str, sql_op: str, raw_args: list[Any]) -> Node:
        left, right = (self._scalar(n, op) for n in self._two(op, raw_args))
        if "null" in (left.kind, right.kind):
            raise _bad(f"comparing with NULL using {op} is never true; use IS NULL")
        if not _kinds_compatible(left.kind, right.kind):
            raise self._mismatch(op, raw_args, left, right)
        if left.kind == "boolean" and sql_op not in ("=", "<>"):
            raise _bad(f"booleans can only be compared with = or <>, not {op}")
        if sql_op in ("=", "<>"):
            _check_codes(left, (right,))
            _check_codes(right, (left,))
        return Node("predicate", lambda a, m: f"{left.sql(a, m)} {sql_op} {right.sql(a, m)}")

    def _mismatch(self, op: str, raw_args: list[Any], *nodes: Node) -> InvalidParameter:
        prop = next((x["property"] for x in raw_args if isinstance(x, dict) and "property" in x), None)
        kinds = " and ".join(n.kind for n in nodes)
        about = f"property {prop!r}" if prop else "the operands"
        return _bad(f"type mismatch in {op}: {about} — cannot compare {kinds}",
                    **({"property": str(prop)} if prop else {}))

    def _like(self, op: str, raw_args: list[Any]) -> Node:
        left, right = self._two(op, raw_args)
        if left.kind != "string" or right.kind != "string":
            raise self._mismatch(op, raw_args, left, right)
        pattern = raw_args[1]
        while isinstance(pattern, dict) and str(pattern.get("op", "")).lower() == "casei" and pattern.get("args"):
            pattern = pattern["args"][0]  # CASEI('%\\') is as much a pattern as '%\\'
        if isinstance(pattern, str) and (len(pattern) - len(pattern.rstrip("\\"))) % 2:
            raise _bad(f"the LIKE pattern {pattern!r} ends with the escape character \\; write \\\\ for a "
                       "backslash itself")
        return Node("predicate", lambda a, m: f"{left.sql(a, m)} LIKE {right.sql(a, m)}")

    def _between(self, op: str, raw_args: list[Any]) -> Node:
        if len(raw_args) != 3:
            raise _bad(f"BETWEEN takes a value and two bounds, got {len(raw_args)} arguments")
        value, low, high = (self._scalar(self.node(x), op) for x in raw_args)
        if value.kind not in ("number", "date") or not all(_kinds_compatible(value.kind, b.kind) for b in (low, high)):
            raise self._mismatch(op, raw_args, value, low, high)
        return Node("predicate",
                    lambda a, m: f"{value.sql(a, m)} BETWEEN {low.sql(a, m)} AND {high.sql(a, m)}")

    def _in(self, op: str, raw_args: list[Any]) -> Node:
        if len(raw_args) != 2 or not isinstance(raw_args[1], list):
            raise _bad("IN takes a value and a list, like name IN ('a', 'b')")
        value = self._scalar(self.node(raw_args[0]), op)
        items = self.node(raw_args[1]).values
        if not items:
            raise _bad("IN needs at least one value in its list")
        if not all(_kinds_compatible(value.kind, i.kind) for i in items):
            raise self._mismatch(op, raw_args, value, items[0])
        _check_codes(value, items)
        return Node("predicate", lambda a, m: f"{value.sql(a, m)} IN ({', '.join(i.sql(a, m) for i in items)})")

    # ----- spatial
    def _spatial(self, name: str, op: str, raw_args: list[Any]) -> Node:
        left, right = self._two(op, raw_args)
        for n in (left, right):
            if n.kind != "geometry":
                raise self._mismatch(op, raw_args, left, right)
        template = SPATIAL[name]
        return Node("predicate", lambda a, m: template.format(a=left.sql(a, m), b=right.sql(a, m)))

    def _geometry_literal(self, tree: dict[str, Any]) -> Node:
        crs = self.crs
        try:
            if "bbox" in tree:
                box = [float(v) for v in tree["bbox"]]
                if len(box) == 6:
                    box = [box[0], box[1], box[3], box[4]]
                if len(box) != 4:
                    raise ValueError("a BBOX needs 4 (or 6) numbers")
                x0, y0, x1, y1 = crs.to_xy(box)
                if x0 > x1 or y0 > y1:
                    raise ValueError("a BBOX's minimum is greater than its maximum")
                geom = shapely.box(x0, y0, x1, y1)
            else:
                geom = shapely.from_geojson(orjson.dumps(tree))
                if crs.lat_first:
                    geom = shapely.transform(geom, lambda c: c[:, ::-1])
            geom = shapely.force_2d(geom)
        except (ValueError, TypeError, shapely.errors.GEOSException) as exc:
            raise _bad(f"geometry literal cannot be read: {_first_line(str(exc))}") from None
        coords = shapely.get_coordinates(geom)
        if len(coords) > MAX_LITERAL_VERTICES:
            raise _bad(f"geometry literal has {len(coords):,} vertices; at most {MAX_LITERAL_VERTICES:,} are accepted")
        if not np.isfinite(coords).all():
            raise _bad("geometry literal has coordinates that are not finite numbers")
        if len(coords) and not inside_definition(crs, coords[:, 0].tolist(), coords[:, 1].tolist()):
            raise _bad(f"geometry literal lies outside where {crs.uri} is defined (check filter-crs and the "
                       "axis order: EPSG:4326 is latitude first)")
        if not shapely.is_valid(geom):
            raise _bad(f"geometry literal is invalid: {shapely.is_valid_reason(geom)}")
        wkb = shapely.to_wkb(_to_storage(geom, crs))
        return Node("geometry", lambda a, m: f"ST_GeomFromWKB({a(wkb)}::bytea, {STORAGE_SRID})")

    # ----- temporal
    def _interval(self, ends: Any) -> Node:
        if not isinstance(ends, list) or len(ends) != 2:
            raise _bad("an INTERVAL has a start and an end")
        parts = [self._interval_end(e, i == 0) for i, e in enumerate(ends)]
        return Node("interval", lambda a, m: "", tuple(parts))

    def _interval_end(self, end: Any, start: bool) -> Node:
        open_end = "'-infinity'::date" if start else "'infinity'::date"
        if end == ".." or end is None:
            return Node("date", lambda a, m: open_end)
        if isinstance(end, str):
            day = self._day(end, "TIMESTAMP" if "T" in end.upper() else "DATE")
            return self._bound("date", day, "date")
        node = self.node(end)
        if node.kind != "date":
            raise _bad(f"an INTERVAL's ends are dates, not a {node.kind}")
        return Node("date", lambda a, m: f"COALESCE({node.sql(a, m)}, {open_end})")

    def _span(self, node: Node, op: str) -> tuple[Sql, Sql]:
        if node.kind == "interval":
            return node.values[0].sql, node.values[1].sql
        if node.kind == "date":
            return node.sql, node.sql
        raise _bad(f"{op} compares dates or intervals, not a {node.kind}")

    def _temporal(self, name: str, op: str, raw_args: list[Any]) -> Node:
        left, right = self._two(op, raw_args)
        (as_, ae), (bs, be) = self._span(left, op), self._span(right, op)
        template = TEMPORAL[name]
        return Node("predicate", lambda a, m: template.format(
            **{"as": as_(a, m), "ae": ae(a, m), "bs": bs(a, m), "be": be(a, m)}))


def _to_storage(geom: shapely.Geometry, crs: Crs) -> shapely.Geometry:
    """Densify edges in the literal's own CRS (a straight edge there bends in UTM), then reproject."""
    if crs.srid == STORAGE_SRID:
        return geom
    x0, y0, x1, y1 = shapely.bounds(geom)
    step = 0.001 if crs.geographic else max(x1 - x0, y1 - y0, 1.0) / 256
    if shapely.get_type_id(geom) not in (0, 4):  # points need no densifying
        geom = shapely.segmentize(geom, step)
    t = _transformer(crs.srid)
    return shapely.transform(geom, lambda c: np.column_stack(t.transform(c[:, 0], c[:, 1])))


_TRANSFORMERS: dict[int, Transformer] = {}


def _transformer(srid: int) -> Transformer:
    if srid not in _TRANSFORMERS:
        _TRANSFORMERS[srid] = Transformer.from_crs(srid, STORAGE_SRID, always_xy=True)
    return _TRANSFORMERS[srid]
