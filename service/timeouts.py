"""Slow clients cannot hold the server: a body must keep arriving or the request ends in 408.

An admitted request holds its admission ticket (service/inference/admission.py) while it reads
its body, so a client that trickles a body at a few bytes per second would hold a slot for
as long as it likes. ``BodyTimeoutMiddleware`` gives every body a deadline that moves with
what has arrived: ``start + http_body_timeout_s + received / http_body_min_rate``. A body
that falls behind it is answered ``408 request_timeout`` with ``Connection: close``; the
route's ticket is released as the exception unwinds it. Once the body is complete the
receive channel is passed through untouched (streaming responses listen on it for the
client's disconnect for as long as they run).

The request line and headers have their own bound in the HTTP protocol (service/http11.py).
"""

from __future__ import annotations

import asyncio
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_TIMEOUT = 408
CLOSE = {"Connection": "close"}


class BodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, grace_s: float, min_rate: int) -> None:
        self.app = app
        self.grace_s = grace_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        received = 0
        complete = False

        async def timed_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            deadline = started + self.grace_s + received / self.min_rate
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(),
                                                                0.0))
            except TimeoutError:
                raise HTTPException(
                    REQUEST_TIMEOUT,
                    f"the request body arrived too slowly ({received} bytes in"
                    f" {time.monotonic() - started:.0f} s; at least {self.min_rate} bytes/s"
                    f" after the first {self.grace_s:g} s are needed)", headers=CLOSE,
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            received += len(message.get("body", b""))
            return message

        await self.app(scope, timed_receive, send)
