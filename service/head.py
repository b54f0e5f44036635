"""HEAD for every GET resource: answered as the GET would be, without the body (RFC 9110 §9.3.2)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
        await self.app({**scope, "method": "GET"}, receive, send_without_body)
