"""The worker's log: JSON lines, and the job id on every line emitted while a job runs."""

from __future__ import annotations

import json
import time

import pytest

from core.wire import FinetuneRequest
from jobs.db import Database
from jobs.queue import JobQueue, create_and_enqueue
from jobs.repository import JobRepository
from model_store.datasets import DatasetStore
from tests.integration.conftest import JobBackend
from tests.support.processes import WorkerPool
from worker.starter import publish_synthetic_dataset

pytestmark = pytest.mark.timeout(120)


def test_every_line_of_a_running_job_carries_its_id(embedded_backend: JobBackend,
                                                     workers: WorkerPool) -> None:
    settings = embedded_backend.settings()
    publish_synthetic_dataset(DatasetStore(embedded_backend.store_dir), "autoencode", "faces",
                              n=16)
    db = Database.from_settings(settings)
    db.create_schema()
    repo, queue = JobRepository(db.sessions), JobQueue(settings)
    worker = workers.start()
    request = FinetuneRequest(task="autoencode", dataset_id="faces", base="ae",
                              target_model="faces-ae",
                              hyperparameters={"epochs": 1, "batch_size": 4, "latent_dim": 32})
    job, _ = create_and_enqueue(repo, request, None, queue=queue)
    deadline = time.monotonic() + 90
    while repo.get(job.id).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.2)
    assert repo.get(job.id).status == "succeeded", repo.get(job.id).error
    queue.close()
    db.dispose()

    # Celery logs the task's end right after it returns; give the line time to land.
    deadline = time.monotonic() + 10
    while "succeeded in" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    # From the runner's first line for the job to Celery's "Task ... succeeded": everything.
    first = next(i for i, line in enumerate(lines) if job.id in line["message"]
                 and line["logger"] == "worker.runner")
    last = next(i for i, line in enumerate(lines) if "succeeded in" in line["message"])
    during = lines[first:last + 1]
    assert len(during) >= 2
    untagged = [line for line in during if line.get("job_id") != job.id]
    assert not untagged, untagged
    assert any(line["logger"].startswith("celery") for line in during)
    # Before the job (start-up) and Celery's "received" line: no job id.
    assert all("job_id" not in line for line in lines[:first])
