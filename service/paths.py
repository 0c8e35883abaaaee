"""Paths no route can serve, refused before routing: a NUL byte in the path.

Ids in paths (jobs, sweeps, keys, datasets, models) reach the jobs database or the file
system; PostgreSQL refuses a string with a NUL byte with a driver error (which was a 500)
and no file name may hold one. No resource has such a name, so the answer is the 404 of
an unknown path, in the JSON envelope, for every route at once.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import envelope


class NulPathGuard:
    """404 ``not_found`` for a request whose (decoded) path holds a NUL byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\x00" in scope.get("path", ""):
            response = envelope(404, "not_found", "no resource has a NUL byte (%00) in its"
                                " path")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
