"""A byte cap on every request body, enforced before and while the body is read.

Image routes read their bodies themselves with tighter per-route limits (imaging.py);
this middleware also bounds the bodies FastAPI reads for us (the JSON of /generate and
/models/{name}/activate), so no route reads an unbounded body into memory.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import envelope


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int,
                 path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Path prefix -> cap, for routes whose bodies are legitimately larger (dataset
        # archives); those routes still enforce their own cap while streaming.
        self.path_limits = path_limits or {}

    def _limit(self, path: str) -> int:
        for prefix, limit in self.path_limits.items():
            if path == prefix or path.startswith(prefix + "/"):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self._limit(scope.get("path", ""))
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                response = envelope(413, "too_large", f"the body has {int(value)} bytes;"
                                    f" the limit is {max_bytes}")
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # An HTTPException passes through FastAPI's body parsing untouched and
                    # reaches the error handlers, which answer with the envelope.
                    raise HTTPException(413, f"the body exceeds the limit of {max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)
