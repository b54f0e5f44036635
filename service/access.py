"""Authentication and the access rules, below every route: no endpoint can forget them.

Per request: read the credential (if any, see `credential`) into a `Principal` (`request.state.principal`), or
answer 401.
Then apply the rules by path and method:

| request                                         | needs                          |
|-------------------------------------------------|--------------------------------|
| any method on `/admin/…`                         | platform administrator         |
| any method on `/municipalities/{m}/keys…`         | admin of m                     |
| POST on `/municipalities/{m}/collections`         | admin of m                     |
| PATCH/DELETE on `/municipalities/{m}/collections/{c}` | admin of m                 |
| any method on `/municipalities/{m}/…/imports…`    | editor of m                    |
| POST/PUT/PATCH/DELETE on `/municipalities/{m}/…`  | editor of m                    |
| POST on `/processes/{id}/execution`               | nothing: read-only analyses    |
| DELETE on `/jobs/{id}`                            | nothing here: the job's owner  |
| any other POST/PUT/PATCH/DELETE                  | nobody (403; 401 if anonymous) |
| GET/HEAD/OPTIONS elsewhere                       | nothing (see below)            |

Internal collections are only in the catalog view of their municipality's members (`service.deps`), so
reads need no rule here.

Answers to requests that carried a credential are marked `Cache-Control: private`, so no shared cache keeps
what one user was allowed to see.

Rate limits (`GEOTWIN_LIMITS__…`) apply here too, after the rules: writes, and the expensive requests
(process runs, exports, imports), are counted per key or token subject and per client address; over the
limit → 429 with Retry-After.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import KEY_PREFIX, AuthError, Principal, TokenVerifier, principal_for_key
from service.db import connection
from service.errorpage import error_answer, wants_page
from service.observability import RATE_LIMITS_UNCOUNTED
from service.settings import LimitSettings

log = logging.getLogger("geotwin.access")

SAFE = {"GET", "HEAD", "OPTIONS"}
PROCESS_EXECUTION = re.compile(r"^/processes/[^/]+/execution$")
JOB = re.compile(r"^/jobs/[^/]+$")
MUNICIPALITY_PATH = re.compile(r"^/municipalities/(?P<m>[^/]+)(?P<rest>/.*)?$")
COLLECTION = re.compile(r"^/collections(/[^/]+)?/?$")  # creating one, or changing or deleting one


def required(method: str, path: str) -> tuple[str, str | None] | None:
    """(role, municipality) a request needs, or None when anybody may send it."""
    if path == "/admin" or path.startswith("/admin/"):
        return "platform", None
    match = MUNICIPALITY_PATH.match(path)
    rest = (match["rest"] or "") if match else ""
    if match and (rest.startswith("/keys") or (method not in SAFE and COLLECTION.match(rest))):
        return "admin", match["m"]
    if match and "/imports" in rest:  # job reports list rejected features: editors only
        return "editor", match["m"]
    if method in SAFE or (method == "POST" and PROCESS_EXECUTION.match(path)):
        return None  # reads, and processes (they compute over what the caller may see and write nothing)
    if method == "DELETE" and JOB.match(path):
        return None  # dismissing a process run: the router lets only the job's owner do it
    if match:
        return "editor", match["m"]
    return "platform", None


def permitted(principal: Principal | None, method: str, path: str) -> bool:
    """Whether the rules let `principal` (None: anonymous) send `method` to `path`."""
    need = required(method, path)
    return need is None or (principal is not None and principal.can(*need))


def credential(headers: dict[bytes, bytes]) -> str | None:
    """The key or token a request carries: `Authorization: Bearer …`, `X-API-Key: …`, or a key as the password
    of `Authorization: Basic` (any user name), which GDAL (GDAL_HTTP_USERPWD), OWSLib and QGIS's Basic
    configuration send. Other Basic credentials, and other schemes, are a proxy's or the intranet's (nginx
    auth_basic, Windows' Negotiate) and are left to them. A Bearer or X-API-Key header with nothing in it is a
    401 (AuthError): it is a script whose variable is empty, which would otherwise read as anonymous."""
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        if not value.strip():
            raise AuthError("Authorization: Bearer carries no key or token (an empty variable?)")
        return value.strip()
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            password = ""
        if password.startswith(KEY_PREFIX):
            return password
    if b"x-api-key" in headers:
        key = headers[b"x-api-key"].decode("latin-1").strip()
        if not key:
            raise AuthError("X-API-Key carries no key (an empty variable?)")
        return key
    return None


EXPENSIVE = re.compile(r"^/processes/[^/]+/execution$|/export$|/imports$")


def cost(method: str, path: str) -> str | None:
    """Which rate limit a request counts against: 'expensive', 'writes' or none (reads: no regex)."""
    if method in SAFE:
        return "expensive" if path.endswith("/export") else None
    return "expensive" if EXPENSIVE.search(path) else "writes"


DOWN_PAUSE_S = 30


class RateLimits:
    """Moving-window limits (the `limits` library, as slowapi and Flask-Limiter use), counted in this process's
    memory or, with `GEOTWIN_LIMITS__STORAGE=redis://…`, in a Redis that all workers and replicas share.
    A storage that does not answer within 1 s lets requests through, and is tried again after DOWN_PAUSE_S
    (logged each time): a limit must not take the service down with it."""

    def __init__(self, settings: LimitSettings) -> None:
        self.rules = {kind: parse(value) for kind, value in (("writes", settings.writes),
                                                              ("expensive", settings.expensive)) if value}
        parts = urlsplit(settings.storage)
        self.where = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"  # no password
        options = {} if settings.storage.startswith("memory:") else {
            "implementation": "redispy", "socket_connect_timeout": 1, "socket_timeout": 1}
        self.limiter = MovingWindowRateLimiter(storage_from_string(f"async+{settings.storage}", **options))
        self._down_until = 0.0  # after a failure, the storage is left alone for a while

    async def exceeded(self, kind: str, who: list[str]) -> int | None:
        """Seconds to wait when one of `who` (key subject, client address) is over the limit, else None."""
        rule = self.rules.get(kind)
        if rule is None or time.monotonic() < self._down_until:
            return None
        try:
            for identity in who:
                if not await self.limiter.hit(rule, kind, identity):
                    reset, _ = await self.limiter.get_window_stats(rule, kind, identity)
                    return max(1, math.ceil(reset - time.time()))
        except Exception as exc:  # the storage is down: count nothing rather than refuse everything
            self._down_until = time.monotonic() + DOWN_PAUSE_S
            RATE_LIMITS_UNCOUNTED.inc()
            log.warning("rate limits not counted for %d s: their storage %s does not answer (%s)", DOWN_PAUSE_S,
                        self.where, exc)
        return None


class Access:
    def __init__(self, app: ASGIApp, verifier: TokenVerifier, limits: LimitSettings | None = None) -> None:
        self.app = app
        self.verifier = verifier
        self.limits = RateLimits(limits or LimitSettings())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        principal: Principal | None = None
        try:
            token = credential(headers)
            if token is not None:
                principal = await self._authenticate(scope, token)
        except AuthError as exc:
            await _deny(scope, send, 401, "Unauthorized", str(exc))
            return
        scope.setdefault("state", {})["principal"] = principal
        need = required(scope["method"], scope["path"])
        if need is not None:  # the same rule as `permitted`, with the reason when it says no
            role, municipality = need
            if principal is None:
                await _deny(scope, send, 401, "Unauthorized", "this request needs an API key or token "
                                                       "(Authorization: Bearer …)")
                return
            if not principal.can(role, municipality):
                target = f"{role} of {municipality}" if municipality else role
                await _deny(scope, send, 403, "Forbidden",
                            f"{principal.subject} ({_describe(principal)}) may not do this: it needs {target}")
                return
        kind = cost(scope["method"], scope["path"])
        if kind is not None:
            address = (scope.get("client") or ("?",))[0]
            who = ([f"key {principal.subject}"] if principal else []) + [f"address {address}"]
            wait = await self.limits.exceeded(kind, who)
            if wait is not None:
                await _deny(scope, send, 429, "TooManyRequests",
                            f"too many {'expensive requests' if kind == 'expensive' else 'writes'}: at most "
                            f"{self.limits.rules[kind]}; try again in {wait} s", retry_after=wait)
                return
        if principal is None:
            await self.app(scope, receive, send)
            return

        async def private(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, v.replace(b"public", b"private") if k.lower() == b"cache-control" else v)
                                      for k, v in message.get("headers", [])]
            await send(message)

        await self.app(scope, receive, private)

    async def _authenticate(self, scope: Scope, token: str) -> Principal:
        if token.startswith(KEY_PREFIX):
            async with connection(scope["app"].state.pool) as conn:
                return await principal_for_key(conn, token)
        if self.verifier.enabled:
            return self.verifier.verify(token)
        raise AuthError("not an API key (they start with gt_), and this service accepts no tokens")


def _describe(p: Principal) -> str:
    return f"{p.role} of {p.municipality}" if p.municipality else p.role


async def _deny(scope: Scope, send: Send, status: int, code: str, description: str,
                retry_after: int | None = None) -> None:
    request = Request(scope)
    if wants_page(request):  # a browser: the same as a page (service.errorpage)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="geotwin"'
        page = error_answer(request, status, {"code": code, "description": description}, headers)
        await send({"type": "http.response.start", "status": status, "headers": page.raw_headers})
        await send({"type": "http.response.body", "body": page.body})
        return
    body = orjson.dumps({"code": code, "description": description})
    headers: list[tuple[bytes, Any]] = [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="geotwin"'))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
