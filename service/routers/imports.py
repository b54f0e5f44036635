"""File imports through the API: upload the file (as the body, or multipart/form-data), get a job to watch."""

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from service import jobs
from service.crs import resolve
from service.deps import JSON_ONLY, CollectionId, Scope
from service.errors import GeoTwinError, InvalidBody, InvalidParameter, NotFound
from service.params import check_known
from service.responses import base_url
from service.sources import FORMATS, ImportOptions, check_upload, text_encoding

JSON = "application/json"


# The import's options, as query parameters or (multipart) form fields.
OPTIONS = ("filename", "mode", "crs", "mapping", "layer", "id_field", "encoding")


def _options(given: dict[str, str | None], limit: int) -> tuple[str, ImportOptions]:
    """(the file's suffix, the import options) from what the request gave; a 400 naming what is wrong."""
    filename = given["filename"]
    if not filename:
        raise InvalidParameter("filename is required: the file's name, whose extension says its format (or send "
                               "the file as multipart/form-data)", parameter="filename")
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix not in FORMATS:
        raise InvalidParameter(f"filename must end in {', '.join(FORMATS)}", parameter="filename")
    mode = given["mode"] or "replace"
    if mode not in ("replace", "append"):
        raise InvalidParameter("mode must be replace or append", parameter="mode")
    try:
        fields = orjson.loads(given["mapping"]) if given["mapping"] else {}
    except orjson.JSONDecodeError:
        fields = None
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise InvalidParameter('mapping must be a JSON object like {"area_net_ha": "FLAECHE"}', parameter="mapping")
    text_encoding(given["encoding"])  # an unknown one is a 400 now, not a failed job later
    if given["crs"]:
        try:
            resolve(given["crs"])
        except ValueError as exc:  # as the job would fail later, on the CRS alone
            raise InvalidParameter(f"{exc}: give one such as EPSG:25832 or EPSG:25833", parameter="crs") from None
    return suffix, ImportOptions(mode=mode, crs=given["crs"], mapping=fields, layer=given["layer"],
                                 id_field=given["id_field"], encoding=given["encoding"], max_bytes=limit)


def build_imports_router(prefix: str, scope_dep: Callable[..., Awaitable[Scope]]) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["editing"])
    ScopeDep = Annotated[Scope, Depends(scope_dep)]

    @router.post("/collections/{collectionId}/imports", operation_id="municipality.startImport", status_code=202,
                 summary="Import a file into the collection: all or nothing",
                 description="The file is GeoJSON, GeoPackage, FlatGeobuf, a zipped Shapefile, CSV (WKT or x/y "
                             "columns) or XPlanGML (`.gml`, or an XPlanArchiv `.zip`: a development or land-use plan, "
                             "whose zones go into a collection of the planning-zone layer type); a zip holding one "
                             "GeoJSON, GeoPackage, FlatGeobuf or CSV file imports as that file. Send it as the "
                             "body, named by `filename`, or as the file part of a "
                             "multipart/form-data body (`curl -F file=@sites.gpkg`; its name is the part's file "
                             "name, and the options "
                             "may come as form fields too). Answers 202 with the job to follow (`Location`).\n\n"
                             "What the file's first bytes, a zip's directory and a GeoPackage's table of contents "
                             "tell is answered at once, as a 422 naming `file` (a file that is not what its name "
                             "says, a cut-off or damaged GeoPackage, a zip that escapes or explodes, a Shapefile "
                             "without its .shx or .dbf) or a 400 naming `layer`; what only reading every feature "
                             "shows is in the job: its `error` and `report`.",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                     "multipart/form-data": {"schema": {
                         "type": "object", "required": ["file"],
                         "properties": {"file": {"type": "string", "format": "binary"},
                                        **{name: {"type": "string"} for name in OPTIONS}}}}}}},
                 response_class=Response)
    async def start_import(
        request: Request, scope: ScopeDep, collection_id: CollectionId,
        filename: Annotated[str | None, Query(
            description="the file's name; its extension says its format (multipart: the file part's name)")] = None,
        mode: Annotated[str | None, Query(description="replace (default) or append")] = None,
        crs: Annotated[str | None, Query(description="source CRS when the file does not say")] = None,
        mapping: Annotated[str | None, Query(description='JSON: {"property": "source field"}')] = None,
        layer: Annotated[str | None, Query(description="layer of a multi-layer file")] = None,
        id_field: Annotated[str | None, Query(description="source field with the feature ids")] = None,
        encoding: Annotated[str | None, Query(
            description="the text encoding of a CSV or GeoJSON file that is not UTF-8, or of a Shapefile without "
                        ".cpg: cp1252 (Excel, Windows), iso-8859-1, utf-16 …")] = None,
    ) -> Response:
        c = scope.collection(collection_id)
        check_known(request.query_params, set(OPTIONS))  # `mod=append` would replace every feature
        given = {"filename": filename, "mode": mode, "crs": crs, "mapping": mapping, "layer": layer,
                 "id_field": id_field, "encoding": encoding}
        limit = request.app.state.settings.imports.max_upload_mb * 1024 * 1024
        timeout = request.app.state.settings.api.body_timeout_s
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "multipart/form-data":
            suffix, options = _options(given, limit)  # refused before the body is read
            path = await jobs.save_upload(request.stream(), suffix, limit, timeout, given["filename"])
        else:
            received, sent_name, form = await jobs.save_multipart_upload(request.stream(), content_type, limit,
                                                                         timeout)
            try:
                if "file" in form:
                    raise InvalidBody("the form field file holds text, not a file: send the file itself "
                                      "(curl -F file=@sites.gpkg, with the @)", parameter="file")
                unknown = sorted(set(form) - set(OPTIONS))
                if unknown:
                    raise InvalidParameter(f"unknown form field {unknown[0][:40]!r}: the options are "
                                           f"{', '.join(OPTIONS)}", parameter=unknown[0][:40])
                given = {k: v if v is not None else form.get(k) for k, v in given.items()}
                given["filename"] = given["filename"] or sent_name
                suffix, options = _options(given, limit)
                path = received.rename(received.parent / jobs.upload_name(given["filename"], suffix))
            except BaseException:
                shutil.rmtree(received.parent, ignore_errors=True)
                raise
        if path.stat().st_size == 0:  # said now, not by a job that fails at once
            shutil.rmtree(path.parent, ignore_errors=True)
            raise InvalidBody("the file is empty", parameter="file")
        try:  # said now too: a GeoPackage named .zip, a cut-off GeoPackage, a zip bomb, a Shapefile without .dbf
            await asyncio.to_thread(check_upload, path, options)
        except GeoTwinError:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        subject = scope.principal.subject if scope.principal else ""
        job = await jobs.start(request.app, c.members[0][0], c.layer_type, path, given["filename"], options, subject)
        url = f"{base_url(request)}{scope.dataset.path}/collections/{c.id}/imports/{job}"
        return Response(orjson.dumps({"id": job, "status": "queued", "links": [{"href": url, "rel": "monitor"}]}),
                        status_code=202, media_type=JSON, headers={"Location": url})

    @router.get("/collections/{collectionId}/imports/{jobId}", operation_id="municipality.getImport",
                summary="An import job: status, progress, and the report of every rejected feature",
                response_class=Response, dependencies=JSON_ONLY)
    async def import_status(request: Request, scope: ScopeDep, collection_id: CollectionId,
                            job_id: Annotated[str, Path(alias="jobId")]) -> Response:
        check_known(request.query_params, {"f"})
        c = scope.collection(collection_id)
        doc = await jobs.read(scope.pool, job_id[:32], c.members[0][0])
        if doc is None:
            raise NotFound(f"no import {job_id!r} for {c.id!r}", parameter="jobId")
        return Response(orjson.dumps(doc), media_type=JSON, headers={"Cache-Control": "no-store"})

    return router
