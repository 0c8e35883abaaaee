"""Experiment tracking (worker/training/tracking.py) against a real ``mlflow server``
subprocess on loopback, with fine-tune jobs run by a real ``python -m worker`` behind the
real API: one MLflow run per job (parameters, one metric point per epoch, the samples as
artifacts, the final status), the job's link to it over HTTP, TensorBoard event files read
back with tensorboard's own reader, a redelivered or resumed job continuing its run, and a
tracking server that is down leaving the job alone.

One MLflow server (its start is the slow part, ~10 s) serves the whole module; each case
uses an experiment of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import IN_CI
from tests.integration.conftest import FAST_JOBS
from tests.support.archives import zip_folder
from tests.support.processes import WorkerPool
from tests.support.server import ApiServer

pytestmark = pytest.mark.timeout(240)

MLFLOW = Path(sys.executable).with_name("mlflow")
# Never ask mlflow.org for anything (telemetry), in the server or in this process's client.
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
DATASET = "faces"
EPOCHS = 2
TERMINAL = ("succeeded", "failed", "cancelled")
# The browser of tests/e2e/test_web.py (Debian's chromium, never `playwright install`).
CHROMIUM = os.environ.get("TOONFORGE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- shared, started once


class MlflowServer:
    """``mlflow server`` on a free loopback port; artifacts are proxied by it
    (``mlflow-artifacts:``), so the worker uploads over HTTP as it would to a server on
    another host. It starts in the background: ``wait()`` before the first request."""

    def __init__(self, root: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = root / "server.log"
        env = {**os.environ, **NO_TELEMETRY,
               # no background job runner (7 huey processes) for a tracking-only server
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(MLFLOW), "server", "--backend-store-uri",
                 f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
                 str(root / "artifacts"), "--host", "127.0.0.1",
                 "--port", urlsplit(self.url).netloc.rpartition(":")[2], "--workers", "1"],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.ready = False

    def wait(self, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.ready:
            assert self.proc.poll() is None, f"mlflow server exited:\n{self.log()}"
            try:
                self.ready = httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /health:\n{self.log()}"
            time.sleep(0.2)
        return self.url

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        try:  # the whole group: the server and its uvicorn worker
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    if not MLFLOW.exists():
        message = f"{MLFLOW} not installed (pip install toonforge[tracking])"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    os.environ.update(NO_TELEMETRY)  # this process's MLflow client too
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_url(mlflow_server: MlflowServer) -> str:
    return mlflow_server.wait()


@pytest.fixture(scope="module")
def client(mlflow_url: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_url)


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tasks.synthetic import make_dataset

    return zip_folder(make_dataset("autoencode", tmp_path_factory.mktemp("faces"), n=12))


class Stack:
    """The API and one worker, with the worker's tracking settings in ``tracking_env``."""

    def __init__(self, root: Path, dataset_zip: bytes, tracking_env: dict[str, str]) -> None:
        self.env = {"TOONFORGE_DATA_DIR": str(root / "data"),
                    "TOONFORGE_STORE_DIR": str(root / "store"),
                    "TOONFORGE_JOB_QUEUE": f"toonforge-test-{uuid.uuid4().hex[:12]}",
                    "TOONFORGE_STARTER_MODELS": "false", "TOONFORGE_INT8_VARIANTS": "false",
                    **FAST_JOBS, **NO_TELEMETRY}
        self.workers = WorkerPool({**self.env, **tracking_env}, root / "logs")
        self.workers.start(wait=False)  # its torch import overlaps the API's start
        self.api = ApiServer(root / "store", root / "api.log", self.env)
        self.http = self.api.client()
        r = self.http.post("/datasets", params={"task": "autoencode", "id": DATASET},
                           content=dataset_zip, headers={"content-type": "application/zip"})
        assert r.status_code == 201, r.text
        self.workers.workers[0].wait_ready()

    def run_job(self) -> dict:
        r = self.http.post("/jobs/finetune", json={
            "task": "autoencode", "dataset_id": DATASET, "base": "ae", "target_model": "ae-t",
            "hyperparameters": {"epochs": EPOCHS, "batch_size": 4, "latent_dim": 32,
                                "early_stop_patience": None}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 120
        while (job := self.http.get(f"/jobs/{job_id}").json())["status"] not in TERMINAL:
            assert time.monotonic() < deadline, f"job {job_id} {job['status']}\n{self.logs()}"
            time.sleep(0.2)
        assert job["status"] == "succeeded", (job["error"], self.logs())
        return job

    def logs(self) -> str:
        return self.workers.logs()

    def close(self) -> None:
        self.http.close()
        self.api.stop()
        self.workers.stop_all()


def only_run(client: Any, experiment: str) -> Any:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def finished_run(client: Any, experiment: str) -> Any:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found is not None else []
    return runs[0] if len(runs) == 1 and runs[0].info.status != "RUNNING" else None


def wait_for(probe: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def steps(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ---------------------------------------------------------------- through a real worker


@dataclass
class TrackedJob:
    """One job run by a worker that tracks to the module's MLflow server and TensorBoard."""

    stack: Stack
    client: Any
    mlflow_url: str
    job: dict
    run: Any
    tb_dir: Path


@pytest.fixture(scope="module")
def tracked(mlflow_server: MlflowServer, dataset_zip: bytes,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackedJob]:
    root = tmp_path_factory.mktemp("tracked")
    experiment, tb_dir = f"e2e-{uuid.uuid4().hex[:8]}", root / "tensorboard"
    # The API and the worker start while the MLflow server does.
    stack = Stack(root, dataset_zip, {"TOONFORGE_MLFLOW_TRACKING_URI": mlflow_server.url,
                                      "TOONFORGE_MLFLOW_EXPERIMENT": experiment,
                                      "TOONFORGE_TENSORBOARD_DIR": str(tb_dir)})
    try:
        mlflow_url = mlflow_server.wait()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_url)
        job_id = stack.run_job()["id"]
        # The job's row is final before its tracker has sent the end of the run (the worker
        # flushes it right after): wait for both.
        run = wait_for(lambda: finished_run(client, experiment), "the run to finish")
        job = wait_for(lambda: (j := stack.http.get(f"/jobs/{job_id}").json())["tracking"]
                       and j, "the job's link")
        yield TrackedJob(stack, client, mlflow_url, job, run, tb_dir)
    finally:
        stack.close()


def test_a_job_logs_one_run_and_links_it(tracked: TrackedJob, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stack, client, mlflow_url = tracked.stack, tracked.client, tracked.mlflow_url
    job, run, tb_dir = tracked.job, tracked.run, tracked.tb_dir
    job_id = job["id"]
    points = stack.http.get(f"/jobs/{job_id}/metrics").json()["points"]
    samples = stack.http.get(f"/jobs/{job_id}/samples").json()
    sample_bytes = stack.http.get(samples[-1]["url"]).content
    shown = subprocess.run([str(Path(sys.executable).with_name("toonforge")), "jobs", "show",
                            job_id], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "TOONFORGE_URL": stack.api.url})

    run_id = run.info.run_id
    # Named and tagged after the job; its hyper-parameters (defaults included) as parameters.
    assert run.info.run_name == job_id
    tags = run.data.tags
    assert {k: tags[k] for k in ("job_id", "task", "target_model", "base", "dataset_id",
                                 "attempt", "jobs")} == {
        "job_id": job_id, "task": "autoencode", "target_model": "ae-t", "base": "ae",
        "dataset_id": DATASET, "attempt": "1", "jobs": job_id}
    params = run.data.params
    assert (params["epochs"], params["batch_size"], params["latent_dim"]) == (
        str(EPOCHS), "4", "32")
    assert params["early_stop_patience"] == "null" and "lr" in params and "seed" in params
    # One point per epoch, at step = epoch, equal to what the job itself recorded.
    assert [p["epoch"] for p in points] == list(range(1, EPOCHS + 1))
    val = steps(client, run_id, "val/loss")
    assert [s for s, _ in val] == [p["epoch"] for p in points]
    assert [v for _, v in val] == pytest.approx([p["val_metrics"]["loss"] for p in points])
    train = steps(client, run_id, "train/loss")
    assert [v for _, v in train] == pytest.approx([p["losses"]["loss"] for p in points])
    assert [s for s, _ in steps(client, run_id, "lr/main")] == [1, 2]
    # The epoch's samples, as artifacts, byte for byte what the API serves.
    artifacts = {f.path for f in client.list_artifacts(run_id, "samples")}
    assert artifacts == {f"samples/{s['name']}" for s in samples}
    assert len(artifacts) == EPOCHS
    downloaded = client.download_artifacts(run_id, f"samples/{samples[-1]['name']}",
                                           str(tmp_path / "dl"))
    assert Path(downloaded).read_bytes() == sample_bytes
    # The end: MLflow's status, and the job's own (gate, published version) as tags.
    assert run.info.status == "FINISHED"
    assert tags["final_status"] == "succeeded" and tags["result_version"] == job[
        "result_version"] == "ae-t@1"
    assert tags["activated"] == str(job["activated"]).lower()
    assert tags["published_epoch"] == str(job["published_epoch"])
    published = steps(client, run_id, "published/loss")
    assert published == [(job["published_epoch"],
                          pytest.approx(job["published_metrics"]["loss"]))]

    # GET /jobs/{id} links to the run, and the link resolves on the server.
    tracking = job["tracking"]
    assert tracking["mlflow_run_id"] == run_id
    assert tracking["mlflow_experiment_id"] == run.info.experiment_id
    url = tracking["mlflow_run_url"]
    assert url == f"{mlflow_url}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    parts = urlsplit(url)
    page = httpx.get(f"{parts.scheme}://{parts.netloc}{parts.path}", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    _, experiment_id, _, linked_run = parts.fragment.strip("/").split("/")
    got = httpx.get(f"{mlflow_url}/api/2.0/mlflow/runs/get", params={"run_id": linked_run},
                    timeout=10).json()["run"]["info"]
    assert (got["run_id"], got["experiment_id"]) == (run_id, experiment_id)
    assert shown.returncode == 0 and f"MLflow run: {url}" in shown.stdout, shown

    # TensorBoard: <dir>/<job_id>/ holds the same epoch scalars.
    events = EventAccumulator(str(tb_dir / job_id))
    events.Reload()
    assert {"train/loss", "val/loss", "lr/main"} <= set(events.Tags()["scalars"])
    tb_val = [(e.step, e.value) for e in events.Scalars("val/loss")]
    assert [s for s, _ in tb_val] == [1, 2]
    assert [v for _, v in tb_val] == pytest.approx([v for _, v in val], rel=1e-6)


def test_the_web_page_links_the_job_to_its_run(tracked: TrackedJob) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"playwright is not installed: {exc}")
        pytest.skip(f"playwright is not installed: {exc}")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        if IN_CI:
            pytest.fail(f"no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    job = tracked.job
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(tracked.stack.api.url + "/")
            page.click(f"#jobs-table tr[data-job-id='{job['id']}']")
            link = page.wait_for_selector("#job-detail #job-tracking")
            assert link is not None
            assert link.get_attribute("href") == job["tracking"]["mlflow_run_url"]
            assert link.inner_text() == f"MLflow run {job['tracking']['mlflow_run_id'][:8]}"
            assert errors == []
        finally:
            browser.close()


def test_a_dead_tracking_server_does_not_fail_the_job(dataset_zip: bytes,
                                                     tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    stack = Stack(tmp_path, dataset_zip, {"TOONFORGE_MLFLOW_TRACKING_URI": dead})
    try:
        job = stack.run_job()  # asserts it succeeded
        logs = wait_for(lambda: "mlflow tracking failed" in (text := stack.logs()) and text,
                        "the tracking warning")
    finally:
        stack.close()
    assert job["tracking"] is None and job["result_version"] == "ae-t@1"
    assert job["epoch"] == EPOCHS
    assert f"job {job['id']}: mlflow tracking failed at start" in logs, logs[-3000:]
    assert "which goes on" in logs


# ---------------------------------------------------------------- continuing a run


def _record(job_id: str, *, attempts: int = 1, resumed_from: str | None = None,
            tracking: dict | None = None, status: str = "running") -> Any:
    from jobs.records import JobRecord

    return JobRecord(id=job_id, task="autoencode", status=status, dataset_id=DATASET,
                     base="ae", target_model="ae-t", hyperparameters={"epochs": 4},
                     attempts=attempts, resumed_from=resumed_from, tracking=tracking,
                     activated=False)


def _attempt(settings: Any, job: Any, epochs: range, sample_dir: Path,
             final_status: str | None) -> dict:
    """One attempt of ``job`` on a worker: its tracker hears ``epochs`` and the end."""
    from worker.training import tracking
    from worker.training.trainers.context import ProgressEvent

    links: list[dict] = []
    tracker = tracking.JobTracker(tracking.JobInfo.from_record(job),
                                  tracking.build_sinks(settings), links.append)
    with tracker:
        on_progress = tracking.listen(lambda event: None)
        for epoch in epochs:
            sample = sample_dir / f"autoencode_epoch_{epoch:03d}.png"
            sample.write_bytes(b"png %d" % epoch)
            on_progress(ProgressEvent("epoch", epoch, 4, epoch * 3, 12, {"loss": 1 / epoch},
                                      {"loss": 2 / epoch}, [sample], {"main": 1e-3}))
        if final_status is not None:
            job.status = final_status
            tracker.finish(job)
    assert len(links) == 1, links
    return links[0]


def test_redelivered_and_resumed_jobs_continue_one_run(mlflow_url: str, client: Any,
                                                       tmp_path: Path) -> None:
    from core.settings import Settings

    experiment = f"resume-{uuid.uuid4().hex[:8]}"
    settings = Settings(mlflow_tracking_uri=mlflow_url, mlflow_experiment=experiment)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    # Attempt 1 is lost after epoch 1 (no terminal state): the run stays open.
    link = _attempt(settings, _record(first), range(1, 2), tmp_path, None)
    run = client.get_run(link["mlflow_run_id"])
    assert run.info.status == "RUNNING" and "final_status" not in run.data.tags
    # Attempt 2, redelivered with the run id on its row: the same run, epoch 2, cancelled.
    again = _attempt(settings, _record(first, attempts=2, tracking=link), range(2, 3),
                     tmp_path, "cancelled")
    assert again == link
    run = client.get_run(link["mlflow_run_id"])
    assert (run.info.status, run.data.tags["final_status"]) == ("KILLED", "cancelled")
    assert run.data.tags["attempt"] == "2"
    # Attempt 3 of the same job with no run id on its row (its link was never recorded):
    # found by its tag, not a second run.
    assert _attempt(settings, _record(first, attempts=3), range(2, 2), tmp_path,
                    "cancelled") == link
    # A job resumed from it (POST /jobs/{id}/resume) continues the run to the end; while
    # it runs, the run no longer says it was cancelled.
    resumed = _attempt(settings, _record(second, resumed_from=first), range(3, 5), tmp_path,
                       None)
    assert resumed["mlflow_run_id"] == link["mlflow_run_id"]
    run = client.get_run(link["mlflow_run_id"])
    assert run.info.status == "RUNNING" and "final_status" not in run.data.tags
    resumed = _attempt(settings, _record(second, attempts=2, resumed_from=first,
                                         tracking=resumed), range(5, 5), tmp_path, "succeeded")
    assert resumed["mlflow_run_id"] == link["mlflow_run_id"]
    run = only_run(client, experiment)
    assert run.info.status == "FINISHED" and run.info.run_name == first
    assert (run.data.tags["final_status"], run.data.tags["attempt"]) == ("succeeded", "2")
    assert run.data.tags["jobs"] == f"{first} {second}"
    assert (run.data.tags["job_id"], run.data.tags["resumed_from"]) == (second, first)
    assert run.data.params["epochs"] == "4"
    assert [s for s, _ in steps(client, run.info.run_id, "val/loss")] == [1, 2, 3, 4]
    names = {f.path for f in client.list_artifacts(run.info.run_id, "samples")}
    assert names == {f"samples/autoencode_epoch_{e:03d}.png" for e in range(1, 5)}


@pytest.fixture(autouse=True)
def _no_stray_spool() -> Iterator[None]:
    """Every tracker removes its copies of the samples."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    before = set(tmp.glob("toonforge-tracking-*"))
    yield
    left = set(tmp.glob("toonforge-tracking-*")) - before
    for path in left:
        shutil.rmtree(path, ignore_errors=True)
    assert not left, left


def test_the_link_names_the_ui_without_credentials() -> None:
    from worker.training.tracking_sinks import flatten, run_url, short

    assert run_url("https://bob:s3cret@mlflow.example:5000/ml/", "3", "abc") == (
        "https://mlflow.example:5000/ml/#/experiments/3/runs/abc")
    assert run_url("http://[::1]:5000", "1", "r") == "http://[::1]:5000/#/experiments/1/runs/r"
    assert run_url("sqlite:///mlflow.db", "1", "r") is None
    assert run_url("file:///tmp/mlruns", "1", "r") is None
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": "x", "f": {}}) == {
        "a.b": "1", "a.c": "[1, 2]", "d": "null", "e": "x", "f": "{}"}
    assert short(RuntimeError("GET http://bob:s3cret@mlflow.example/api failed")) == (
        "GET http://mlflow.example/api failed")
