"""ETag and Cache-Control for the JSON answers that name no version of their own: landing pages, conformance,
the API documents, layer types, queryables and schemas, tile matrix sets, tilesets, TileJSON, styles and the
process descriptions. MapLibre asks for a TileJSON and a style on every page load, QGIS for the landing page
and the collections each time it connects; with an ETag they get 304 and keep what they have.

The ETag is a hash of the answer's bytes, so it changes whenever they do; `no-cache` makes every client and
shared cache ask again before each use. Nothing can be served stale that way, whatever the answer depends on
(a style's legend lists the codes its layer's features use). The answers the routes give validators of their
own (collections, items, features, tiles) or mark otherwise (`no-store`, `no-cache` on the change feed) and
downloads (`Content-Disposition`) pass as they are, as do HTML pages (each carries its own nonce) and answers
beyond MAX_BYTES. Inside service.access, which makes the `public` private for a request with a credential.
"""

from __future__ import annotations

import hashlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.responses import DATA_CACHE, etag_matches

MAX_BYTES = 4 * 1024 * 1024  # the whole-service OpenAPI document is about 0.3 MB
_OWN = (b"etag", b"cache-control", b"content-disposition")


def _revalidatable(message: Message) -> bool:
    if message["status"] != 200:
        return False
    media = b""
    for name, value in message.get("headers", []):
        name = name.lower()
        if name in _OWN:
            return False
        if name == b"content-type":
            media = value.split(b";")[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def _with_accept(vary: bytes | None) -> bytes:
    """Vary for a negotiated resource (JSON or HTML by `Accept`): a shared cache keeps the two apart."""
    names = [v.strip() for v in vary.split(b",")] if vary else []
    if not any(n.lower() in (b"accept", b"*") for n in names):
        names.insert(0, b"Accept")
    return b", ".join(names)


class Revalidate:
    """Adds a content ETag and `public, no-cache` to the JSON answers of GET (and HEAD) that have neither, and
    answers 304 when If-None-Match names that ETag."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0

        async def buffered(message: Message) -> None:
            nonlocal start, size
            if message["type"] == "http.response.start":
                if _revalidatable(message):
                    start = message
                else:
                    await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BYTES:  # too large to hold for a hash: sent as it came
                await send(start)
                start = None
                await send({**message, "body": b"".join(chunks)})
                return
            if not message.get("more_body", False):
                await _finish(scope, send, start, b"".join(chunks))
                start = None

        await self.app(scope, receive, buffered)


async def _finish(scope: Scope, send: Send, start: Message, body: bytes) -> None:
    etag = f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'.encode()
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"vary"]
    vary = next((v for k, v in start.get("headers", []) if k.lower() == b"vary"), None)
    validators = [(b"etag", etag), (b"cache-control", DATA_CACHE.encode()), (b"vary", _with_accept(vary))]
    asked = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
    if asked is not None and etag_matches(asked.decode("latin-1"), etag.decode()):
        kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"content-type")]
        await send({"type": "http.response.start", "status": 304, "headers": kept + validators})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({**start, "headers": headers + validators})
    await send({"type": "http.response.body", "body": body})
