"""Metrics, request ids and structured logs of the API, over real HTTP."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from jobs.db import Database
from jobs.records import JobRecord, utcnow
from model_store.files import MAIN_GRAPH
from model_store.store import ModelStore
from service.metrics import JobsCollector
from tests.api.conftest import encode
from tests.api.tiny_models import publish_tiny
from tests.support.server import ApiServer

HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def server(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """Batching on (so the batch-size histogram is fed); a job database of its own."""
    logs = tmp_path_factory.mktemp("observability")
    server = ApiServer(tiny_store, logs / "server.log",
                       {"TOONFORGE_BATCHING": "true", "TOONFORGE_DATA_DIR": str(logs / "data")})
    yield server
    server.stop()


@pytest.fixture()
def http(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(Image.new("RGB", (40, 30), (200, 120, 40)))


def scrape(http: httpx.Client) -> dict[str, list]:
    """Every sample of /metrics by family name (counters without their _total)."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples
            for family in text_string_to_metric_families(response.text)}


def value(families: dict[str, list], sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` whose labels include ``labels``."""
    return sum(s.value for samples in families.values() for s in samples
               if s.name == sample and labels.items() <= s.labels.items())


def activate_the_other_version(http: httpx.Client, request_id: str) -> int:
    current = http.get("/models/matte").json()["active"]
    other = 2 if current == 1 else 1
    response = http.post("/models/matte/activate", json={"version": other},
                         headers={"X-Request-ID": request_id})
    assert response.status_code == 200, response.text
    return other


def matte(http: httpx.Client, photo: bytes, **headers: str) -> httpx.Response:
    response = http.post("/matte", content=photo,
                         headers={"content-type": "image/png", **headers})
    assert response.status_code == 200, response.text
    return response


def test_a_request_is_counted_by_route_and_model_version(http: httpx.Client,
                                                          photo: bytes) -> None:
    served = matte(http, photo).headers["x-model-version"]
    labels = {"route": "/matte", "method": "POST", "status": "200", "model_version": served}
    before = value(scrape(http), "toonforge_http_requests_total", **labels)

    matte(http, photo)
    families = scrape(http)
    assert value(families, "toonforge_http_requests_total", **labels) == before + 1
    buckets = [s for s in families["toonforge_http_request_duration_seconds"]
               if s.name.endswith("_bucket") and labels.items() <= s.labels.items()]
    assert {s.labels["le"] for s in buckets} >= {"0.005", "0.1", "1.0", "+Inf"}
    assert value(families, "toonforge_http_request_duration_seconds_count",
                 **labels) == before + 1
    # The scrape itself is in flight while it is answered.
    assert value(families, "toonforge_http_requests_in_flight") >= 1
    # Routes without a model have an empty model_version; labels use the template.
    http.get("/models/matte")
    families = scrape(http)
    assert value(families, "toonforge_http_requests_total", route="/models/{name}",
                 status="200", model_version="") >= 1
    assert not any(s.labels.get("route") == "/models/matte"
                   for s in families["toonforge_http_requests"])


def test_batching_queues_and_jobs_are_reported(http: httpx.Client, photo: bytes) -> None:
    served = matte(http, photo).headers["x-model-version"]
    families = scrape(http)
    assert value(families, "toonforge_batch_size_count", model_version=served,
                 graph="main") >= 1
    assert value(families, "toonforge_batch_size_sum", model_version=served,
                 graph="main") >= 1
    depths = [s for s in families["toonforge_batcher_queue_depth"]
              if s.labels == {"model_version": served, "graph": "main"}]
    assert [s.value for s in depths] == [0.0]
    assert value(families, "toonforge_pool_requests_waiting") == 0
    assert "toonforge_pool_requests_active" in families
    assert value(families, "toonforge_jobs_scrape_error") == 0
    statuses = {s.labels["status"]: s.value for s in families["toonforge_jobs"]}
    assert statuses["queued"] == 0 and set(statuses) >= {"running", "succeeded", "failed"}
    assert "process_cpu_seconds_total" in {s.name for f in families.values() for s in f}


def test_reload_counter_follows_activation(http: httpx.Client, photo: bytes) -> None:
    families = scrape(http)
    before = value(families, "toonforge_model_reloads_total", model="matte")
    failures = value(families, "toonforge_model_reload_failures_total", model="matte")
    other = activate_the_other_version(http, "activate-obs-1")
    families = scrape(http)
    assert value(families, "toonforge_model_reloads_total", model="matte") == before + 1
    assert value(families, "toonforge_model_reload_failures_total",
                 model="matte") == failures
    assert matte(http, photo).headers["x-model-version"] == f"matte@{other}"


@pytest.mark.local_store_only("damages a version in the running server's store directory")
def test_failed_loads_are_counted(server: ApiServer, http: httpx.Client,
                                  tiny_store: Path) -> None:
    store = ModelStore(tiny_store)
    broken = publish_tiny(store, "matte", seed=7, activate=False)
    graph = store.version_dir("matte", broken) / MAIN_GRAPH
    graph.chmod(0o644)
    with graph.open("ab") as fh:
        fh.write(b"tampered")
    failures = value(scrape(http), "toonforge_model_reload_failures_total", model="matte")
    refused = http.post("/models/matte/activate", json={"version": broken})
    # Refused by the store's hash check before any load is tried: nothing to count.
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "version_corrupt"
    assert value(scrape(http), "toonforge_model_reload_failures_total",
                 model="matte") == failures
    # The pointer moved behind the server's back (written by hand: every toonforge path
    # verifies): the watcher fails to load it, and counts it.
    serving = store.active_version("matte")
    store.active_path("matte").write_text(f"{broken}\n")
    try:
        deadline = time.monotonic() + 10
        while value(scrape(http), "toonforge_model_reload_failures_total",
                    model="matte") < failures + 1:
            assert time.monotonic() < deadline, "the watcher's failure was not counted"
            time.sleep(0.1)
    finally:
        store.activate("matte", serving)


def test_request_id_is_echoed_generated_or_replaced(http: httpx.Client) -> None:
    given = http.get("/healthz", headers={"X-Request-ID": "client-abc.123:x"})
    assert given.headers["x-request-id"] == "client-abc.123:x"
    generated = http.get("/healthz")
    assert HEX32.fullmatch(generated.headers["x-request-id"])
    for bad in ("has spaces", "x" * 200, '{"forged":1}', "-leading-dash"):
        replaced = http.get("/healthz", headers={"X-Request-ID": bad})
        assert HEX32.fullmatch(replaced.headers["x-request-id"]), bad
    # Errors carry it too, and each request gets its own.
    missing = http.get("/models/no-such-model")
    assert missing.status_code == 404 and HEX32.fullmatch(missing.headers["x-request-id"])
    assert missing.headers["x-request-id"] != generated.headers["x-request-id"]


def log_lines(server: ApiServer) -> list[dict]:
    text = server.log()
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return parsed


def test_log_lines_are_json_and_carry_the_request_id(server: ApiServer, http: httpx.Client,
                                                     photo: bytes) -> None:
    matte(http, photo, **{"X-Request-ID": "obs-log-42"})
    activated = activate_the_other_version(http, "activate-obs-2")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = log_lines(server)
        if any(line.get("request_id") == "activate-obs-2" for line in lines):
            break
        time.sleep(0.05)
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys(), line
    tagged = [line for line in lines if line.get("request_id") == "obs-log-42"]
    assert any(line["logger"] == "uvicorn.access" and "/matte" in line["message"]
               for line in tagged), tagged
    # The activation loaded the version in the pool's loader thread: the request id
    # crossed the thread hop.
    loads = [line for line in lines if line["logger"] == "service.inference.sessions"
             and line["message"].startswith("loaded matte@")]
    assert any(line.get("request_id") == "activate-obs-2"
               and line["message"].startswith(f"loaded matte@{activated} ") for line in loads)
    startup = [line for line in loads if "request_id" not in line]
    assert startup, "the loads at start-up belong to no request"


# ---------------------------------------------------------------- the jobs collector alone


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def collect(collector: JobsCollector) -> dict[str, list]:
    return {family.name: family.samples for family in collector.collect()}


def test_jobs_collector_reads_statuses_and_heartbeats(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.create_schema()
    now = utcnow()
    common = {"task": "autoencode", "dataset_id": "d", "base": "ae", "target_model": "m",
              "request_hash": "h"}
    with Session(db.engine) as session:
        session.add_all([
            JobRecord(id="a", status="queued", **common),
            JobRecord(id="b", status="queued", **common),
            JobRecord(id="c", status="running", worker_id="w1", heartbeat_at=now, **common),
            JobRecord(id="d", status="succeeded", worker_id="w1",
                      heartbeat_at=now - timedelta(minutes=5), **common),
            JobRecord(id="e", status="failed", worker_id="old",
                      heartbeat_at=now - timedelta(days=3), **common),
        ])
        session.commit()
    families = collect(JobsCollector(db.url))
    assert [s.value for s in families["toonforge_jobs_scrape_error"]] == [0]
    jobs = {s.labels["status"]: s.value for s in families["toonforge_jobs"]}
    assert jobs == {"queued": 2, "running": 1, "exporting": 0, "succeeded": 1, "failed": 1,
                    "cancelled": 0}
    beats = {s.labels["worker_id"]: s.value
             for s in families["toonforge_worker_last_heartbeat_timestamp_seconds"]}
    assert beats.keys() == {"w1"}  # "old" is outside the window
    assert beats["w1"] == pytest.approx(now.timestamp(), abs=1e-3)
    db.dispose()


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://nobody@127.0.0.1:{port}/nothing",
    "sqlite:///{missing}/jobs.db",
])
def test_jobs_collector_reports_an_unreachable_database(tmp_path: Path, url: str) -> None:
    collector = JobsCollector(url.format(port=_closed_port(), missing=tmp_path / "no" / "dir"))
    started = time.monotonic()
    families = collect(collector)
    assert time.monotonic() - started < 5
    assert [s.value for s in families["toonforge_jobs_scrape_error"]] == [1]
    assert "toonforge_jobs" not in families
