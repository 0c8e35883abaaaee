"""Webhook delivery cannot be turned against the server's own network (SSRF).

Every connection here goes to a listener on 127.0.0.1. The resolver is stubbed (names map
to whatever a test says), and where a test needs a "public" address the socket opener is
stubbed too: it records the address it was asked for and connects to the local listener
instead, so nothing ever leaves loopback.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.errors import InvalidParameter
from core.settings import Settings
from core.wire import FinetuneRequest
from jobs import webhooks
from jobs.db import Database
from jobs.repository import JobRepository
from jobs.states import JobStatus

PUBLIC = "93.184.215.14"  # a global unicast address: never connected to (see _redirect_to)
NAME = "hooks.example.test"


class _Receiver(BaseHTTPRequestHandler):
    status = 204
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).seen.append({"path": self.path, "host": self.headers.get("Host", "")})
        self.send_response(type(self).status)
        if 300 <= type(self).status < 400:
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/moved")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def listener() -> Iterator[int]:
    """A receiver on 127.0.0.1; yields its port. ``_Receiver.seen`` lists what arrived."""
    _Receiver.status, _Receiver.seen = 204, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short backoff; no real DNS lookup; no socket to anything but 127.0.0.1."""
    monkeypatch.setattr(webhooks, "BACKOFF_S", 0.01)

    def no_lookup(host: str, port: int) -> list[str]:
        raise AssertionError(f"unstubbed DNS lookup of {host!r}")

    def loopback(address: tuple[str, int], timeout: float | None,
                 source_address: tuple[str, int] | None = None) -> socket.socket:
        assert address[0] == "127.0.0.1", address
        return socket.create_connection(address, timeout)

    monkeypatch.setattr(webhooks, "resolve_host", no_lookup)
    monkeypatch.setattr(webhooks, "open_connection", loopback)


def _resolver(monkeypatch: pytest.MonkeyPatch, *answers: list[str]) -> list[str]:
    """Stub DNS: the n-th lookup answers ``answers[n]`` (the last one repeats)."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    monkeypatch.setattr(webhooks, "resolve_host", resolve)
    return asked


def _redirect_to(monkeypatch: pytest.MonkeyPatch, port: int) -> list[tuple[str, int]]:
    """Record every address a try opens, and connect to the local listener instead."""
    opened: list[tuple[str, int]] = []

    def opener(address: tuple[str, int], timeout: float | None,
               source_address: tuple[str, int] | None = None) -> socket.socket:
        opened.append(address)
        return socket.create_connection(("127.0.0.1", port), timeout)

    monkeypatch.setattr(webhooks, "open_connection", opener)
    return opened


def _send(url: str, allow: tuple[str, ...] = (), tries: int = 1) -> tuple[bool, list[dict]]:
    attempts: list[dict] = []
    ok = webhooks.deliver(url, b"{}", {"Content-Type": "application/json"}, timeout_s=2,
                          tries=tries, allow_hosts=allow, on_attempt=attempts.append)
    return ok, attempts


def test_a_name_resolving_to_loopback_is_refused_before_any_connection(
        listener: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _resolver(monkeypatch, ["127.0.0.1"])
    ok, attempts = _send(f"http://{NAME}:{listener}/hook", tries=3)
    assert not ok and _Receiver.seen == []
    assert len(attempts) == 1  # refused, not retried
    assert "127.0.0.1" in attempts[0]["error"] and "loopback" in attempts[0]["error"]
    assert attempts[0]["host"] == NAME and attempts[0]["status_code"] is None


def test_the_allow_setting_lets_a_named_host_reach_a_local_listener(
        listener: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _resolver(monkeypatch, ["127.0.0.1"])
    ok, attempts = _send(f"http://{NAME}:{listener}/hook?x=1", allow=(NAME.upper(),))
    assert ok and attempts[0]["status_code"] == 204 and attempts[0]["delivered"]
    assert _Receiver.seen == [{"path": "/hook?x=1", "host": f"{NAME}:{listener}"}]


def test_a_redirect_is_not_followed(listener: int) -> None:
    _Receiver.status = 302
    ok, attempts = _send(f"http://127.0.0.1:{listener}/hook", allow=("127.0.0.1",), tries=3)
    assert not ok and len(_Receiver.seen) == 1 and _Receiver.seen[0]["path"] == "/hook"
    assert attempts == [{"host": "127.0.0.1", "attempt": 1, "tries": 3, "status_code": 302,
                         "error": "redirect not followed", "delivered": False}]


def test_rebinding_cannot_move_the_connection(listener: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The first answer is public, later ones loopback: the socket goes to the address that
    was checked, and the name is looked up once per try."""
    asked = _resolver(monkeypatch, [PUBLIC], ["127.0.0.1"])
    opened = _redirect_to(monkeypatch, listener)
    ok, attempts = _send(f"http://{NAME}:{listener}/hook")
    assert ok and attempts[0]["status_code"] == 204
    assert opened == [(PUBLIC, listener)] and asked == [NAME]
    assert _Receiver.seen[0]["host"] == f"{NAME}:{listener}"  # Host header: the name
    # A second try resolves again and is judged again: the loopback answer is refused.
    ok, attempts = _send(f"http://{NAME}:{listener}/hook")
    assert not ok and "loopback" in attempts[0]["error"] and opened == [(PUBLIC, listener)]


def test_https_is_pinned_too_and_verifies_the_certificate(
        listener: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TLS connection is opened to the checked address as well; the plain-HTTP local
    listener cannot complete a handshake, so the try fails (and is retried)."""
    _resolver(monkeypatch, [PUBLIC])
    opened = _redirect_to(monkeypatch, listener)
    ok, attempts = _send(f"https://{NAME}:{listener}/hook", tries=2)
    assert not ok and opened == [(PUBLIC, listener)] * 2
    assert all(a["status_code"] is None and a["error"] for a in attempts)


@pytest.mark.parametrize("answer", [["10.0.0.8"], ["169.254.169.254"], ["::1"],
                                    ["::ffff:127.0.0.1"], ["fe80::1"], ["224.0.0.1"],
                                    ["0.0.0.0"], ["fc00::5"], [PUBLIC, "192.168.1.1"]])
def test_every_resolved_address_must_be_public(answer: list[str], listener: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _resolver(monkeypatch, answer)
    opened = _redirect_to(monkeypatch, listener)
    ok, attempts = _send(f"http://{NAME}:{listener}/")
    assert not ok and opened == [] and attempts[0]["error"].startswith("refused:")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://0x7f000001/", "http://2130706433/", "http://0177.0.0.1/",
    "http://127.1/", "http://localhost:8000/", "http://api.localhost/", "http://[::1]/",
    "http://[::ffff:7f00:1]/", "http://10.1.2.3/", "http://[fe80::1]/", "http://0.0.0.0/",
    "http://169.254.169.254/latest/meta-data", "ftp://example.com/", "file:///etc/passwd",
    "gopher://127.0.0.1:6379/", "http:///nohost",
])
def test_static_check_refuses_literals_and_schemes(url: str) -> None:
    assert webhooks.static_problem(url) is not None
    with pytest.raises(InvalidParameter, match="webhook_url"):
        webhooks.check_webhook_url(url)
    with pytest.raises(webhooks.WebhookRefused):
        webhooks.pin_target(url)  # also at delivery, before any lookup


def test_static_check_passes_public_names_and_allowed_literals() -> None:
    assert webhooks.static_problem(f"https://{NAME}/hook") is None
    assert webhooks.static_problem(f"http://{PUBLIC}/") is None
    assert webhooks.static_problem("http://2130706433:9/", ["127.0.0.1"]) is None
    assert webhooks.static_problem("http://localhost/", ["localhost"]) is None


def test_deliveries_are_job_events(tmp_path: Path, listener: int,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.create_schema()
    repo = JobRepository(db.sessions)
    request = FinetuneRequest(task="autoencode", dataset_id="faces", base="ae",
                              target_model="faces-ae",
                              webhook_url=f"http://127.0.0.1:{listener}/hook")
    job, _ = repo.create(request)
    job = repo.cancel(job.id)[0]
    assert job.status == JobStatus.CANCELLED
    for allow, status in ([], None), (["127.0.0.1"], 204):
        settings = Settings(data_dir=tmp_path, webhook_allow_hosts=",".join(allow))
        thread = webhooks.notify_terminal(job, settings, repo)
        assert thread is not None
        thread.join(10)
        event = [e for e in repo.events_after(job.id) if e.kind == "webhook"][-1]
        assert event.data["event"] == "job.cancelled" and event.data["host"] == "127.0.0.1"
        assert event.data["status_code"] == status
        assert event.data["delivered"] is (status == 204)
    assert len(_Receiver.seen) == 1  # only the allowed delivery connected
    db.dispose()
