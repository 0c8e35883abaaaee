"""The job queue end to end: real worker processes, a real broker, a real database.

Each case runs on the embedded default (filesystem broker + SQLite) and, where it matters,
on Redis + PostgreSQL. The training is a tiny autoencoder on a synthetic dataset.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.wire import FinetuneRequest
from jobs.artifacts import JobArtifacts
from jobs.db import Database
from jobs.errors import BrokerUnavailable, IdempotencyConflict, InvalidTransition
from jobs.queue import JobQueue, create_and_enqueue, resume_and_enqueue
from jobs.records import JobRecord
from jobs.repository import JobRepository
from model_store.datasets import DatasetStore
from model_store.store import ModelStore
from tests.integration.conftest import JobBackend
from tests.support.processes import WorkerPool
from worker.starter import publish_synthetic_dataset

pytestmark = [pytest.mark.timeout(120), pytest.mark.local_store_only(
    "the worker and the test share one store directory (checkpoints, versions read there)")]

DATASET = "faces"


@dataclass
class Jobs:
    """The API side of a test: repository + producer on the backend's settings."""

    backend: JobBackend
    db: Database
    repo: JobRepository
    queue: JobQueue

    def submit(self, key: str | None = None, **overrides: object) -> JobRecord:
        job, _ = create_and_enqueue(self.repo, finetune_request(**overrides), key,
                                    queue=self.queue)
        return job


@pytest.fixture()
def jobs(request: pytest.FixtureRequest) -> Iterator[Jobs]:
    name = "backend" if "backend" in request.fixturenames else "embedded_backend"
    backend: JobBackend = request.getfixturevalue(name)
    settings = backend.settings()
    publish_synthetic_dataset(DatasetStore(backend.store_dir), "autoencode", DATASET, n=16)
    db = Database.from_settings(settings)
    db.create_schema()
    queue = JobQueue(settings)
    yield Jobs(backend, db, JobRepository(db.sessions), queue)
    queue.close()
    db.dispose()


def finetune_request(epochs: int = 2, **overrides: object) -> FinetuneRequest:
    body: dict = {
        "task": "autoencode", "dataset_id": DATASET, "base": "ae", "target_model": "faces-ae",
        "hyperparameters": {"epochs": epochs, "batch_size": 4, "latent_dim": 32,
                            "early_stop_patience": None},
    }
    return FinetuneRequest(**{**body, **overrides})


def wait_for(jobs: Jobs, job_id: str, done: Callable[[JobRecord], bool], pool: WorkerPool,
             timeout: float = 60.0) -> JobRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.repo.get(job_id)
        if done(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.status} (epoch {job.epoch}) after "
                         f"{timeout}s; error={job.error}\n{pool.logs()}")


def finished(job: JobRecord) -> bool:
    return job.status in ("succeeded", "failed", "cancelled")


def statuses(jobs: Jobs, job_id: str) -> list[str]:
    return [e.data["status"] for e in jobs.repo.events_after(job_id) if e.kind == "status"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- a job through a worker


def test_job_runs_in_a_worker_process(backend: JobBackend, jobs: Jobs, workers: WorkerPool
                                      ) -> None:
    workers.start()
    job = jobs.submit(auto_activate=True)
    done = wait_for(jobs, job.id, finished, workers)

    assert done.status == "succeeded", done.error
    assert statuses(jobs, job.id) == ["queued", "running", "exporting", "succeeded"]
    assert (done.epoch, done.total_epochs, done.attempts) == (2, 2, 1)
    assert done.step == done.total_steps and done.total_steps > 0
    assert done.val_metrics and "loss" in done.val_metrics
    assert done.result_version == "faces-ae@1"
    # Two epochs from scratch do not beat the mean image: the gate keeps the first version
    # of the line inactive, and the job says why with both numbers.
    assert not done.activated and "trivial predictor" in done.activation_reason
    assert done.published_epoch in (1, 2) and "loss" in done.published_metrics
    assert done.started_at <= done.finished_at

    progress = [e.data for e in jobs.repo.events_after(job.id) if e.kind == "progress"]
    assert [p["epoch"] for p in progress if p["kind"] == "epoch"] == [1, 2]
    store = ModelStore(backend.store_dir)
    manifest = store.manifest("faces-ae", 1)
    assert store.active_version("faces-ae") is None
    lineage = manifest.lineage
    assert (lineage.source, lineage.dataset, lineage.job_id) == ("scratch", DATASET, job.id)
    assert lineage.synthetic_data and lineage.hyperparameters["epochs"] == 2
    assert manifest.parity.passed


def test_failure_is_recorded_with_its_reason(embedded_backend: JobBackend, jobs: Jobs,
                                             workers: WorkerPool) -> None:
    workers.start()
    missing = jobs.submit(dataset_id="no-such-dataset")
    bad_arch = jobs.submit(base="u2netp")  # a matte architecture for an autoencode job
    for job_id, words in ((missing.id, "no-such-dataset"), (bad_arch.id, "serves matte")):
        done = wait_for(jobs, job_id, finished, workers)
        assert done.status == "failed" and words in done.error, done.error
        assert done.finished_at is not None
    assert not (embedded_backend.store_dir / "models" / "faces-ae").exists()


# ---------------------------------------------------------------- producer side


def test_broker_down_raises_and_writes_nothing(backend: JobBackend, jobs: Jobs) -> None:
    down = backend.settings(broker_url=f"redis://127.0.0.1:{closed_port()}/0")
    queue = JobQueue(down)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        create_and_enqueue(jobs.repo, finetune_request(), "key-1", queue=queue)
    assert time.monotonic() - started < 10  # the API answers 503, it does not hang
    assert jobs.repo.list() == []


def test_idempotency_key(backend: JobBackend, jobs: Jobs) -> None:
    first = jobs.submit("key-1")
    again = jobs.submit("key-1")
    assert again.id == first.id
    # Defaults filled in count as the same body.
    same = jobs.submit("key-1", hyperparameters={"epochs": 2, "batch_size": 4,
                                                 "latent_dim": 32, "early_stop_patience": None,
                                                 "lr": 1e-3})
    assert same.id == first.id
    with pytest.raises(IdempotencyConflict):
        jobs.submit("key-1", epochs=3)
    other = jobs.submit("key-2")
    assert other.id != first.id
    assert {j.id for j in jobs.repo.list()} == {first.id, other.id}
    assert jobs.queue.app.connection_for_write().SimpleQueue(
        backend.settings().job_queue).qsize() == 2  # one message per job, not per request


# ---------------------------------------------------------------- lost workers


def test_reclaim_requeues_then_fails_after_max_attempts(backend: JobBackend, jobs: Jobs
                                                        ) -> None:
    job = jobs.submit()
    sent: list[str] = []
    for attempt in (1, 2):
        claim = jobs.repo.claim(job.id, f"ghost-{attempt}", lease_s=60, max_attempts=2)
        assert claim.outcome == "claimed" and claim.job.attempts == attempt
        assert jobs.repo.reclaim_stale(60, 2, sent.append).requeued == []  # lease still live
        time.sleep(0.01)
        result = jobs.repo.reclaim_stale(0, 2, sent.append)  # every lease has expired
        if attempt == 1:
            assert result.requeued == [job.id] and jobs.repo.get(job.id).status == "queued"
        else:
            assert result.failed == [job.id]
    assert sent == [job.id]
    failed = jobs.repo.get(job.id)
    assert failed.status == "failed" and "worker lost 2 times" in failed.error
    assert statuses(jobs, job.id) == ["queued", "running", "queued", "running", "failed"]


def test_killed_worker_job_resumes_from_checkpoint(backend: JobBackend, jobs: Jobs,
                                                   workers: WorkerPool) -> None:
    first = workers.start("first")
    job = jobs.submit(epochs=12)
    reached = wait_for(jobs, job.id, lambda j: j.epoch >= 2, workers)
    first.kill()
    killed_at = reached.epoch
    assert jobs.repo.get(job.id).status == "running"  # nobody told the database

    workers.start("second")  # reclaims the job once its lease (3 s) has expired
    done = wait_for(jobs, job.id, finished, workers, timeout=90)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2 and done.epoch == 12

    events = jobs.repo.events_after(job.id)
    second_run = [e.id for e in events if e.kind == "status" and e.data["status"] == "running"][1]
    resumed = next(e for e in events if e.id > second_run and e.kind == "progress")
    # epoch in a step event counts completed epochs: the second worker started after the
    # checkpoint of at least the epoch seen before the kill, not from zero
    assert resumed.data["epoch"] >= killed_at >= 2
    attempt_log = [e.data for e in events if e.kind == "log" and "attempt" in e.data]
    assert [a["resumed_from_checkpoint"] for a in attempt_log] == [False, True]


def test_warm_shutdown_requeues_without_spending_an_attempt(
        embedded_backend: JobBackend, jobs: Jobs, workers: WorkerPool) -> None:
    first = workers.start("first")
    job = jobs.submit(epochs=12)
    wait_for(jobs, job.id, lambda j: j.epoch >= 1, workers)
    assert first.terminate(timeout=30) == 0  # stops at the next step, not after the job
    requeued = jobs.repo.get(job.id)
    assert requeued.status == "queued" and requeued.attempts == 0
    workers.start("second")
    done = wait_for(jobs, job.id, finished, workers, timeout=90)
    assert done.status == "succeeded" and done.attempts == 1


# ---------------------------------------------------------------- cancel + webhook


def test_cancel_keeps_the_checkpoint_and_calls_the_webhook(
        embedded_backend: JobBackend, jobs: Jobs, workers: WorkerPool,
        webhook: tuple[str, list[dict]]) -> None:
    url, received = webhook
    workers.start()
    job = jobs.submit(epochs=12, webhook_url=url)
    wait_for(jobs, job.id, lambda j: j.epoch >= 1, workers)
    jobs.repo.request_cancel(job.id)
    done = wait_for(jobs, job.id, finished, workers)
    assert done.status == "cancelled" and done.epoch < 12
    checkpoint = Path(embedded_backend.store_dir) / "jobs" / job.id / "checkpoint.pt"
    assert checkpoint.is_file()
    assert not (embedded_backend.store_dir / "models" / "faces-ae").exists()

    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r["event"] for r in received] == ["job.cancelled"]
    assert received[0]["body"]["id"] == job.id and received[0]["body"]["status"] == "cancelled"


def test_a_cancelled_job_resumes_from_its_checkpoint_as_a_new_job(
        embedded_backend: JobBackend, jobs: Jobs, workers: WorkerPool) -> None:
    artifacts = JobArtifacts(embedded_backend.store_dir)
    workers.start()
    job = jobs.submit(epochs=8)
    with pytest.raises(InvalidTransition):  # still queued or running: nothing to resume
        resume_and_enqueue(jobs.repo, job.id, jobs.queue, artifacts)
    wait_for(jobs, job.id, lambda j: j.epoch >= 2, workers)
    jobs.repo.request_cancel(job.id)
    cancelled = wait_for(jobs, job.id, finished, workers)
    assert cancelled.status == "cancelled" and cancelled.epoch < 8

    resumed, created = resume_and_enqueue(jobs.repo, job.id, jobs.queue, artifacts)
    assert created and resumed.id != job.id and resumed.resumed_from == job.id
    done = wait_for(jobs, resumed.id, finished, workers, timeout=90)
    assert done.status == "succeeded", done.error
    assert done.epoch == 8 and done.result_version == "faces-ae@1"
    events = jobs.repo.events_after(resumed.id)
    first_step = next(e for e in events if e.kind == "progress")
    assert first_step.data["epoch"] >= cancelled.epoch  # continued, not started over
    attempt_log = [e.data for e in events if e.kind == "log" and "attempt" in e.data]
    assert [a["resumed_from_checkpoint"] for a in attempt_log] == [True]
    with pytest.raises(InvalidTransition):  # a succeeded job is not resumed
        resume_and_enqueue(jobs.repo, resumed.id, jobs.queue, artifacts)
