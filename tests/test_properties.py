"""Property-based tests (hypothesis) for the parsers that meet untrusted text: bbox and CRS parameters, the
CQL2 → SQL translation, and geometry validation. Each must either refuse with a 400/422 naming what, or
give a result that holds its promise; none may raise anything else."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import cql, queryables
from service.catalog import Collection
from service.crs import CRS84, CrsList
from service.errors import InvalidParameter
from service.layertypes import registry
from service.loader import prepare
from service.sql.features import Args

OFFERED = CrsList.from_names(["EPSG:4326", "EPSG:3857", "EPSG:25832", "EPSG:25833"])
SITES = Collection("commercial-sites", "Sites", "", registry()["commercial-site"], "", "", [], "public", None, None,
                   [(1, "halle")], "1", 0, None, None)
QUERYABLES = queryables.build(SITES)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**12, 10**12)


@FAST
@given(st.text(max_size=60) | st.lists(numbers, min_size=3, max_size=7).map(lambda v: ",".join(map(str, v))),
       st.sampled_from([None, *OFFERED.items]))
def test_a_bbox_is_refused_by_name_or_ordered_and_finite(raw, crs):
    from service.params import parse_bbox

    try:
        box = parse_bbox(raw, crs)
    except InvalidParameter as exc:
        assert exc.where["parameter"] == "bbox"
        return
    x1, y1, x2, y2 = box
    assert all(math.isfinite(v) for v in box) and x1 <= x2 and y1 <= y2


@settings(max_examples=40, deadline=None)  # each unknown text costs pyproj a database search (~0.2 s)
@given(st.text(max_size=80) | st.sampled_from(["EPSG:25832", "http://www.opengis.net/def/crs/EPSG/0/4326",
                                               "[EPSG:25833]", "EPSG:2056", "OGC:CRS84"]))
def test_a_crs_parameter_is_offered_or_refused_by_name(raw):
    from service.params import parse_crs

    try:
        crs = parse_crs(raw, OFFERED, "crs")
    except InvalidParameter as exc:
        assert exc.where["parameter"] == "crs"
        return
    assert crs is None or crs in OFFERED.items


def cql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@FAST
@given(st.text(max_size=40), st.sampled_from(["=", "<>", "<", ">=", "LIKE"]),
       st.sampled_from(["name", "zoning", "availability", "id"]))
def test_string_literals_travel_as_bound_values_never_as_sql(value, op, prop):
    try:
        flt = cql.parse(f"{prop} {op} {cql_string(value)}", "cql2-text", OFFERED.find(CRS84), QUERYABLES)
    except InvalidParameter as exc:
        assert exc.where["parameter"] in ("filter",)
        return
    args = Args()
    sql = flt.sql(args, "c.muni")
    assert value in args.values
    assert "'" not in sql.replace("''", "").replace("'name'", "").replace(f"'{prop}'", "") or prop == "id"


@FAST
@given(numbers, st.sampled_from(["=", "<", ">", "<=", ">=", "<>"]), st.sampled_from(["area_net_ha",
                                                                                     "area_gross_ha"]))
def test_numeric_comparisons_bind_their_number(value, op, prop):
    try:
        flt = cql.parse(f"{prop} {op} {value}", "cql2-text", OFFERED.find(CRS84), QUERYABLES)
    except InvalidParameter as exc:
        assert exc.where["parameter"] == "filter"
        return
    args = Args()
    flt.sql(args, "c.muni")
    assert any(isinstance(v, int | float) and (v == value or (math.isnan(v) and math.isnan(value)))
               for v in args.values)


@FAST
@given(st.recursive(st.text(max_size=12) | numbers | st.booleans() | st.none(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4), max_leaves=20))
def test_cql2_json_of_any_shape_is_refused_by_name_or_translated(tree):
    import orjson

    try:
        raw = orjson.dumps(tree).decode()
    except (TypeError, orjson.JSONEncodeError):
        return
    try:
        flt = cql.parse(raw, "cql2-json", OFFERED.find(CRS84), QUERYABLES)
    except InvalidParameter as exc:
        assert exc.where["parameter"] == "filter"
        return
    flt.sql(Args(), "c.muni")


coordinate = st.floats(min_value=-200, max_value=200) | st.sampled_from([math.nan, math.inf, -math.inf])


@FAST
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@given(st.lists(st.tuples(coordinate, coordinate), min_size=0, max_size=12))
def test_geometry_validation_accepts_only_valid_finite_polygons(ring):
    coords = [list(p) for p in ring] + ([list(ring[0])] if ring else [])
    feature = {"type": "Feature", "id": "p1", "geometry": {"type": "Polygon", "coordinates": [coords]},
               "properties": {"name": "x", "area_gross_ha": 1, "zoning": "GE", "availability": "verfuegbar",
                              "servicing": "erschlossen"}}
    rows, issues = prepare([feature], registry()["commercial-site"])
    if issues:
        assert all(i.property in ("geometry", "id") and i.message for i in issues)
        return
    (row,) = rows
    geom = shapely.from_wkb(row[1]) if isinstance(row[1], bytes) else row[1]
    assert geom.is_valid and not geom.is_empty
    assert all(math.isfinite(c) for c in shapely.get_coordinates(geom).ravel())


KINDS = st.sampled_from([None, "string", "number", "integer", "boolean", "date"])
COLUMNS = (st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.none(), max_size=20).map(
               lambda v: pa.array(v, pa.float64()))
           | st.lists(st.integers(-10**12, 10**12) | st.none(), max_size=20).map(lambda v: pa.array(v, pa.int64()))
           | st.lists(st.booleans() | st.none(), max_size=20).map(lambda v: pa.array(v, pa.bool_()))
           | st.lists(st.text(max_size=8) | st.sampled_from([" 1.5 ", "ja", "0", "", "  "]) | st.none(),
                      max_size=20).map(lambda v: pa.array(v, pa.string())))


@FAST
@given(COLUMNS, KINDS)
def test_import_columns_convert_as_value_by_value(array, kind):
    """The importer converts whole Arrow columns at once; it must give exactly what the value-by-value rules
    give, whatever the column's type and the property's kind."""
    from service.importcheck import _column, _value

    column = pa.chunked_array([array])
    expected = [_value(v, kind) for v in column.to_pylist()]
    got = _column(column, kind)
    assert [(type(v), v) if v == v else "nan" for v in got] == [
        (type(v), v) if v == v else "nan" for v in expected]
