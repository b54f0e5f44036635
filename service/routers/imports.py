"""File imports through the API: upload the file as the request body, get a job to watch."""

from collections.abc import Awaitable, Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from service import jobs
from service.deps import CollectionId, Scope
from service.errors import InvalidParameter, NotFound
from service.importer import FORMATS, ImportOptions, text_encoding
from service.responses import base_url

JSON = "application/json"


def build_imports_router(prefix: str, scope_dep: Callable[..., Awaitable[Scope]]) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["editing"])
    ScopeDep = Annotated[Scope, Depends(scope_dep)]

    @router.post("/collections/{collectionId}/imports", operation_id="municipality.startImport", status_code=202,
                 summary="Import a file (the request body) into the collection: all or nothing",
                 description="The body is the file: GeoJSON, GeoPackage, a zipped Shapefile or CSV (WKT or x/y "
                             "columns), named by `filename`. Answers 202 with the job to follow (`Location`).",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
                 response_class=Response)
    async def start_import(
        request: Request, scope: ScopeDep, collection_id: CollectionId,
        filename: Annotated[str, Query(description="the file's name; its extension says its format")],
        mode: Annotated[str, Query(description="replace (default) or append")] = "replace",
        crs: Annotated[str | None, Query(description="source CRS when the file does not say")] = None,
        mapping: Annotated[str | None, Query(description='JSON: {"property": "source field"}')] = None,
        layer: Annotated[str | None, Query(description="layer of a multi-layer file")] = None,
        id_field: Annotated[str | None, Query(description="source field with the feature ids")] = None,
        encoding: Annotated[str | None, Query(
            description="the text encoding of a CSV or GeoJSON file that is not UTF-8, or of a Shapefile without "
                        ".cpg: cp1252 (Excel, Windows), iso-8859-1, utf-16 …")] = None,
    ) -> Response:
        c = scope.collection(collection_id)
        suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if suffix not in FORMATS:
            raise InvalidParameter(f"filename must end in {', '.join(FORMATS)}", parameter="filename")
        if mode not in ("replace", "append"):
            raise InvalidParameter("mode must be replace or append", parameter="mode")
        try:
            fields = orjson.loads(mapping) if mapping else {}
        except orjson.JSONDecodeError:
            fields = None
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise InvalidParameter('mapping must be a JSON object like {"area_net_ha": "FLAECHE"}',
                                   parameter="mapping")
        text_encoding(encoding)  # an unknown one is a 400 now, not a failed job later
        settings = request.app.state.settings.imports
        limit = settings.max_upload_mb * 1024 * 1024
        path = await jobs.save_upload(request.stream(), suffix, limit,
                                      request.app.state.settings.api.body_timeout_s, filename)
        options = ImportOptions(mode=mode, crs=crs, mapping=fields, layer=layer, id_field=id_field,
                                encoding=encoding, max_bytes=limit)
        subject = scope.principal.subject if scope.principal else ""
        job = await jobs.start(request.app, c.members[0][0], c.layer_type, path, filename, options, subject)
        url = f"{base_url(request)}{scope.dataset.path}/collections/{c.id}/imports/{job}"
        return Response(orjson.dumps({"id": job, "status": "queued", "links": [{"href": url, "rel": "monitor"}]}),
                        status_code=202, media_type=JSON, headers={"Location": url})

    @router.get("/collections/{collectionId}/imports/{jobId}", operation_id="municipality.getImport",
                summary="An import job: status, progress, and the report of every rejected feature",
                response_class=Response)
    async def import_status(scope: ScopeDep, collection_id: CollectionId,
                            job_id: Annotated[str, Path(alias="jobId")]) -> Response:
        c = scope.collection(collection_id)
        doc = await jobs.read(scope.pool, job_id[:32], c.members[0][0])
        if doc is None:
            raise NotFound(f"no import {job_id!r} for {c.id!r}", parameter="jobId")
        return Response(orjson.dumps(doc), media_type=JSON, headers={"Cache-Control": "no-store"})

    return router
