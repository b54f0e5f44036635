"""Request bodies, read defensively: a size limit (413), a stall limit (408), one JSON parser (400)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request

from service.errors import InvalidBody, PayloadTooLarge, RequestTimeout, UnsupportedMediaType


async def body_chunks(stream: Any, idle_timeout_s: float) -> Any:
    """The chunks of a request body; RequestTimeout (408) when none arrives for `idle_timeout_s`."""
    chunks = stream.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), idle_timeout_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(f"the body stopped arriving: nothing for {idle_timeout_s:g} s") from None
        yield chunk


async def json_body(request: Request, types: tuple[str, ...]) -> Any:
    """The JSON body of a request in one of the media `types`, within the size and stall limits."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in types:
        raise UnsupportedMediaType.refusing(media, types)
    limit = request.app.state.settings.api.max_body_mb * 1024 * 1024
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {int(declared):,} bytes; at most {limit:,} are accepted")
    body = bytearray()
    async for chunk in body_chunks(request.stream(), request.app.state.settings.api.body_timeout_s):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit:,} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"the body is not valid JSON: {exc}") from None


