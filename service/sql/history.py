"""Reading the change log: one feature's versions, and a collection's changes in order (the change feed)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.crs import Crs
from service.sql.features import Args, Output, geometry_json

OPS = {"I": "insert", "U": "update", "D": "delete"}


def _feature(out: Output, multi: bool) -> str:
    """The logged state as a GeoJSON feature (text), or null for a deletion."""
    geometry = geometry_json(multi, out, alias="h")
    return ("CASE WHEN h.op = 'D' THEN NULL ELSE json_build_object('type', 'Feature', 'id', h.fid, "
            f"'geometry', ({geometry})::json, 'properties', h.properties)::text END")


def versions_sql(collection_pk: int, fid: str, multi: bool, crs: Crs | None) -> tuple[str, list[Any]]:
    args = Args()
    return (f"SELECT h.change_id, h.op, h.at, h.actor, {_feature(Output(crs=crs), multi)} AS feature "
            f"FROM feature_change h WHERE h.collection_id = {args(collection_pk)}::int AND h.fid = {args(fid)} "
            "ORDER BY h.change_id"), args.values


def changes_sql(collection_pk: int, after: int, since: datetime | None, limit: int, multi: bool,
                crs: Crs | None) -> tuple[str, list[Any]]:
    """Changes with ids above `after` (and at or after `since`), oldest first; one more than `limit` is asked
    for, to know whether another page follows."""
    args = Args()
    time = f" AND h.at >= {args(since)}::timestamptz" if since else ""
    return (f"SELECT h.change_id, h.op, h.fid, h.at, h.actor, {_feature(Output(crs=crs), multi)} AS feature "
            f"FROM feature_change h WHERE h.collection_id = {args(collection_pk)}::int "
            f"AND h.change_id > {args(after)}::bigint{time} ORDER BY h.change_id LIMIT {args(limit + 1)}"), args.values


LATEST = "SELECT max(change_id) FROM feature_change WHERE collection_id = $1"
MADE_AT = "SELECT at FROM feature_change WHERE collection_id = $1 AND change_id = $2"
# When a feature that is not there was deleted (none when it never existed, or the log was pruned past it).
# When a feature was deleted, and the slug of its municipality's collection (where a regional id's versions are).
DELETED_AT = ("SELECT h.at, c.slug FROM feature_change h JOIN collection c ON c.id = h.collection_id "
              "WHERE h.collection_id = $1 AND h.fid = $2 AND h.op = 'D' ORDER BY h.change_id DESC LIMIT 1")

# `geotwin history prune`: drop a collection's change log before `$2`, except each feature's state at that time
# (its latest change before it, unless that was its deletion), so `asOf` from `$2` on and a mirror starting from
# 0 still see every feature. Records how far back the log now reaches (a prune that removed nothing leaves the
# log, and so `history_from`, as it was); one statement, one transaction.
PRUNE = """
WITH doomed AS (
  DELETE FROM feature_change h USING (
    SELECT change_id FROM (
      SELECT change_id, op, row_number() OVER (PARTITION BY fid ORDER BY change_id DESC) AS newest
      FROM feature_change WHERE collection_id = $1 AND at < $2) v
    WHERE newest > 1 OR op = 'D') d
  WHERE h.change_id = d.change_id
  RETURNING h.change_id
), gone AS (
  SELECT count(*) AS n, coalesce(max(change_id), 0) AS through FROM doomed
)
UPDATE collection c SET history_from = CASE WHEN gone.n > 0 THEN greatest(c.history_from, $2::timestamptz)
                                           ELSE c.history_from END,
  history_pruned_through = greatest(c.history_pruned_through, gone.through)
FROM gone WHERE c.id = $1
RETURNING gone.n
"""
