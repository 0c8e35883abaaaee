"""uvicorn's HTTP/1.1 protocol with the JSON error envelope for requests h11 rejects.

A request line or header that h11 cannot parse (``Content-Length: twelve``, two different
Content-Length headers, a bad header name) never reaches the app: uvicorn answers it itself
with a plain-text 400. This subclass sends the same 400 as the app's envelope, so a client
sees ``{"error": {"code": "malformed_request", ...}}`` for every error. ``python -m service``
uses it; another launcher needs ``uvicorn --http service.http11:JsonErrorH11Protocol``.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MALFORMED_REQUEST = "malformed_request"


def error_body(message: str) -> bytes:
    return json.dumps({"error": {"code": MALFORMED_REQUEST, "message": message}}).encode()


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = error_body(f"the HTTP request could not be parsed: {msg}")
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers,
                                                         reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()
