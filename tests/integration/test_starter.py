"""Starter models: a first start with an empty store trains every task's default model on
synthetic data through ordinary jobs, and the API then serves all five."""

from __future__ import annotations

import time

import httpx
import pytest

from model_store.datasets import DatasetStore
from model_store.store import ModelStore
from tasks import task_specs
from tests.integration.conftest import JobBackend
from tests.support.processes import WorkerPool
from tests.support.server import ApiServer
from worker.runtime import WorkerRuntime
from worker.starter import queue_starter_jobs

pytestmark = pytest.mark.local_store_only(
    "reads the starter's datasets and versions in the store directory")

# Every registered task with a starter recipe trains its default model on first start.
STARTED = [spec for spec in task_specs() if spec.starter is not None]
DEFAULT_MODELS = {spec.name: spec.default_model for spec in STARTED}


def test_starter_jobs_are_queued_once(embedded_backend: JobBackend) -> None:
    runtime = WorkerRuntime.create(embedded_backend.settings(starter_models=True))
    first = queue_starter_jobs(runtime)
    assert len(first) == len(STARTED) == 5
    assert queue_starter_jobs(runtime) == first  # idempotent: a second worker adds nothing
    jobs = [runtime.repo.get(job_id) for job_id in first]
    assert {j.target_model for j in jobs} == set(DEFAULT_MODELS.values())
    assert all(j.status == "queued" and j.auto_activate for j in jobs)
    metas = DatasetStore(runtime.store_root).list_datasets()
    assert len(metas) == len(STARTED) and all(m.synthetic for m in metas)

    off = WorkerRuntime.create(embedded_backend.settings(starter_models=False))
    assert queue_starter_jobs(off) == []


# The starters whose synthetic data a few epochs learn well enough to beat the gate's trivial
# predictor on 2 CPU cores. matte is not among them: u2netp from scratch on 32 drawn images
# stays worse than an all-background mask within a starter's budget, so its job succeeds
# and the version stays inactive, with the reason on the job (the gate working as meant).
EXPECTED_ACTIVE = {"cartoonize", "classify", "generate", "autoencode"}


@pytest.mark.timeout(1000)
def test_first_start_trains_and_serves_every_task(
    embedded_backend: JobBackend, workers: WorkerPool
) -> None:
    workers.env = {**workers.env, "TOONFORGE_STARTER_MODELS": "true"}
    workers.start()
    runtime = WorkerRuntime.create(embedded_backend.settings())
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        jobs = runtime.repo.list(limit=20)
        if len(jobs) == len(STARTED) and all(j.status in ("succeeded", "failed") for j in jobs):
            break
        time.sleep(2)
    else:
        raise AssertionError(f"starter jobs not finished\n{workers.logs()}")
    by_task = {j.task: j for j in jobs}
    assert all(j.status == "succeeded" for j in jobs), {t: j.error for t, j in by_task.items()}
    for task, job in by_task.items():
        assert job.published_epoch is not None and job.activation_reason, task
        if task in EXPECTED_ACTIVE:
            assert job.activated, f"{task}: {job.activation_reason}"
        else:
            assert not job.activated and "trivial predictor" in job.activation_reason

    store = ModelStore(embedded_backend.store_dir)
    for model in DEFAULT_MODELS.values():
        lineage = store.manifest(model, 1).lineage
        assert lineage.source == "scratch" and lineage.synthetic_data

    server = ApiServer(embedded_backend.store_dir, embedded_backend.root / "api.log",
                       embedded_backend.env, wait_path="/readyz")
    try:
        photo = (embedded_backend.root / "photo.png")
        from PIL import Image

        Image.new("RGB", (96, 80), (200, 120, 40)).save(photo)
        body = photo.read_bytes()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for path, model in [("/cartoonize", "cartoon"), ("/classify", "classify"),
                                ("/autoencode", "faces-ae")]:
                r = http.post(path, content=body, headers={"content-type": "image/png"})
                assert r.status_code == 200, (path, r.text)
                assert r.headers["x-model-version"] == f"{model}@1"
            r = http.post("/matte", content=body, headers={"content-type": "image/png"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "no_active_version"
            r = http.post("/generate", params={"n": 4, "seed": 1})
            assert r.status_code == 200 and r.headers["x-model-version"] == "anime-faces@1"
            labels = {p["label"] for p in http.post(
                "/classify", content=body, headers={"content-type": "image/png"}
            ).json()["predictions"]}
            assert labels and all(label.startswith("class_") for label in labels)
    finally:
        server.stop()
