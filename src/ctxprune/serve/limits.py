"""An ASGI middleware that refuses a body over the upload limit with 413, before the multipart parser
spools it: at once when Content-Length says so, else as soon as the streamed bytes pass the limit. It
also counts every answered request by route and status for `/metrics`."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ctxprune.serve.errors import error_response
from ctxprune.serve.metrics import ServerMetrics


class _TooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServerMetrics):
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"].startswith("/v1/") else "other"
        status = {"code": 500}

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        try:
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                raise _TooLarge
            seen = 0

            async def limited_receive() -> Message:
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
                return message

            await self.app(scope, limited_receive, counted_send)
        except _TooLarge:
            mb = self.max_bytes / 2**20
            response = error_response(413, f"the upload is over {mb:g} MB", "file", "file_too_large")
            await response(scope, receive, counted_send)
        finally:
            self.metrics.requests.labels(path, str(status["code"])).inc()
