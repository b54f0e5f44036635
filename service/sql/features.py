"""Items and item queries. Feature JSON is assembled in PostGIS; Python only joins the rows.

Geometry leaves the storage CRS through ST_Transform into the requested CRS (CRS84 unless asked), written in
that CRS's axis order: x = longitude for CRS84 as GeoJSON requires, latitude first for EPSG:4326.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from service.models import STORAGE_SRID

if TYPE_CHECKING:
    from service.cql import Filter, Queryable
    from service.crs import Crs

# A CRS84 bbox is a rectangle in longitude/latitude; its edges bend in UTM, so the envelope is densified
# (every 0.001°, about 70 m) before it is transformed: the test is then the exact rectangle, not its corners.
BBOX_GEOM = (
    "(SELECT ST_Transform(ST_Segmentize(ST_MakeEnvelope({0}, {1}, {2}, {3}, 4326), 0.001), "
    f"{STORAGE_SRID}))"
)


@dataclass
class Output:
    """How features are written: CRS (None = CRS84), which properties (None = all), with or without geometry."""

    crs: Crs | None = None
    properties: list[str] | None = None
    skip_geometry: bool = False


@dataclass
class ItemsQuery:
    """What an items request selects. Values are bound; property names are checked against the layer type."""

    members: list[tuple[int, str]]
    regional: bool
    multi: bool = False
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: Crs | None = None  # None = CRS84; the bbox is already in x/y order
    interval: tuple[date | None, date | None] | None = None
    equals: dict[str, Any] = field(default_factory=dict)
    text_equals: dict[str, str] = field(default_factory=dict)
    filter: Filter | None = None
    sortby: list[tuple[Queryable, bool]] = field(default_factory=list)  # (queryable, descending)
    output: Output = field(default_factory=Output)
    limit: int = 100
    offset: int = 0
    as_of: datetime | None = None  # read the collection as it was then (from the change log)

    @property
    def filtered(self) -> bool:
        return bool(self.bbox or self.interval or self.equals or self.text_equals or self.filter or self.as_of)


class Args:
    """Collects bound values and hands out their `$n` placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def feature_json(args: Args, regional: bool, multi: bool, out: Output) -> str:
    fid = "(c.muni || ':' || f.fid)" if regional else "f.fid"
    props = "(f.properties || jsonb_build_object('municipality', c.muni))" if regional else "f.properties"
    if out.properties is not None:
        props = (f"(SELECT COALESCE(jsonb_object_agg(e.key, e.value), '{{}}'::jsonb) FROM jsonb_each({props}) e "
                 f"WHERE e.key = ANY({args(out.properties)}::text[]))")
    return (
        "'{\"type\":\"Feature\",\"id\":' || to_json(" + fid + ")::text"
        " || ',\"geometry\":' || " + geometry_json(multi, out)
        + " || ',\"properties\":' || " + props + "::text || '}'"
    )


def geometry_json(multi: bool, out: Output, alias: str = "f") -> str:
    """GeoJSON geometry text of `alias`.geom in the output CRS and its axis order."""
    if out.skip_geometry:
        return "'null'"
    geom = f"ST_Multi({alias}.geom)" if multi else f"{alias}.geom"
    crs = out.crs
    srid, digits, flip = (4326, 7, False) if crs is None else (crs.srid, crs.digits, crs.lat_first)
    if srid != STORAGE_SRID:
        geom = f"ST_Transform({geom}, {int(srid)})"
    if flip:
        geom = f"ST_FlipCoordinates({geom})"
    # options 0: no legacy "crs" member inside the geometry; the CRS travels in the Content-Crs header.
    return f"ST_AsGeoJSON({geom}, {int(digits)}, 0)"


def scope_predicate(args: Args, members: list[tuple[int, str]], with_muni: bool = True) -> tuple[str, str]:
    """The collection predicate and the municipality expression. Written so the planner sees the values
    (one collection: `=`; several: `= ANY`) and uses per-collection statistics and (collection_id, id);
    a join against unnest() hid them and walked the whole table for a 6-feature collection."""
    if len(members) == 1:
        pk, muni = members[0]
        return f"f.collection_id = {args(pk)}::int", (f"{args(muni)}::text" if with_muni else "")
    pks = args([pk for pk, _ in members])
    if not with_muni:
        return f"f.collection_id = ANY({pks}::int[])", ""
    munis = args([m for _, m in members])
    return (f"f.collection_id = ANY({pks}::int[])",
            f"({munis}::text[])[array_position({pks}::int[], f.collection_id)]")


def _bbox_geom(args: Args, q: ItemsQuery) -> str:
    crs = q.bbox_crs
    values = [args(v) + "::float8" for v in q.bbox or ()]
    if crs is None:
        return BBOX_GEOM.format(*values)
    envelope = f"ST_MakeEnvelope({', '.join(values)}, {int(crs.srid)})"
    if crs.srid == STORAGE_SRID:
        return envelope
    x0, y0, x1, y1 = q.bbox or (0, 0, 0, 0)
    step = 0.001 if crs.geographic else max(x1 - x0, y1 - y0, 1.0) / 256
    return f"(SELECT ST_Transform(ST_Segmentize({envelope}, {args(step)}::float8), {STORAGE_SRID}))"


def where_clause(args: Args, q: ItemsQuery, scope: str, muni: str) -> str:
    clauses = [scope]
    if q.bbox:
        box = _bbox_geom(args, q)
        clauses.append(f"f.geom && {box} AND ST_Intersects(f.geom, {box})")
    if q.interval:
        start, end = q.interval
        if end is not None:
            clauses.append(f"(f.valid_from IS NULL OR f.valid_from <= {args(end)}::date)")
        if start is not None:
            clauses.append(f"(f.valid_to IS NULL OR f.valid_to >= {args(start)}::date)")
    if q.equals:
        clauses.append(f"f.properties @> {args(q.equals)}::jsonb")
    for name, value in q.text_equals.items():
        clauses.append(f"f.properties ->> {args(name)} = {args(value)}")
    if q.filter is not None:
        clauses.append(q.filter.sql(args, muni))
    return "WHERE " + " AND ".join(clauses)


def order_by(q: ItemsQuery, muni: str) -> str:
    """Sort keys, then the row id: a total order, so pages neither repeat nor skip features."""
    keys = [f"{qb.typed_sql(muni)} {'DESC' if desc else 'ASC'} NULLS LAST" for qb, desc in q.sortby]
    return ", ".join([*keys, "f.id"])


def source_of(args: Args, q: ItemsQuery) -> tuple[str, str]:
    """(WITH clause, table) the features come from: the live table, or the change log as of a moment: each
    feature's last change at or before it, unless that was its deletion."""
    if q.as_of is None:
        return "", "feature"
    pks = args([pk for pk, _ in q.members])
    return (f"WITH asof AS MATERIALIZED (SELECT * FROM (SELECT DISTINCT ON (h.collection_id, h.fid) h.change_id AS id, "
            f"h.change_id, h.collection_id, h.fid, h.op, h.geom, h.properties, h.valid_from, h.valid_to "
            f"FROM feature_change h WHERE h.collection_id = ANY({pks}::int[]) AND h.at <= {args(q.as_of)}::timestamptz "
            f"ORDER BY h.collection_id, h.fid, h.change_id DESC) AS latest WHERE op <> 'D') ", "asof")


def items_sql(q: ItemsQuery) -> tuple[str, list[Any]]:
    """One page of features as GeoJSON text rows, in a stable order (insertion order unless sorted).

    The page's ids are chosen first and the JSON built only for them: PostgreSQL would otherwise compute
    the output of every row OFFSET skips (1 s at offset 199,000 here, against milliseconds this way)."""
    args = Args()
    with_clause, table = source_of(args, q)
    scope, muni = scope_predicate(args, q.members)
    where = where_clause(args, q, scope, muni)
    page = (f"SELECT f.id, {muni} AS muni FROM {table} f {where} ORDER BY {order_by(q, muni)} "
            f"LIMIT {args(q.limit)} OFFSET {args(q.offset)}")
    sql = (f"{with_clause}SELECT {feature_json(args, q.regional, q.multi, q.output)} FROM ({page}) AS c "
           f"JOIN {table} f ON f.id = c.id ORDER BY {order_by(q, 'c.muni')}")
    return sql, args.values


def count_sql(q: ItemsQuery) -> tuple[str, list[Any]]:
    args = Args()
    with_clause, table = source_of(args, q)
    if q.filter is None:
        scope, _ = scope_predicate(args, q.members, with_muni=False)
        return f"{with_clause}SELECT count(*) FROM {table} f {where_clause(args, q, scope, '')}", args.values
    # A filter may name the municipality: select it, so its bound values are used whether the filter does or not.
    scope, muni = scope_predicate(args, q.members)
    where = where_clause(args, q, scope, muni)
    return f"{with_clause}SELECT count(*) FROM (SELECT {muni} AS muni FROM {table} f {where}) AS s", args.values


def item_sql(members: list[tuple[int, str]], regional: bool, multi: bool, fid: str,
             out: Output | None = None) -> tuple[str, list[Any]]:
    args = Args()
    scope, muni = scope_predicate(args, members)
    page = f"SELECT f.id, {muni} AS muni FROM feature f WHERE {scope} AND f.fid = {args(fid)}"
    return (f"SELECT {feature_json(args, regional, multi, out or Output())}, f.change_id, f.updated_at "
            f"FROM ({page}) AS c "
            "JOIN feature f ON f.id = c.id"), args.values
