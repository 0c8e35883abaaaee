"""Slow clients get 408 and give their admission slot back (raw sockets on 127.0.0.1).

The server admits one request at a time and queues none (TOONFORGE_MAX_CONCURRENCY=1,
TOONFORGE_MAX_QUEUED=0), so a slow client that kept its ticket would make every other
request a 503 ``overloaded``.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.api.conftest import encode, gradient16
from tests.support.server import ApiServer

HEADER_TIMEOUT_S = 2.0
BODY_GRACE_S = 2.0
# Seconds a test waits at most for the 408 (a slow client would otherwise wait for ever).
PATIENCE_S = 30.0


@pytest.fixture()
def server(tiny_store: Path, tmp_path: Path) -> Iterator[ApiServer]:
    api = ApiServer(tiny_store, tmp_path / "server.log", {
        "TOONFORGE_MAX_CONCURRENCY": "1", "TOONFORGE_MAX_QUEUED": "0",
        "TOONFORGE_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "TOONFORGE_HTTP_BODY_TIMEOUT_S": str(BODY_GRACE_S),
        "TOONFORGE_HTTP_BODY_MIN_RATE": "1000",
    })
    yield api
    api.stop()


def _connect(api: ApiServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=PATIENCE_S)
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one whole answer (the server closes the connection after it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _metric(api: ApiServer, name: str) -> float:
    for line in httpx.get(f"{api.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def _matte_ok(api: ApiServer) -> int:
    return httpx.post(f"{api.url}/matte", content=encode(Image.fromarray(gradient16())),
                      headers={"content-type": "image/png"}, timeout=30).status_code


def test_slow_header_gets_408_and_the_connection_closes(server: ApiServer) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        for byte in b"POST /matte HTTP/1.1\r\nHost: x\r\n":
            # 5 bytes a second (the headers would take 7 s); stop sending just before the
            # deadline, so the answer is not lost to a reset by bytes sent after the close.
            if time.monotonic() - started > HEADER_TIMEOUT_S - 0.5:
                break
            sock.sendall(bytes([byte]))
            time.sleep(0.2)
        status, headers, body = _answer(sock)
    assert status == 408
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert _matte_ok(server) == 200


def test_silent_connection_is_closed(server: ApiServer) -> None:
    with _connect(server) as sock:
        status, _, body = _answer(sock)  # sends nothing at all
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_slow_body_gets_408_and_frees_its_slot(server: ApiServer) -> None:
    image = encode(Image.fromarray(gradient16(256, 256)))
    with _connect(server) as sock:
        sock.sendall(b"POST /matte HTTP/1.1\r\nHost: x\r\ncontent-type: image/png\r\n"
                     b"content-length: " + str(len(image)).encode() + b"\r\n\r\n")
        sock.sendall(image[:10])
        time.sleep(0.5)
        # Admitted and reading: the only ticket is taken, so others are refused meanwhile,
        # and the gauge shows it.
        assert _metric(server, "toonforge_pool_requests_reading") == 1
        assert _matte_ok(server) == 503
        sock.settimeout(0.1)
        sent, answer = 10, b""
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:  # 50 bytes a second, as a trickle
            try:
                sock.sendall(image[sent:sent + 5])
                sent += 5
                answer = sock.recv(65536)
                if answer:
                    break
            except TimeoutError:
                continue
            except OSError:  # closed by the server while we were sending
                break
        sock.settimeout(PATIENCE_S)
        rest = b""
        try:
            while chunk := sock.recv(65536):
                rest += chunk
        except OSError:
            pass
    head, _, body = (answer + rest).partition(b"\r\n\r\n")
    assert head.split()[1] == b"408", head
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert sent < len(image)
    assert _metric(server, "toonforge_pool_requests_reading") == 0
    assert _matte_ok(server) == 200  # the slot is free again


def test_a_normal_upload_is_not_cut(server: ApiServer) -> None:
    assert _matte_ok(server) == 200
    # A kept-alive connection that is idle between requests is not a slow header.
    with httpx.Client(timeout=30) as http:
        for _ in range(2):
            answer = http.post(f"{server.url}/matte",
                               content=encode(Image.fromarray(gradient16())),
                               headers={"content-type": "image/png"})
            assert answer.status_code == 200
            time.sleep(HEADER_TIMEOUT_S / 2)
