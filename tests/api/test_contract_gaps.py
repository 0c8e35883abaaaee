"""The contract gaps: every error a client can cause is a documented JSON answer.

One server for the module, started the way production starts it (``python -m service``,
which also brings the JSON 400 for requests h11 rejects before the app), on a tiny store
whose classify model has a corrupt second version.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from core.wire import FinetuneRequest
from jobs.db import Database
from jobs.errors import BrokerUnavailable
from jobs.queue import JobQueue
from jobs.repository import JobRepository
from model_store.store import ModelStore
from tests.api.tiny_models import build_tiny_store, publish_tiny
from tests.support.archives import good_files, zip_bytes
from tests.support.server import OPEN_ACCESS, REPO, STARTUP_TIMEOUT_S

BOUNDARY = "gapsboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


class Service:
    """``python -m service`` on a free loopback port."""

    def __init__(self, store: Path, data: Path, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url, self.store, self.data = f"http://127.0.0.1:{self.port}", store, data
        env = {**os.environ, "TOONFORGE_STORE_DIR": str(store), "TOONFORGE_DATA_DIR": str(data),
               "TOONFORGE_HOST": "127.0.0.1", "TOONFORGE_PORT": str(self.port),
               "TOONFORGE_STARTER_MODELS": "false", "TOONFORGE_LOG_FORMAT": "text",
               **OPEN_ACCESS}
        self._log = log.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(log.read_text(errors="replace"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("gaps")
    store = build_tiny_store(root / "store")
    corrupt = publish_tiny(store, "classify", seed=3, activate=False)
    graph = store.version_dir("classify", corrupt) / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte off: only the sha256 can tell
    graph.write_bytes(bytes(data))
    server = Service(root / "store", root / "data", root / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def spec(http: httpx.Client) -> dict:
    return http.get("/openapi.json").json()


def error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()["error"]
    assert body["code"] == code, body
    return body


def documented(spec: dict, method: str, path: str, status: int, code: str | None = None
               ) -> None:
    responses = spec["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, (method, path, sorted(responses))
    if code is not None:
        assert f"`{code}`" in responses[str(status)]["description"], (method, path, status)


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename
                                                     else "")
        out += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                + data + b"\r\n")
    return out + f"--{BOUNDARY}--\r\n".encode()


# ---- malformed JSON: 422 malformed_json on every JSON-body route
@pytest.mark.parametrize("body", [b'{"task": ', b"\x1b\xff\xffC", b"\xff\xfe\x00", b"[" * 5000])
@pytest.mark.parametrize(("path", "route"), [
    ("/jobs/finetune", "/jobs/finetune"),
    ("/models/classify/activate", "/models/{name}/activate"),
    ("/generate?format=json", "/generate"),
])
def test_malformed_json_is_a_documented_422(http: httpx.Client, spec: dict, body: bytes,
                                            path: str, route: str) -> None:
    r = http.post(path, content=body, headers={"Content-Type": "application/json"})
    message = error(r, 422, "malformed_json")["message"]
    assert message.startswith("the body is not valid JSON")
    documented(spec, "POST", route, 422)
    documented(spec, "POST", "/jobs/finetune", 422, "malformed_json")


# ---- multipart: too many parts 413, broken framing 400
def test_too_many_multipart_fields(http: httpx.Client, spec: dict) -> None:
    archive = zip_bytes(good_files("generate"))
    fields = [(f"f{i}", None, b"x") for i in range(12)]
    r = http.post("/datasets?task=generate", content=multipart(("file", "a.zip", archive),
                                                               *fields),
                  headers={"Content-Type": MULTIPART})
    assert "Too many fields" in error(r, 413, "too_many_parts")["message"]
    documented(spec, "POST", "/datasets", 413, "too_many_parts")
    r = http.post("/classify", content=multipart(*[(f"f{i}", None, b"x") for i in range(20)]),
                  headers={"Content-Type": MULTIPART})
    error(r, 413, "too_many_parts")
    documented(spec, "POST", "/classify", 413, "too_many_parts")


@pytest.mark.parametrize(("path", "route"), [("/datasets?task=generate", "/datasets"),
                                             ("/classify", "/classify")])
def test_broken_multipart_framing(http: httpx.Client, spec: dict, path: str,
                                  route: str) -> None:
    r = http.post(path, content=b"--x\r\n\r\n", headers={"Content-Type": "multipart/form-data"})
    assert "boundary" in error(r, 400, "malformed_multipart")["message"]
    documented(spec, "POST", route, 400, "malformed_multipart")
    r = http.post(path, content=b"--fb91\r\n<--fb91--\r\n",
                  headers={"Content-Type": "multipart/form-data; boundary=fb91"})
    message = error(r, 400, "malformed_multipart")["message"]
    assert "400:" not in message  # no HTTPException str() prefix


def test_truncated_multipart_is_not_a_missing_field(http: httpx.Client) -> None:
    body = multipart(("image", "a.png", good_files("generate")["images/000.png"]))
    r = http.post("/classify", content=body[:-30], headers={"Content-Type": MULTIPART})
    assert "truncated" in error(r, 400, "malformed_multipart")["message"]


# ---- Allow lists every method of the path
@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/datasets/some-id", {"GET", "HEAD", "DELETE"}),
    ("OPTIONS", "/datasets", {"GET", "HEAD", "POST"}),
    ("OPTIONS", "/models/classify/activate", {"POST"}),
    ("DELETE", "/jobs/abc", {"GET", "HEAD"}),
])
def test_405_allow_lists_every_method(http: httpx.Client, method: str, path: str,
                                      allowed: set[str]) -> None:
    r = http.request(method, path)
    error(r, 405, "method_not_allowed")
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


# ---- Last-Event-ID: null is "no id"
def test_last_event_id_null_means_from_the_start(service: Service, http: httpx.Client) -> None:
    db = Database(Settings(_env_file=None, data_dir=service.data).jobs_database_url)
    repo = JobRepository(db.sessions)
    job, _ = repo.create(FinetuneRequest(task="autoencode", dataset_id="faces", base="ae",
                                         target_model="faces-ae"))
    repo.cancel(job.id)
    db.dispose()
    for value in ("null", ""):
        text = http.get(f"/jobs/{job.id}/events", headers={"Last-Event-ID": value}).text
        assert text.count("event: status") == 2, (value, text)  # queued, cancelled
    r = http.get(f"/jobs/{job.id}/events", headers={"Last-Event-ID": "1"})
    assert r.text.count("event: status") == 1
    error(http.get("/jobs/nope/events", headers={"Last-Event-ID": "null"}), 404,
          "job_not_found")
    for bad in ("-5", "abc", "1.5"):
        error(http.get(f"/jobs/{job.id}/events", headers={"Last-Event-ID": bad}), 422,
              "invalid_parameter")


# ---- a request h11 rejects before the app is still the JSON envelope
@pytest.mark.parametrize("header", [b"Content-Length: twelve", b"Content-Length: 5\r\n"
                                    b"Content-Length: 6"])
def test_bad_content_length_is_a_json_400(service: Service, header: bytes) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=5) as sock:
        sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     + header + b"\r\n\r\nhello")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"content-type: application/json" in head.lower()
    assert httpx.Response(400, content=body).json()["error"]["code"] == "malformed_request"


# ---- no internals in messages
def test_messages_name_no_objects_paths_or_enums(service: Service, http: httpx.Client) -> None:
    answers = [
        http.post("/classify", content=b"not an image at all",
                  headers={"Content-Type": "image/png"}),
        http.post("/classify", content=b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
                  headers={"Content-Type": "image/png"}),
        http.post("/datasets?task=generate", content=zip_bytes(
            {f"images/{i}.png": b"not really a png" for i in range(6)}),
            headers={"Content-Type": "application/zip"}),
        http.post("/datasets?task=generate", content=b"PK\x03\x04" + b"\0" * 100,
                  headers={"Content-Type": "application/zip"}),
    ]
    for r in answers:
        assert 400 <= r.status_code < 500, r.text
        text = r.text
        assert " at 0x" not in text and "<_io" not in text, text
        assert str(service.store) not in text and ".staging" not in text, text
        assert "<Task." not in text and "tmp/" not in text, text
    skipped = answers[2].json()["error"]["details"]["report"]["skipped"]
    assert len(skipped) == 6
    for entry in skipped:  # Pillow's message names the file by its own name, not its path
        name = entry["path"].rsplit("/", 1)[-1]
        assert entry["reason"].startswith("not a readable image") and f"'{name}'" in entry[
            "reason"], entry


# ---- activation verifies the files (the store does it, so the API does)
@pytest.mark.local_store_only("damages a version file in the store directory")
def test_activating_a_corrupt_version_names_the_file(service: Service, http: httpx.Client,
                                                     spec: dict) -> None:
    body = error(http.post("/models/classify/activate", json={"version": 2}), 409,
                 "version_corrupt")
    assert body["details"] == {"version": "classify@2", "file": "model.onnx"}
    assert str(service.store) not in body["message"]
    documented(spec, "POST", "/models/{name}/activate", 409, "version_corrupt")
    assert ModelStore(service.store).active_version("classify") == 1
    assert http.post("/classify", content=good_files("generate")["images/000.png"],
                     headers={"Content-Type": "image/png"}).status_code == 200


# ---- a broker that accepts and never answers: 503 after ~1x the connect timeout
def test_a_silent_broker_is_given_up_on_after_the_connect_timeout(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.extend(iter(lambda: listener.accept()[0], None)),
                     daemon=True).start()
    timeout = 1.0  # the fixed start-up cost of a producer (~0.15 s) is part of the bound
    settings = Settings(_env_file=None, data_dir=tmp_path, broker_connect_timeout_s=timeout,
                        broker_url=f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
    queue = JobQueue(settings)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            queue.enqueue_finetune("job")
        elapsed = time.monotonic() - started
    finally:
        queue.close()
        listener.close()
    assert accepted  # it did connect: the wait was for an answer
    # It was max(timeout, 5 s) before (2.5x at the 2 s default); the rest is start-up.
    assert timeout * 0.9 <= elapsed <= timeout * 2, elapsed


# ---- webhook_url is checked when the job is submitted (the resolver, at each delivery)
@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/", "http://0x7f000001/",
                                 "http://2130706433/", "http://localhost:8000/hook",
                                 "http://[::ffff:127.0.0.1]/", "http://169.254.169.254/"])
def test_a_webhook_to_an_internal_address_is_refused_at_submission(
        http: httpx.Client, spec: dict, url: str) -> None:
    body = {"task": "autoencode", "dataset_id": "faces", "base": "faces-ae",
            "target_model": "faces-ae", "webhook_url": url}
    message = error(http.post("/jobs/finetune", json=body), 422, "invalid_parameter")["message"]
    assert message.startswith("webhook_url:") and "webhook_allow_hosts" in message
    documented(spec, "POST", "/jobs/finetune", 422)


# ---- target_model may be left out, as the CLI's --target: the base's model name
def test_target_model_defaults_to_the_base_model(http: httpx.Client, spec: dict) -> None:
    uploaded = http.post("/datasets?task=classify&id=gaps-cls",
                         content=zip_bytes(good_files("classify")),
                         headers={"content-type": "application/zip"})
    assert uploaded.status_code == 201, uploaded.text
    for extra in ({}, {"target_model": None}):
        created = http.post("/jobs/finetune", json={
            "task": "classify", "dataset_id": "gaps-cls", "base": "classify@1", **extra,
            "hyperparameters": {"epochs": 1}})
        assert created.status_code == 201, created.text
        assert created.json()["target_model"] == "classify"
        http.post(f"/jobs/{created.json()['id']}/cancel")  # no worker here: leave none queued
    schema = spec["components"]["schemas"]["FinetuneRequest"]
    assert "target_model" not in schema["required"]
    assert "base's model name" in schema["properties"]["target_model"]["description"]
