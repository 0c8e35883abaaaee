"""uvicorn's HTTP/1.1 protocol with the JSON error envelope and a header read timeout.

A request line or header that h11 cannot parse (``Content-Length: twelve``, two different
Content-Length headers, a bad header name) never reaches the app: uvicorn answers it itself
with a plain-text 400. This subclass sends the same 400 as the app's envelope, so a client
sees ``{"error": {"code": "malformed_request", ...}}`` for every error. ``python -m service``
uses it; another launcher needs ``uvicorn --http service.http11:JsonErrorH11Protocol``.

uvicorn bounds only the idle time between two requests of a kept-alive connection; a client
that opens a connection and sends nothing, or its headers a byte a second, holds it for
ever. Here the request line and headers must be complete within ``http_header_timeout_s``
of the connection opening (or of the first byte of the next request on a kept-alive one),
else the client gets a JSON 408 ``request_timeout`` and the connection is closed. The body
has its own bound once the app reads it (service/timeouts.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.settings import get_settings

MALFORMED_REQUEST = "malformed_request"
REQUEST_TIMEOUT = "request_timeout"


def error_body(message: str, code: str = MALFORMED_REQUEST) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class JsonErrorH11Protocol(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = get_settings().http_header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # bytes of a request whose headers are due
            self._arm_header_timer()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are complete (or broken)
            self._disarm_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s,
                                                      self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.our_state is h11.IDLE:
            # Say why the connection closes (written by hand: h11 frames no answer before
            # it has a request).
            body = error_body(f"the request line and headers did not arrive within"
                              f" {self.header_timeout_s:g} s", REQUEST_TIMEOUT)
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n"
                b"\r\n" + body)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._disarm_header_timer()
        body = error_body(f"the HTTP request could not be parsed: {msg}")
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers,
                                                         reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()
