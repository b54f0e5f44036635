"""Planning analyses in PostGIS: where commercial sites collide with protected zones.

Areas and distances are computed in each site's official CRS (its municipality's: EPSG:25832 or 25833), not
in the storage CRS: a Leipzig site measured in UTM zone 32 would be ~0.35 % too large, which is more than
0.01 ha on a 4 ha site. The storage CRS only serves the index search (with a margin for that scale).
"""

from __future__ import annotations

from typing import Any

from service.models import STORAGE_SRID
from service.sql.features import Args, scope_predicate

# UTM 32 overstates distances east of its zone by at most ~0.2 % here; search a little wider, decide exactly.
SEARCH_SLACK = 1.01
# Features with their municipality, whose official CRS measures them.
WITH_MUNICIPALITY = ("FROM feature f JOIN collection c ON c.id = f.collection_id "
                     "JOIN municipality m ON m.id = c.municipality_id")


def conflicts_sql(sites: list[tuple[int, str]], zones: list[tuple[int, str]], categories: list[str] | None,
                  buffers: dict[str, float], default_buffer: float, site_filter: Any | None) -> tuple[str, list[Any]]:
    args = Args()
    s_scope, s_muni = scope_predicate(args, sites)
    z_scope, z_muni = scope_predicate(args, zones)
    if site_filter is not None:
        s_scope += " AND " + site_filter.sql(args, s_muni)
    if categories:
        z_scope += f" AND f.properties ->> 'category' = ANY({args(categories)}::text[])"
    buffer = (f"COALESCE(({args(buffers)}::jsonb ->> (f.properties ->> 'category'))::float8, "
              f"{args(default_buffer)}::float8)")
    max_buffer = max([default_buffer, *buffers.values()])
    # The zones are searched per site through the spatial index (collection_id, geom): a materialised zone
    # list would be scanned whole for every site.
    zone = (f"SELECT f.fid, {z_muni} AS muni, f.geom, f.properties ->> 'category' AS category, "
            f"f.properties ->> 'name' AS name, {buffer} AS buffer FROM feature f WHERE {z_scope}")
    # A site's overlap is the union of its intersections with each zone (small pieces), the same area as its
    # intersection with the union of those zones, whose ~1,000-vertex outlines made that union the costliest
    # step (1,034 benchmark sites: 5.97 s -> 4.83 s, same figures). Nearby zones are found by their boxes and
    # measured once, in the official CRS: a distance test in the storage CRS first measured each one twice
    # (-10 %, same figures).
    sql = f"""
WITH s AS MATERIALIZED (
  SELECT f.fid, {s_muni} AS muni, f.geom, f.properties ->> 'name' AS name, m.crs
  {WITH_MUNICIPALITY} WHERE {s_scope}
)
SELECT s.muni, s.fid, s.name, s.crs,
       ST_Area(ST_Transform(s.geom, s.crs)) / 10000 AS area_ha,
       COALESCE(c.conflict_ha, 0) AS conflict_ha, c.conflicts, n.nearby,
       ST_AsGeoJSON(ST_Transform(s.geom, 4326), 7) AS geometry,
       ST_AsGeoJSON(ST_Transform(c.overlap, 4326), 7) AS overlap
FROM s
LEFT JOIN LATERAL (
  SELECT json_agg(json_build_object(
           'id', z.muni || ':' || z.fid, 'category', z.category, 'name', z.name,
           'overlapHa', ST_Area(ST_Transform(z.part, s.crs)) / 10000)
           ORDER BY z.category, z.fid) AS conflicts,
         ST_Area(ST_Transform(ST_Union(z.part), s.crs)) / 10000 AS conflict_ha,
         ST_Union(z.part) AS overlap
  FROM (SELECT z.*, ST_Intersection(s.geom, z.geom) AS part
        FROM ({zone} AND ST_Intersects(f.geom, s.geom)) z) z
) c ON true
LEFT JOIN LATERAL (
  SELECT json_agg(json_build_object('id', q.muni || ':' || q.fid, 'category', q.category, 'name', q.name,
                                    'distanceM', q.d, 'bufferM', q.buffer) ORDER BY q.d) AS nearby
  FROM (SELECT z.*, ST_Distance(ST_Transform(s.geom, s.crs), ST_Transform(z.geom, s.crs)) AS d
        FROM ({zone} AND f.geom && ST_Expand(s.geom, {args(max_buffer)}::float8 * {SEARCH_SLACK})) z
        WHERE NOT ST_Intersects(s.geom, z.geom)) q
  WHERE q.d <= q.buffer
) n ON true
ORDER BY s.muni, s.fid
"""
    return sql, args.values


def site_statistics_sql(sites: list[tuple[int, str]], dimension: str) -> tuple[str, list[Any]]:
    """Count and area (ha, in each municipality's official CRS) of commercial sites per value of `dimension`
    (a property), per municipality and for all of them (municipality NULL)."""
    args = Args()
    scope, muni = scope_predicate(args, sites)
    return (f"SELECT {muni} AS municipality, f.properties ->> {args(dimension)} AS value, count(*) AS count, "
            "sum(ST_Area(ST_Transform(f.geom, m.crs))) / 10000 AS area_ha "
            f"{WITH_MUNICIPALITY} WHERE {scope} GROUP BY GROUPING SETS ((1, 2), (2)) "
            "ORDER BY 1 NULLS LAST, 2 NULLS LAST"), args.values


def protection_statistics_sql(zones: list[tuple[int, str]]) -> tuple[str, list[Any]]:
    """Protected area per category and municipality: overlapping zones of one category count once."""
    args = Args()
    scope, muni = scope_predicate(args, zones)
    return (f"SELECT {muni} AS municipality, f.properties ->> 'category' AS category, count(*) AS count, "
            "ST_Area(ST_Transform(ST_Union(f.geom), min(m.crs))) / 10000 AS area_ha "
            f"{WITH_MUNICIPALITY} WHERE {scope} GROUP BY 1, 2 ORDER BY 1, 2"), args.values


def site_search_sql(sites: list[tuple[int, str]], *, min_area_ha: float | None, net_after: list[tuple[int, str]] | None,
                    zoning: list[str] | None, servicing: list[str] | None, availability: list[str] | None,
                    near: tuple[bytes, float] | None, rank: str, descending: bool, limit: int,
                    offset: int) -> tuple[str, list[Any]]:
    """Sites meeting the criteria, ranked, one page (plus the total in every row).

    `near` is (WKB of a geometry in the storage CRS, km): distance measured in the site's official CRS.
    `net_after` (zone collections): the usable area is the net area minus the share covered by those zones.
    """
    args = Args()
    scope, muni = scope_predicate(args, sites)
    where = [scope]
    for name, values in (("zoning", zoning), ("servicing", servicing), ("availability", availability)):
        if values:
            where.append(f"f.properties ->> '{name}' = ANY({args(values)}::text[])")
    target = distance = "NULL::float8"
    if near is not None:
        wkb, km = near
        target = f"ST_GeomFromWKB({args(wkb)}::bytea, {STORAGE_SRID})"
        where.append(f"ST_DWithin(f.geom, {target}, {args(km * 1000 * SEARCH_SLACK)}::float8)")
        distance = f"ST_Distance(ST_Transform(f.geom, m.crs), ST_Transform({target}, m.crs)) / 1000"
    net = "geotwin_num(f.properties -> 'area_net_ha')"
    usable = net
    conflict_join = ""
    if net_after is not None:
        z_scope, _ = scope_predicate(args, net_after, with_muni=False)
        conflict_join = (f"LEFT JOIN LATERAL (SELECT ST_Area(ST_Transform(ST_Intersection(f.geom, ST_Union(f2.geom)), "
                         f"m.crs)) / NULLIF(ST_Area(ST_Transform(f.geom, m.crs)), 0) AS share FROM feature f2 "
                         f"WHERE {z_scope.replace('f.', 'f2.')} AND ST_Intersects(f2.geom, f.geom)) cz ON true")
        usable = f"({net} * (1 - COALESCE(cz.share, 0)))"
    inner = (f"SELECT {muni} AS muni, f.fid, f.properties, {net} AS net_ha, {usable} AS usable_ha, "
             f"{distance} AS distance_km FROM feature f JOIN collection c ON c.id = f.collection_id "
             f"JOIN municipality m ON m.id = c.municipality_id {conflict_join} WHERE {' AND '.join(where)}")
    conditions = []
    if min_area_ha is not None:
        conditions.append(f"usable_ha >= {args(min_area_ha)}::float8")
    if near is not None:
        conditions.append(f"distance_km <= {args(near[1])}::float8")
    order_column = {"area": "usable_ha", "distance": "distance_km",
                    "price": "geotwin_num(properties -> 'price_eur_m2')"}[rank]
    direction = "DESC" if descending else "ASC"
    sql = (f"SELECT *, count(*) OVER () AS total FROM ({inner}) s "
           f"{'WHERE ' + ' AND '.join(conditions) if conditions else ''} "
           f"ORDER BY {order_column} {direction} NULLS LAST, muni, fid LIMIT {args(limit)} OFFSET {args(offset)}")
    return sql, args.values
