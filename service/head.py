"""HEAD for every GET resource: answered as the GET would be, without the body (RFC 9110 §9.3.2)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEAD = "geotwin.head"  # in the scope of a HEAD request that the GET handler answers


def answering_head(request: Request) -> bool:
    """Whether the GET handler is answering a HEAD: one whose headers cost the whole body (an export) may
    leave out what only writing it would tell (RFC 9110 §9.3.2: Content-Length)."""
    return bool(request.scope.get(HEAD))


class HeadAsGet:
    """Routes HEAD through the GET handler and drops the body, keeping status and headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {"type": "http.response.body", "body": b"", "more_body": False}
                if sent_body[0]:
                    return
                sent_body[0] = True
            await send(message)

        sent_body = [False]
        await self.app({**scope, "method": "GET", HEAD: True}, receive, send_without_body)
