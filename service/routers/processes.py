"""Planning tools as OGC API – Processes: the conflict analysis between commercial sites and protected zones.

Why Processes rather than ad-hoc endpoints: the inputs (which sites, which constraint layers, buffers per
category) and outputs are described machine-readably at `/processes/{id}`, clients such as QGIS plugins and
pygeoapi-style tooling know the execute pattern, and long runs can become asynchronous jobs without new URLs.
Execution reads only what the caller may see and writes nothing, so anyone may run it.
"""

import csv
import io
import re
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import unquote

import orjson
import shapely
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pyproj import Transformer

from service import cql, processjobs, queryables
from service.bodies import json_body
from service.catalog import Collection
from service.crs import CRS84
from service.db import connection
from service.deps import JSON_ONLY, current_catalog, principal_of, visible_dataset
from service.errors import InvalidParameter, NotFound, json_kind
from service.layertypes import registry
from service.models import STORAGE_SRID
from service.params import check_known, parse_int
from service.processdocs import EXECUTE_MEMBERS, GEOJSON, JSON, PROCESSES, RESPONSE_TYPES, format_asked, response_asked
from service.responses import base_url, html_response, link
from service.sql.analysis import conflicts_sql, protection_statistics_sql, site_search_sql, site_statistics_sql

router = APIRouter(tags=["processes"])
PATH = re.compile(r"^/(?:region|municipalities/(?P<m>[^/]+))/collections/(?P<c>[^/]+)$")
FEATURE_PATH = re.compile(r"^(?P<collection>/(?:region|municipalities/[^/]+)/collections/[^/]+)/items/(?P<id>[^/]+)$")
DIMENSIONS = ("availability", "zoning", "servicing")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# A result as the execute request's `response` asked for it: the results document, or the result as it is.
RESULT = {"200": {"description": "The result", "content": {
    JSON: {"schema": {"anyOf": [{"$ref": "#/components/schemas/Results"},
                                {"type": "object", "description": "`response: raw`: the process's own JSON"}]}},
    GEOJSON: {"schema": {"type": "object"}}, "text/csv": {"schema": {"type": "string"}}}}}


@router.get("/processes", summary="The planning tools (OGC API – Processes)", dependencies=JSON_ONLY)
async def processes(request: Request) -> Response:
    check_known(request.query_params, {"f"})
    base = base_url(request)
    listed = []
    for pid, doc in PROCESSES.items():
        summary = {k: doc[k] for k in ("id", "version", "title", "description", "jobControlOptions",
                                       "outputTransmission")}
        summary["links"] = [link(f"{base}/processes/{pid}", "self", JSON, doc["title"])]
        listed.append(summary)
    return Response(orjson.dumps({"processes": listed, "links": [link(f"{base}/processes", "self", JSON,
                                                                     "processes")]}), media_type=JSON)


@router.get("/processes/{process_id}", summary="A process description: inputs and outputs",
            dependencies=JSON_ONLY)
async def describe_process(request: Request, process_id: str) -> Response:
    check_known(request.query_params, {"f"})
    if process_id not in PROCESSES:
        raise NotFound(f"no process {process_id!r}; known: {', '.join(PROCESSES)}", parameter="processId")
    doc = {**PROCESSES[process_id], "links": [link(f"{base_url(request)}/processes/{process_id}/execution",
                                                   "http://www.opengis.net/def/rel/ogc/1.0/execute", JSON,
                                                   "execute")]}
    return Response(orjson.dumps(doc), media_type=JSON)


@router.post("/processes/{process_id}/execution", summary="Run a process (synchronously, or as a job)",
             description="Answers with the result as it is (`response: raw`, the default), or with OGC API – "
                         "Processes' results document (`response: document`: "
                         '`{"result": {"value": …, "mediaType": …}}`, a CSV result as a string). With `Prefer: '
                         "respond-async` the inputs are checked, a job is started and the answer is 201 with its "
                         "status (`Location: /jobs/{jobId}`); the job's results come as `response` asked.",
             openapi_extra={"responses": RESULT, "requestBody": {"required": True, "content": {JSON: {"schema": {
                 "type": "object", "properties": {
                     "inputs": {"type": "object"},
                     "outputs": {"type": "object", "description": "the result's format: "
                                 '{"result": {"format": {"mediaType": "text/csv"}}}, as f= chooses it'},
                     "response": {"type": "string", "enum": list(RESPONSE_TYPES), "default": "raw"}}}}}}})
async def execute(request: Request, process_id: str,
                  f: Annotated[str | None, Query(description="json (default) or geojson")] = None) -> Response:
    if process_id not in PROCESSES:
        raise NotFound(f"no process {process_id!r}; known: {', '.join(PROCESSES)}", parameter="processId")
    check_known(request.query_params, {"f"})
    body = await json_body(request, ("application/json",))
    if not isinstance(body, dict):
        raise InvalidParameter(f'the body is a JSON object such as {{"inputs": {{...}}}}, not {json_kind(body)}',
                               parameter="body")
    inputs = body.get("inputs", {})  # optional in OGC API – Processes' execute schema: no inputs, the defaults
    if not isinstance(inputs, dict):
        raise InvalidParameter('inputs is an object of the process\'s inputs by name, such as {"inputs": '
                               '{"sites": "/region/collections/commercial-sites"}}', parameter="inputs")
    if unknown := sorted(set(body) - EXECUTE_MEMBERS):
        raise InvalidParameter(f"unknown member {unknown[0][:40]!r} of the body; it takes "
                               f"{', '.join(sorted(EXECUTE_MEMBERS))}", parameter=unknown[0][:40])
    response = response_asked(body)
    spec = PROCESSES[process_id]
    f = format_asked(spec, body.get("outputs"), f)
    unknown = sorted(set(inputs) - set(spec["inputs"]))
    if unknown:
        raise InvalidParameter(f"unknown input {unknown[0]!r}; inputs: {', '.join(spec['inputs'])}",
                               parameter=unknown[0])
    compute = await PREPARE[process_id](request, inputs, f)  # every input checked: bad ones are a 400 now
    if _prefers_async(request):
        principal = principal_of(request)
        asked = {"inputs": inputs} | ({"f": f} if f else {}) | ({"response": response} if response != "raw" else {})
        job = await processjobs.start(request.app, process_id, principal.subject if principal else "", asked,
                                      compute)
        row = await processjobs.read(request.app.state.pool, job)
        base = base_url(request)
        return Response(orjson.dumps(processjobs.status_info(row, base)), status_code=201, media_type=JSON,
                        headers={"Location": f"{base}/jobs/{job}", "Preference-Applied": "respond-async"})
    return output_response(await compute(request.app.state.pool), response)


@router.get("/jobs", summary="Your asynchronous process runs, newest first", dependencies=JSON_ONLY)
async def jobs(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> Response:
    """Jobs started with your key or token. Jobs started without credentials are not listed: their id (from
    the `Location` of the 201) is the only way to them."""
    check_known(request.query_params, {"f", "limit", "offset"})
    # Read as the other routes read numbers (parse_int): FastAPI's own int takes "0.0" too.
    limit = min(parse_int(request.query_params.get("limit"), "limit", 100, 1), 1000)
    offset = parse_int(request.query_params.get("offset"), "offset", 0, 0)
    principal = principal_of(request)
    base = base_url(request)
    rows = await processjobs.listing(request.app.state.pool, principal.subject, limit, offset) if principal else []
    listed = [processjobs.status_info(r, base) for r in rows]
    links = [link(f"{base}/jobs?limit={limit}&offset={offset}", "self", JSON, "jobs")]
    if len(rows) == limit:
        links.append(link(f"{base}/jobs?limit={limit}&offset={offset + limit}", "next", JSON, "next page"))
    return Response(orjson.dumps({"jobs": listed, "links": links}), media_type=JSON)


async def _job(request: Request, job_id: str) -> dict[str, Any]:
    """The job, if the caller started it (or nobody with credentials did); otherwise 404 as if it did not exist."""
    row = await processjobs.read(request.app.state.pool, job_id) if JOB_ID.match(job_id) else None
    principal = principal_of(request)
    if row is None or (row["owner"] and (principal is None or principal.subject != row["owner"])):
        raise NotFound(f"no job {job_id!r}", parameter="jobId",
                       type="http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/no-such-job")
    return row


@router.get("/jobs/{job_id}", summary="Status of an asynchronous process run", dependencies=JSON_ONLY)
async def job_status(request: Request, job_id: str) -> Response:
    check_known(request.query_params, {"f"})
    row = await _job(request, job_id)
    return Response(orjson.dumps(processjobs.status_info(row, base_url(request))), media_type=JSON)


@router.get("/jobs/{job_id}/results", summary="Result of a finished process run (the synchronous answer's body)",
            openapi_extra={"responses": RESULT})
async def job_results(request: Request, job_id: str) -> Response:
    check_known(request.query_params, set())  # the result comes in the format its execution chose
    row = await _job(request, job_id)
    status = row["shown_status"]
    if status == "successful":
        out = await processjobs.result(request.app.state.pool, job_id)
        if out is not None:
            return output_response(out, processjobs.asked(row).get("response", "raw"))
    if status == "failed":
        info = processjobs.status_info(row, base_url(request))
        code = row["error_status"] if row["status"] == "failed" and row["error_status"] else 503
        return Response(orjson.dumps({"code": "JobFailed", "description": info["message"], "jobID": job_id,
                                      "type": "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
                                              "job-failed"}),
                        status_code=code, media_type=JSON, headers={"Retry-After": "5"} if code == 503 else None)
    raise NotFound(f"job {job_id} is {status}: no results" + (" yet" if status in ("accepted", "running") else ""),
                   parameter="jobId", status=status,
                   type="http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/result-not-ready")


@router.delete("/jobs/{job_id}", summary="Dismiss a process run: stop it if it runs, drop its results")
async def dismiss_job(request: Request, job_id: str) -> Response:
    check_known(request.query_params, set())
    await _job(request, job_id)
    await processjobs.dismiss(request.app.state.pool, job_id)
    row = await _job(request, job_id)
    return Response(orjson.dumps(processjobs.status_info(row, base_url(request))), media_type=JSON)


def _prefers_async(request: Request) -> bool:
    prefer = ",".join(request.headers.getlist("prefer")).lower()
    return any(p.strip().split(";")[0].strip() == "respond-async" for p in prefer.split(","))


def output_response(out: processjobs.Output, response: str = "raw") -> Response:
    """The result as it is (`raw`), or in the results document (`document`): a JSON result as the value itself,
    a text one (CSV) as a string, without the byte-order mark that is there for spreadsheets."""
    if response == "document":
        media = out.media_type.split(";")[0].strip()
        value = orjson.Fragment(out.body) if media in (JSON, GEOJSON) else out.body.decode().removeprefix("\ufeff")
        return Response(orjson.dumps({"result": {"value": value, "mediaType": media}}), media_type=JSON)
    headers = dict(out.headers)
    if out.filename:
        headers["Content-Disposition"] = f'attachment; filename="{out.filename}"'
    return Response(out.body, media_type=out.media_type, headers=headers)


async def _prepare_conflicts(request: Request, inputs: dict[str, Any], f: str | None) -> processjobs.Compute:
    fmt = f or ("geojson" if GEOJSON in request.headers.get("accept", "") else "json")
    if fmt not in ("json", "geojson", "csv"):
        raise InvalidParameter("f must be json, geojson or csv", parameter="f")
    query = await _conflicts_query(request, inputs)

    async def compute(pool: Any) -> processjobs.Output:
        rows, results = await _conflicts_run(pool, query)
        if fmt == "geojson":
            return processjobs.Output(orjson.dumps(_geojson(rows, results)), GEOJSON)
        if fmt == "csv":
            return processjobs.Output(_conflicts_csv(results).encode(), "text/csv; charset=utf-8", "conflicts.csv")
        return processjobs.Output(orjson.dumps({"process": "conflicts", "summary": _summary(results),
                                                "sites": results}), JSON)
    return compute


@router.get("/processes/statistics/chart", summary="The statistics as an HTML page with charts",
            response_class=Response)
async def statistics_chart(
    request: Request,
    municipalities: Annotated[str | None, Query(description="comma-separated slugs (default: all)")] = None,
) -> Response:
    check_known(request.query_params, {"municipalities"})
    wanted = [m.strip() for m in municipalities.split(",") if m.strip()] if municipalities else None
    sites, zones = await _statistics_members(request, wanted)
    stats = await statistics(request.app.state.pool, sites, zones)
    types = registry()  # the tables name codes with their labels: "vermarktet (sold or let) (vermarktet)"
    return html_response(request, "statistics.html", stats=stats, wanted=wanted,
                         charts=request.app.state.charts_available, site_type=types["commercial-site"],
                         zone_type=types["ecological-zone"])


@router.get("/processes/conflicts/map", summary="The conflict analysis as an HTML page with a map",
            response_class=Response)
async def conflicts_map(
    request: Request,
    sites: Annotated[str, Query(description="collection path")] = "/region/collections/commercial-sites",
    constraints: Annotated[str, Query(description="collection path")] = "/region/collections/ecological-zones",
    sites_filter: Annotated[str | None, Query(alias="sitesFilter")] = None,
    default_buffer: Annotated[float, Query(alias="defaultBuffer", ge=0, le=10_000, allow_inf_nan=False,
                                           description="metres (0–10,000)")] = 300,
) -> Response:
    check_known(request.query_params, {"sites", "constraints", "sitesFilter", "defaultBuffer"})
    inputs: dict[str, Any] = {"sites": sites, "constraints": constraints, "defaultBuffer": default_buffer}
    if sites_filter is not None:
        inputs["sitesFilter"] = sites_filter
    rows, results = await _conflicts_run(request.app.state.pool, await _conflicts_query(request, inputs))
    return html_response(request, "conflicts.html", data=_geojson(rows, results), results=results,
                         summary=_summary(results), inputs=inputs)


async def _conflicts_query(request: Request, inputs: dict[str, Any]) -> tuple[str, list[Any], bool]:
    """The conflict analysis's SQL for these inputs, every one of them checked."""
    sites = await _collection(request, inputs.get("sites"), "sites")
    zones = await _collection(request, inputs.get("constraints"), "constraints")
    if sites.layer_type.name != "commercial-site":
        raise InvalidParameter(f"sites must be a commercial-site collection, not {sites.layer_type.name}",
                               parameter="sites")
    if not zones.layer_type.multi_polygon:
        raise InvalidParameter("constraints must be a polygon collection", parameter="constraints")
    categories = inputs.get("categories")
    if categories is not None and (not isinstance(categories, list)
                                   or not all(isinstance(c, str) for c in categories)):
        raise InvalidParameter("categories is a list of category codes", parameter="categories")
    buffers = inputs.get("buffers") or {}
    if not isinstance(buffers, dict) or not all(_distance(v) for v in buffers.values()):
        raise InvalidParameter("buffers maps categories to metres (0–10,000)", parameter="buffers")
    default = inputs.get("defaultBuffer", 300)
    if not _distance(default):
        raise InvalidParameter("defaultBuffer is a distance in metres (0–10,000)", parameter="defaultBuffer")
    site_filter = None
    if inputs.get("sitesFilter") is not None:
        if not isinstance(inputs["sitesFilter"], str):
            raise InvalidParameter("sitesFilter is CQL2 text", parameter="sitesFilter")
        known = queryables.build(sites, await queryables.observed(request, request.app.state.pool, sites))
        try:
            site_filter = cql.parse(inputs["sitesFilter"], "cql2-text", request.app.state.crs.find(CRS84), known,
                                    request.app.state.settings.api.zone)
        except InvalidParameter as exc:
            exc.where["parameter"] = "sitesFilter"
            raise
    sql, args = conflicts_sql(sites.members, zones.members, categories, buffers, float(default), site_filter)
    return sql, args, sites.regional


async def _conflicts_run(pool: Any, query: tuple[str, list[Any], bool]) -> tuple[list[Any], list[dict[str, Any]]]:
    sql, args, regional = query
    async with connection(pool) as conn:
        rows = await conn.fetch(sql, *args)
    return rows, [_site(r, regional) for r in rows]


def _conflicts_csv(results: list[dict[str, Any]]) -> str:
    """One row per site; the zones as `category name (value)` lists, for a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["site", "name", "crs", "area_ha", "conflict_ha", "free_ha", "conflict_share", "conflicts",
                     "nearby"])
    for r in results:
        writer.writerow([r["id"], r["name"] or "", r["crs"], f"{r['areaHa']:.4f}", f"{r['conflictHa']:.4f}",
                         f"{r['freeHa']:.4f}", f"{r['conflictShare']:.4f}",
                         "; ".join(f"{c['category']} {c['name']} ({c['overlapHa']:.4f} ha)" for c in r["conflicts"]),
                         "; ".join(f"{n['category']} {n['name']} ({n['distanceM']:.0f} m)" for n in r["nearby"])])
    return "\ufeff" + out.getvalue()  # a BOM, so spreadsheet programs read UTF-8


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    # Sums to the square metre (0.0001 ha), as the CSV writes areas: 334.54999999989855 was float noise.
    return {"sites": len(results), "withConflicts": sum(1 for r in results if r["conflicts"]),
            **{key: round(sum(r[key] for r in results), 4) for key in ("areaHa", "conflictHa", "freeHa")}}


async def _prepare_statistics(request: Request, inputs: dict[str, Any], f: str | None) -> processjobs.Compute:
    fmt = f or "json"
    if fmt not in ("json", "csv"):
        raise InvalidParameter("f must be json or csv", parameter="f")
    sites, zones = await _statistics_members(request, inputs.get("municipalities"))

    async def compute(pool: Any) -> processjobs.Output:
        out = await statistics(pool, sites, zones)
        if fmt == "json":
            return processjobs.Output(orjson.dumps(out), JSON)
        return processjobs.Output(_statistics_csv(out).encode(), "text/csv; charset=utf-8", "statistics.csv")
    return compute


async def _statistics_members(request: Request, wanted: Any) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The regional sites' and zones' member collections, of the wanted municipalities (default: all)."""
    catalog = await current_catalog(request)
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(m, str) for m in wanted):
            raise InvalidParameter("municipalities is a list of slugs", parameter="municipalities")
        unknown = sorted(set(wanted) - set(catalog.datasets))
        if unknown:
            raise InvalidParameter(f"no municipality {unknown[0]!r}", parameter="municipalities")
    region = catalog.region.collections

    def members(cid: str) -> list[tuple[int, str]]:
        return [m for m in region[cid].members if wanted is None or m[1] in wanted] if cid in region else []
    return members("commercial-sites"), members("ecological-zones")


async def statistics(pool: Any, sites: list[tuple[int, str]], zones: list[tuple[int, str]]) -> dict[str, Any]:
    """Sites by each dimension and protected area by category, per municipality and for the region."""
    out: dict[str, Any] = {"sites": {}, "protection": []}
    async with connection(pool) as conn:
        for dimension in DIMENSIONS:
            rows = await _fetch(conn, site_statistics_sql(sites, dimension)) if sites else []
            out["sites"][dimension] = [{"municipality": r["municipality"] or "region", "value": r["value"],
                                        "count": r["count"], "areaHa": r["area_ha"]} for r in rows]
        rows = await _fetch(conn, protection_statistics_sql(zones)) if zones else []
        out["protection"] = [{"municipality": r["municipality"], "category": r["category"], "count": r["count"],
                              "areaHa": r["area_ha"]} for r in rows]
    return out


def _statistics_csv(out: dict[str, Any]) -> str:
    lines = ["table,municipality,value,count,area_ha"]
    for dimension, rows in out["sites"].items():
        lines += [f"sites by {dimension},{r['municipality']},{r['value'] or ''},{r['count']},{r['areaHa']:.4f}"
                  for r in rows]
    lines += [f"protected area,{r['municipality']},{r['category']},{r['count']},{r['areaHa']:.4f}"
              for r in out["protection"]]
    return "\n".join(lines) + "\n"


def _codes(inputs: dict[str, Any], name: str, allowed: list[str] | None) -> list[str] | None:
    values = inputs.get(name)
    if values is None:
        return None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values) or not values:
        raise InvalidParameter(f"{name} is a non-empty list of codes", parameter=name)
    bad = [v for v in values if allowed and v not in allowed]
    if bad:
        raise InvalidParameter(f"{name}: {bad[0]!r} is not one of {', '.join(allowed or [])}", parameter=name)
    return values


def _number(inputs: dict[str, Any], name: str, low: float, high: float, default: Any = None) -> Any:
    value = inputs.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidParameter(f"{name} is a number from {low:g} to {high:g}", parameter=name)
    return value


async def _near(request: Request, near: Any) -> tuple[bytes, float] | None:
    """(WKB in the storage CRS, km) of a point [lon, lat] or of a feature given by its path."""
    if near is None:
        return None
    if not isinstance(near, dict) or set(near) - {"point", "feature", "km"} or ("point" in near) == ("feature" in near):
        raise InvalidParameter('near is {"point": [lon, lat], "km": K} or {"feature": "<path>", "km": K}',
                               parameter="near")
    km = _number(near, "km", 0, 500)
    if km is None:
        raise InvalidParameter("near needs km", parameter="near")
    if "point" in near:
        point = near["point"]
        if (not isinstance(point, list) or len(point) != 2 or not all(isinstance(v, int | float) for v in point)
                or not (-180 <= point[0] <= 180 and -90 <= point[1] <= 90)):
            raise InvalidParameter("near.point is [longitude, latitude] in CRS84", parameter="near")
        x, y = _to_storage().transform(point[0], point[1])
        return shapely.to_wkb(shapely.Point(x, y)), float(km)
    match = FEATURE_PATH.match(near["feature"]) if isinstance(near["feature"], str) else None
    if match is None:
        raise InvalidParameter("near.feature is a feature path like /region/collections/x/items/id",
                               parameter="near")
    collection = await _collection(request, match["collection"], "near")
    fid = unquote(match["id"])  # as the feature's own links give it: percent-encoded
    members = collection.members
    if collection.regional:
        muni, _, fid = fid.partition(":")
        members = [m for m in members if m[1] == muni]
    async with connection(request.app.state.pool) as conn:
        wkb = await conn.fetchval("SELECT ST_AsBinary(geom) FROM feature WHERE collection_id = ANY($1::int[]) "
                                  "AND fid = $2", [pk for pk, _ in members], fid)
    if wkb is None:
        raise NotFound(f"near: no feature at {near['feature']}", parameter="near")
    return bytes(wkb), float(km)


@lru_cache(maxsize=1)
def _to_storage() -> Transformer:
    return Transformer.from_crs(4326, STORAGE_SRID, always_xy=True)


async def _prepare_site_search(request: Request, inputs: dict[str, Any], f: str | None) -> processjobs.Compute:
    if f not in (None, "json"):
        raise InvalidParameter("f must be json", parameter="f")
    sites = await _collection(request, inputs.get("sites", "/region/collections/commercial-sites"), "sites")
    if sites.layer_type.name != "commercial-site":
        raise InvalidParameter("sites must be a commercial-site collection", parameter="sites")
    enum = sites.layer_type.enum_values
    zones = None
    if inputs.get("netAfterConflicts") is not None:
        constraint = await _collection(request, inputs["netAfterConflicts"], "netAfterConflicts")
        zones = constraint.members
    rank = inputs.get("rankBy", "area")
    if rank not in ("area", "distance", "price"):
        raise InvalidParameter("rankBy is area, distance or price", parameter="rankBy")
    order = inputs.get("order", "desc" if rank == "area" else "asc")
    if order not in ("asc", "desc"):
        raise InvalidParameter("order is asc or desc", parameter="order")
    near = await _near(request, inputs.get("near"))
    if rank == "distance" and near is None:
        raise InvalidParameter("rankBy distance needs near", parameter="rankBy")
    limit = int(_number(inputs, "limit", 1, 1000, 100))
    offset = int(_number(inputs, "offset", 0, 10**9, 0))
    sql, args = site_search_sql(sites.members, min_area_ha=_number(inputs, "minAreaHa", 0, 10**6), net_after=zones,
                                zoning=_codes(inputs, "zoning", enum("zoning")),
                                servicing=_codes(inputs, "servicing", enum("servicing")),
                                availability=_codes(inputs, "availability", enum("availability")),
                                near=near, rank=rank, descending=order == "desc", limit=limit, offset=offset)
    base = base_url(request)

    async def compute(pool: Any) -> processjobs.Output:
        async with connection(pool) as conn:
            rows = await conn.fetch(sql, *args)
        found = []
        for r in rows:
            props = _json(r["properties"])
            found.append({"id": f"{r['muni']}:{r['fid']}" if sites.regional else r["fid"], "name": props.get("name"),
                          "netHa": r["net_ha"], "usableHa": r["usable_ha"], "distanceKm": r["distance_km"],
                          "properties": props})
        total = rows[0]["total"] if rows else (0 if offset == 0 else None)
        links = []
        if total is not None and offset + len(rows) < total:
            links.append({"rel": "next", "href": f"{base}/processes/site-search/execution", "type": JSON,
                          "title": "next page: the same inputs with offset", "offset": offset + limit})
        return processjobs.Output(orjson.dumps({"numberMatched": total, "numberReturned": len(found),
                                                "sites": found, "links": links}), JSON)
    return compute


async def _fetch(conn: Any, query: tuple[str, list[Any]]) -> list[Any]:
    sql, args = query
    return await conn.fetch(sql, *args)


def _distance(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 10_000


async def _collection(request: Request, path: Any, name: str) -> Collection:
    """A collection named by its path, as the caller may see it."""
    match = PATH.match(path) if isinstance(path, str) else None
    if match is None:
        raise InvalidParameter(f"{name} is a collection path like /region/collections/commercial-sites",
                               parameter=name)
    catalog = await current_catalog(request)
    if match["m"] is None:
        dataset = catalog.region
    else:
        dataset = visible_dataset(catalog, principal_of(request), match["m"])
    collection = dataset.collections.get(match["c"]) if dataset else None
    if collection is None:
        raise NotFound(f"{name}: no collection at {path}", parameter=name)
    return collection


def _site(row: Any, regional: bool) -> dict[str, Any]:
    area, conflict = row["area_ha"], min(row["conflict_ha"], row["area_ha"])
    conflicts = _json(row["conflicts"]) or []
    for c in conflicts:
        c["share"] = c["overlapHa"] / area if area else 0.0
    return {"id": f"{row['muni']}:{row['fid']}" if regional else row["fid"], "name": row["name"],
            "crs": f"EPSG:{row['crs']}", "areaHa": area, "conflictHa": conflict, "freeHa": area - conflict,
            "conflictShare": conflict / area if area else 0.0, "conflicts": conflicts,
            "nearby": _json(row["nearby"]) or []}


def _json(value: Any) -> Any:
    """json columns arrive decoded (the pool's codec); text ones need parsing."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _geojson(rows: list[Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    features = []
    for row, result in zip(rows, results, strict=True):
        features.append({"type": "Feature", "id": result["id"], "geometry": orjson.loads(row["geometry"]),
                         "properties": {"kind": "site", **result}})
        if row["overlap"]:
            features.append({"type": "Feature", "id": f"{result['id']}/overlap",
                             "geometry": orjson.loads(row["overlap"]),
                             "properties": {"kind": "overlap", "site": result["id"],
                                            "overlapHa": result["conflictHa"]}})
    return {"type": "FeatureCollection", "features": features}


PREPARE = {"conflicts": _prepare_conflicts, "statistics": _prepare_statistics, "site-search": _prepare_site_search}
