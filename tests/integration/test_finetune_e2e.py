"""Fine-tuning through the HTTP API, end to end, with no mocks: the real API under uvicorn,
real ``python -m worker`` processes, a real broker and database.

Every case that depends on the backend runs on the embedded default (filesystem broker +
SQLite) and on Redis + PostgreSQL (skipped when unreachable outside CI, failed in CI). The
training is a tiny autoencoder (64x64 faces, latent 32) on a synthetic dataset uploaded over
HTTP; the base is a random-weight ``faces-ae@1`` imported through the real import path.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_store.store import ModelStore
from tests.integration.conftest import JobBackend
from tests.support.archives import zip_folder
from tests.support.processes import WorkerPool
from tests.support.server import ApiServer
from tests.support.stores import artifacts_at, store_at

# Runs again on S3 (TOONFORGE_TEST_STORE=s3), on the embedded job backend: the API and each
# worker then have their own store_dir, and every store read here goes through store_at /
# artifacts_at (the bucket's, on S3).
pytestmark = [pytest.mark.timeout(180), pytest.mark.store]

DATASET = "faces"
MODEL = "faces-ae"
TERMINAL = ("succeeded", "failed", "cancelled")


# ---------------------------------------------------------------- shared, built once


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose faces-ae@1 (random weights, active) is the base every job starts from."""
    from tests.support.store import import_test_model

    root = tmp_path_factory.mktemp("e2e-store")
    import_test_model(ModelStore(root), "autoencode", tmp_path_factory.mktemp("ckpt"))
    return root


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tasks.synthetic import make_dataset

    return zip_folder(make_dataset("autoencode", tmp_path_factory.mktemp("faces"), n=16))


@pytest.fixture(scope="module")
def face_png(dataset_zip: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(dataset_zip)) as zf:
        return zf.read(zf.namelist()[0])


# ---------------------------------------------------------------- one test's stack


@dataclass
class Stack:
    backend: JobBackend
    api: ApiServer
    http: httpx.Client
    workers: WorkerPool
    extra_servers: list[ApiServer] = field(default_factory=list)

    def submit(self, key: str | None = None, epochs: int = 2, **overrides: Any
               ) -> httpx.Response:
        body: dict[str, Any] = {
            "task": "autoencode", "dataset_id": DATASET, "base": MODEL, "target_model": MODEL,
            "hyperparameters": {"epochs": epochs, "batch_size": 4,
                                "early_stop_patience": None},
            "auto_activate": False,
        }
        headers = {"Idempotency-Key": key} if key else {}
        return self.http.post("/jobs/finetune", json={**body, **overrides}, headers=headers)

    def submit_ok(self, **kwargs: Any) -> dict:
        r = self.submit(**kwargs)
        assert r.status_code == 201, r.text
        return r.json()

    def job(self, job_id: str) -> dict:
        r = self.http.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, done: Callable[[dict], bool], timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while not done(job):
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} (epoch {job['epoch']})"
                                     f" after {timeout}s; error={job['error']}\n"
                                     f"{self.workers.logs()}")
            time.sleep(0.2)
            job = self.job(job_id)
        return job

    def server(self, **env: str) -> ApiServer:
        """Another API process on the same database and store (e.g. with another broker)."""
        srv = ApiServer(self.backend.store_dir, self.backend.root / f"api-{len(self.extra_servers)}"
                        ".log", {**self.backend.env, **env})
        self.extra_servers.append(srv)
        return srv


def finished(job: dict) -> bool:
    return job["status"] in TERMINAL


@pytest.fixture()
def stack(request: pytest.FixtureRequest, base_store: Path, dataset_zip: bytes,
          workers: WorkerPool) -> Iterator[Stack]:
    name = "backend" if "backend" in request.fixturenames else "embedded_backend"
    backend: JobBackend = request.getfixturevalue(name)
    shutil.copytree(base_store, backend.store_dir)
    backend.env.update({"TOONFORGE_RELOAD_POLL_S": "0.2", "TOONFORGE_JOB_EVENTS_POLL_S": "0.2",
                        "TOONFORGE_STARTER_MODELS": "false"})
    api = ApiServer(backend.store_dir, backend.root / "api.log", backend.env)
    http = api.client()
    s = Stack(backend, api, http, workers)
    r = http.post("/datasets", params={"task": "autoencode", "id": DATASET}, content=dataset_zip,
                  headers={"content-type": "application/zip"})
    assert r.status_code == 201, r.text
    yield s
    http.close()
    for srv in [api, *s.extra_servers]:
        srv.stop()


# ---------------------------------------------------------------- helpers


def read_sse(http: httpx.Client, job_id: str, last_event_id: int | None = None
             ) -> list[dict]:
    """Every message of the job's event stream until the server ends it."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    messages, current = [], {}
    with http.stream("GET", f"/jobs/{job_id}/events", headers=headers,
                     timeout=httpx.Timeout(120, read=30)) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if current:
                    messages.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
    return [{"id": int(m["id"]), "event": m["event"], "data": json.loads(m["data"])}
            for m in messages]


class Hammer:
    """Client threads calling the model's endpoint non-stop; records every answer."""

    def __init__(self, url: str, image: bytes, threads: int = 2) -> None:
        self.url, self.image = url, image
        self.results: list[tuple[int, str | None]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                try:
                    r = http.post("/autoencode", content=self.image,
                                  headers={"content-type": "image/png"})
                    self.results.append((r.status_code, r.headers.get("x-model-version")))
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                time.sleep(0.02)

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def wait_for_version(self, version: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(v == version for _, v in self.results[-20:]):
            assert time.monotonic() < deadline, f"{version} never served: {self.results[-5:]}"
            time.sleep(0.1)


def hooks_for(received: list[dict], job_id: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(r["body"]["id"] == job_id for r in received):
        time.sleep(0.05)
    return [r["event"] for r in received if r["body"]["id"] == job_id]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the whole path


def test_finetune_activates_and_serves_without_dropping_requests(
        backend: JobBackend, stack: Stack, face_png: bytes) -> None:
    stack.workers.start()
    with Hammer(stack.api.url, face_png) as hammer:
        hammer.wait_for_version(f"{MODEL}@1")
        created = stack.submit_ok(auto_activate=True, epochs=3)
        assert created["status"] == "queued" and created["total_epochs"] == 3
        job_id = created["id"]
        messages = read_sse(stack.http, job_id)  # follows the job to its end
        job = stack.job(job_id)
        assert job["status"] == "succeeded", (job["error"], stack.workers.logs())
        assert job["result_version"] == f"{MODEL}@2"
        gate = next(m["data"]["data"] for m in messages
                    if m["event"] == "log" and m["data"]["data"]["message"].startswith("gate"))
        # Three epochs on 13 faces from random weights do not reconstruct better than the
        # mean training image: the gate keeps the version inactive and says why.
        assert not job["activated"] and not gate["activated"], gate
        assert "mean training image" in gate["message"], gate
        assert gate["message"] == f"gate: {job['activation_reason']}"
        # The published (best) epoch's metrics are what the gate measured again.
        assert job["published_epoch"] in (1, 2, 3)
        assert job["published_metrics"]["loss"] == pytest.approx(gate["new"], rel=1e-5)
        # Activated by hand from another process: the API notices it and swaps.
        store_at(stack.backend.store_dir).activate(MODEL, 2)
        hammer.wait_for_version(f"{MODEL}@2")
        time.sleep(0.5)  # a few more requests on the new version
    assert hammer.errors == [] and hammer.results
    assert {status for status, _ in hammer.results} == {200}, hammer.results
    versions = [v for _, v in hammer.results]
    assert {f"{MODEL}@1", f"{MODEL}@2"} <= set(versions) and versions[-1] == f"{MODEL}@2"
    assert stack.http.get(f"/models/{MODEL}").json()["active"] == 2

    # The job's numbers: epochs, steps, losses, validation metrics, ETA done.
    assert (job["epoch"], job["total_epochs"]) == (3, 3)
    assert job["step"] == job["total_steps"] > 0 and job["eta_seconds"] is None  # ended: no ETA
    assert "loss" in job["val_metrics"] and job["losses"]
    listed = stack.http.get("/jobs", params={"status": "succeeded"}).json()
    assert [j["id"] for j in listed["jobs"]] == [job_id] and listed["total"] == 1

    check_event_stream(stack, job_id, messages)
    check_metrics_and_samples(stack, job_id, job)


def check_event_stream(stack: Stack, job_id: str, messages: list[dict]) -> None:
    ids = [m["id"] for m in messages]
    assert ids == sorted(set(ids)) and all(m["data"]["id"] == m["id"] for m in messages)
    assert [m["data"]["data"]["status"] for m in messages if m["event"] == "status"] == [
        "queued", "running", "exporting", "succeeded"]
    assert messages[-1]["event"] == "status"  # the stream ended after the terminal event
    progress = [m["data"]["data"] for m in messages if m["event"] == "progress"]
    steps = [p["step"] for p in progress]
    assert steps == sorted(steps) and len(progress) >= 3
    assert [p["epoch"] for p in progress if p["kind"] == "epoch"] == [1, 2, 3]
    assert any(m["event"] == "sample" for m in messages)

    middle = ids[len(ids) // 2]
    resumed = read_sse(stack.http, job_id, last_event_id=middle)
    assert [m["id"] for m in resumed] == [i for i in ids if i > middle]
    assert read_sse(stack.http, job_id, last_event_id=ids[-1]) == []  # nothing after the end


def check_metrics_and_samples(stack: Stack, job_id: str, job: dict) -> None:
    metrics = stack.http.get(f"/jobs/{job_id}/metrics").json()
    assert [p["epoch"] for p in metrics["points"]] == [1, 2, 3]
    assert all("loss" in p["val_metrics"] and p["losses"] for p in metrics["points"])
    assert metrics["points"][-1]["val_metrics"] == job["val_metrics"]

    samples = stack.http.get(f"/jobs/{job_id}/samples").json()
    assert [s["epoch"] for s in samples] == [1, 2, 3]
    stored = artifacts_at(stack.backend.store_dir)  # what the worker wrote, as stored
    for sample in samples:
        r = stack.http.get(sample["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == stored.sample_path(job_id, sample["name"]).read_bytes()
        assert r.content.startswith(b"\x89PNG") and len(r.content) == sample["bytes"]

    base = f"/jobs/{job_id}/samples/"
    for name in ("..%2Fcheckpoint.pt", "..%2F..%2F..%2Fmodels%2Ffaces-ae%2Factive",
                 "checkpoint.pt", ".hidden.png", "..png", "%2E%2E"):
        r = stack.http.get(base + name)
        assert r.status_code in (404, 422), (name, r.status_code, r.text)
        assert b"PNG" not in r.content[:8] and "pt" not in r.headers.get("content-type", "")
    r = stack.http.get(base + "missing_epoch_009.png")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "sample_not_found")


# ---------------------------------------------------------------- cancel


def test_cancel_queued_and_running_jobs(backend: JobBackend, stack: Stack,
                                        webhook: tuple[str, list[dict]]) -> None:
    url, received = webhook
    # No worker yet: the job stays queued and is cancelled at once, webhook included.
    queued = stack.submit_ok(webhook_url=url)
    r = stack.http.post(f"/jobs/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert hooks_for(received, queued["id"]) == ["job.cancelled"]
    again = stack.http.post(f"/jobs/{queued['id']}/cancel")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "job_conflict")
    assert [m["data"]["data"]["status"] for m in read_sse(stack.http, queued["id"])] == [
        "queued", "cancelled"]

    stack.workers.start()  # takes the cancelled job's message first, and leaves it alone
    running = stack.submit_ok(epochs=30, webhook_url=url)
    stack.wait(running["id"], lambda j: j["epoch"] >= 1)
    r = stack.http.post(f"/jobs/{running['id']}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"], r.text
    done = stack.wait(running["id"], finished)
    assert done["status"] == "cancelled" and 1 <= done["epoch"] < 30
    assert done["result_version"] is None
    # kept: the work is not thrown away
    assert artifacts_at(stack.backend.store_dir).has_checkpoint(running["id"])
    assert hooks_for(received, running["id"]) == ["job.cancelled"]
    assert hooks_for(received, queued["id"], timeout=0) == ["job.cancelled"]  # not twice
    assert stack.http.get(f"/models/{MODEL}").json()["versions"] == [1]


# ---------------------------------------------------------------- a lost worker


def test_killed_worker_job_resumes_through_the_api(embedded_backend: JobBackend,
                                                   stack: Stack) -> None:
    first = stack.workers.start("first")
    job = stack.submit_ok(epochs=12)
    reached = stack.wait(job["id"], lambda j: j["epoch"] >= 2)
    first.kill()
    assert stack.job(job["id"])["status"] == "running"  # nobody told the database

    stack.workers.start("second")  # reclaims it once the lease (3 s) has expired
    done = stack.wait(job["id"], finished)
    assert done["status"] == "succeeded", done["error"]
    assert (done["attempts"], done["epoch"], done["result_version"]) == (2, 12, f"{MODEL}@2")
    # Exactly one new version: the lost attempt published nothing, the resumed one once.
    assert stack.http.get(f"/models/{MODEL}").json()["versions"] == [1, 2]

    messages = read_sse(stack.http, job["id"])
    statuses = [m["data"]["data"]["status"] for m in messages if m["event"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "exporting", "succeeded"]
    attempts = [m["data"]["data"] for m in messages
                if m["event"] == "log" and "attempt" in m["data"]["data"]]
    assert [a["resumed_from_checkpoint"] for a in attempts] == [False, True]
    second_run = [m["id"] for m in messages if m["event"] == "status"
                  and m["data"]["data"]["status"] == "running"][1]
    resumed = next(m["data"]["data"] for m in messages
                   if m["id"] > second_run and m["event"] == "progress")
    assert resumed["epoch"] >= reached["epoch"] >= 2  # from the checkpoint, not from zero
    metrics = stack.http.get(f"/jobs/{job['id']}/metrics").json()
    epochs = [p["epoch"] for p in metrics["points"]]
    # (an epoch whose end the kill interrupted between checkpoint and event has no point)
    assert epochs == sorted(set(epochs)) and {1, 2, 12} <= set(epochs)


# ---------------------------------------------------------------- requests that cannot run


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


def test_job_requests_that_cannot_run(backend: JobBackend, stack: Stack) -> None:
    hp = {"epochs": 2, "batch_size": 4}
    typo = error_of(stack.submit(hyperparameters={**hp, "learning_rate": 0.1}), 422)
    assert typo["code"] == "invalid_parameter" and "hyperparameters.learning_rate" in typo[
        "message"]
    assert typo["details"]["errors"][0]["loc"] == ["body", "hyperparameters", "learning_rate"]
    bad = error_of(stack.submit(hyperparameters={**hp, "epochs": 0}), 422)
    assert "hyperparameters.epochs" in bad["message"]
    assert "webhook" in error_of(stack.submit(webhook="http://x"), 422)["message"]
    for field_name, overrides in [
        ("dataset_id", {"dataset_id": "no-such-dataset"}),
        ("dataset_id", {"task": "matte", "base": "matte", "target_model": "matte"}),
        ("base", {"base": "nope@3"}),
        ("base", {"base": f"{MODEL}@9"}),
    ]:
        error = error_of(stack.submit(**overrides), 422)
        assert error["message"].startswith(field_name), (overrides, error)
        assert error["details"]["errors"][0]["loc"] == ["body", field_name]
    assert stack.http.get("/jobs").json()["total"] == 0  # none of them was recorded

    # Idempotency: the same key and body answer the same job; another body is a conflict.
    first = stack.submit(key="k-1")
    assert first.status_code == 201, first.text
    replay = stack.submit(key="k-1")
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert error_of(stack.submit(key="k-1", epochs=5), 409)["code"] == "idempotency_conflict"
    job_id = first.json()["id"]

    # The broker is down: 503, and nothing is written.
    down = stack.server(TOONFORGE_BROKER_URL=f"redis://127.0.0.1:{closed_port()}/0",
                        TOONFORGE_BROKER_CONNECT_TIMEOUT_S="1")
    with down.client() as other:
        started = time.monotonic()
        r = other.post("/jobs/finetune", json={
            "task": "autoencode", "dataset_id": DATASET, "base": MODEL, "target_model": MODEL})
        assert time.monotonic() - started < 15
        assert error_of(r, 503)["code"] == "broker_unavailable"
        assert [j["id"] for j in other.get("/jobs").json()["jobs"]] == [job_id]

    # A dataset a queued job uses cannot be deleted; once the job is cancelled it can.
    assert error_of(stack.http.delete(f"/datasets/{DATASET}"), 409)["code"] == "dataset_conflict"
    # Lists: filters, pages, newest first.
    second, third = stack.submit_ok(), stack.submit_ok()
    assert stack.http.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    page = stack.http.get("/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["jobs"]] == [third["id"], second["id"]] and page["total"] == 3
    rest = stack.http.get("/jobs", params={"limit": 2, "offset": 2}).json()
    assert [j["id"] for j in rest["jobs"]] == [job_id]
    queued = stack.http.get("/jobs", params={"status": "queued", "task": "autoencode"}).json()
    assert {j["id"] for j in queued["jobs"]} == {second["id"], third["id"]}
    assert stack.http.get("/jobs", params={"task": "matte"}).json()["total"] == 0
    assert stack.http.get("/jobs", params={"status": "paused"}).status_code == 422
    for jid in (second["id"], third["id"]):
        stack.http.post(f"/jobs/{jid}/cancel")
    assert stack.http.delete(f"/datasets/{DATASET}").status_code == 204

    for path in ("/jobs/nope", "/jobs/nope/events", "/jobs/nope/metrics", "/jobs/nope/samples"):
        assert error_of(stack.http.get(path), 404)["code"] == "job_not_found"
    assert error_of(stack.http.post("/jobs/nope/cancel"), 404)["code"] == "job_not_found"


# ---------------------------------------------------------------- compose topology, natively


@pytest.mark.parametrize("backend", ["redis-postgres"], indirect=True)
def test_compose_topology_runs_a_finetune(backend: JobBackend, stack: Stack,
                                          face_png: bytes) -> None:
    """The one-host topology as native processes: Redis, PostgreSQL, two API replicas on
    one shared store directory, one worker (docker-compose.yml's S3 variant, each process
    with its own cache, is tests/integration/test_topology_s3.py). The job enters through
    one replica; when its version goes live both replicas serve it, with no failed
    request on either."""
    assert backend.env["TOONFORGE_BROKER_URL"].startswith("redis://")
    assert backend.env["TOONFORGE_DATABASE_URL"].startswith("postgresql")
    replica_b = stack.server()
    stack.workers.start()
    with Hammer(stack.api.url, face_png) as on_a, Hammer(replica_b.url, face_png) as on_b:
        on_a.wait_for_version(f"{MODEL}@1")
        on_b.wait_for_version(f"{MODEL}@1")
        with replica_b.client() as http_b:
            created = http_b.post("/jobs/finetune", json={
                "task": "autoencode", "dataset_id": DATASET, "base": MODEL,
                "target_model": MODEL, "auto_activate": True,
                "hyperparameters": {"epochs": 3, "batch_size": 4,
                                    "early_stop_patience": None}})
            assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        # The row lives in PostgreSQL, so replica A streams a job replica B created.
        statuses = [m["data"]["data"]["status"] for m in read_sse(stack.http, job_id)
                    if m["event"] == "status"]
        assert statuses[-1] == "succeeded", (statuses, stack.workers.logs())
        job = stack.job(job_id)
        # Not better than the mean image (the gate's trivial bar): activated by hand.
        assert job["result_version"] == f"{MODEL}@2" and not job["activated"], job
        assert "mean training image" in job["activation_reason"], job
        store_at(stack.backend.store_dir).activate(MODEL, 2)
        on_a.wait_for_version(f"{MODEL}@2")
        on_b.wait_for_version(f"{MODEL}@2")
    for hammer in (on_a, on_b):
        assert hammer.errors == []
        assert {status for status, _ in hammer.results} == {200}
