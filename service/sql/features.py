"""Items and item queries. Feature JSON is assembled in PostGIS; Python only joins the rows.

Geometry leaves the storage CRS through ST_Transform to 4326 and is written x = longitude, which is the
OGC CRS84 axis order GeoJSON requires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from service.models import STORAGE_SRID

# A CRS84 bbox is a rectangle in longitude/latitude; its edges bend in UTM, so the envelope is densified
# (every 0.001°, about 70 m) before it is transformed: the test is then the exact rectangle, not its corners.
BBOX_GEOM = (
    "(SELECT ST_Transform(ST_Segmentize(ST_MakeEnvelope({0}, {1}, {2}, {3}, 4326), 0.001), "
    f"{STORAGE_SRID}))"
)


@dataclass
class ItemsQuery:
    """What an items request selects. Values are bound; property names are checked against the layer type."""

    members: list[tuple[int, str]]
    regional: bool
    multi: bool = False
    bbox: tuple[float, float, float, float] | None = None
    interval: tuple[date | None, date | None] | None = None
    equals: dict[str, Any] = field(default_factory=dict)
    text_equals: dict[str, str] = field(default_factory=dict)
    limit: int = 100
    offset: int = 0


class Args:
    """Collects bound values and hands out their `$n` placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _feature_json(regional: bool, multi: bool) -> str:
    geom = "ST_Multi(f.geom)" if multi else "f.geom"
    fid = "(c.muni || ':' || f.fid)" if regional else "f.fid"
    props = "(f.properties || jsonb_build_object('municipality', c.muni))" if regional else "f.properties"
    return (
        "'{\"type\":\"Feature\",\"id\":' || to_json(" + fid + ")::text"
        " || ',\"geometry\":' || ST_AsGeoJSON(ST_Transform(" + geom + ", 4326), 7)"
        " || ',\"properties\":' || " + props + "::text || '}'"
    )


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


def _where(args: Args, q: ItemsQuery, scope: str) -> str:
    clauses = [scope]
    if q.bbox:
        box = BBOX_GEOM.format(*(args(v) + "::float8" for v in q.bbox))
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
    return "WHERE " + " AND ".join(clauses)


def items_sql(q: ItemsQuery) -> tuple[str, list[Any]]:
    """One page of features as GeoJSON text rows, in a stable order (insertion order).

    The page's ids are chosen first and the JSON built only for them: PostgreSQL would otherwise compute
    the output of every row OFFSET skips (1 s at offset 199,000 here, against milliseconds this way)."""
    args = Args()
    scope, muni = scope_predicate(args, q.members)
    where = _where(args, q, scope)
    page = (f"SELECT f.id, {muni} AS muni FROM feature f {where} ORDER BY f.id "
            f"LIMIT {args(q.limit)} OFFSET {args(q.offset)}")
    sql = (f"SELECT {_feature_json(q.regional, q.multi)} FROM ({page}) AS c "
           "JOIN feature f ON f.id = c.id ORDER BY f.id")
    return sql, args.values


def count_sql(q: ItemsQuery) -> tuple[str, list[Any]]:
    args = Args()
    scope, _ = scope_predicate(args, q.members, with_muni=False)
    return f"SELECT count(*) FROM feature f {_where(args, q, scope)}", args.values


def item_sql(members: list[tuple[int, str]], regional: bool, multi: bool, fid: str) -> tuple[str, list[Any]]:
    args = Args()
    scope, muni = scope_predicate(args, members)
    return (f"SELECT {_feature_json(regional, multi)} FROM (SELECT f.id, {muni} AS muni FROM feature f "
            f"WHERE {scope} AND f.fid = {args(fid)}) AS c JOIN feature f ON f.id = c.id"), args.values

