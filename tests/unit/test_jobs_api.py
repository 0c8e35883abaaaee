"""The job API's glue on SQLite: cancel semantics, the SSE stream's framing and ending, the
metrics series, sample names (the HTTP path is in tests/integration/test_finetune_e2e.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.wire import FinetuneRequest
from jobs import artifacts
from jobs.db import Database
from jobs.errors import InvalidTransition
from jobs.repository import JobRepository, ProgressUpdate
from service import jobs_api


@pytest.fixture()
def repo(tmp_path: Path) -> Iterator[JobRepository]:
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.create_schema()
    yield JobRepository(db.sessions)
    db.dispose()


def new_job(repo: JobRepository) -> str:
    job, _ = repo.create(FinetuneRequest(task="autoencode", dataset_id="faces", base="ae",
                                         target_model="faces-ae",
                                         hyperparameters={"epochs": 2}))
    return job.id


def collect(repo: JobRepository, job_id: str, after: int = 0) -> list[str]:
    async def run() -> list[str]:
        return [m async for m in jobs_api.event_stream(repo, job_id, after, poll_s=0.02,
                                                       heartbeat_s=0.1)]

    return asyncio.run(run())


def test_cancel_queued_now_running_on_request_finished_refused(repo: JobRepository) -> None:
    queued = new_job(repo)
    job, now = repo.cancel(queued)
    assert (job.status, now) == ("cancelled", True)
    with pytest.raises(InvalidTransition):
        repo.cancel(queued)
    assert repo.request_cancel(queued).status == "cancelled"  # the lenient form stays

    running = new_job(repo)
    repo.claim(running, "w1", lease_s=60, max_attempts=3)
    job, now = repo.cancel(running)
    assert (job.status, job.cancel_requested, now) == ("running", True, False)
    assert repo.dataset_in_use("faces") and repo.count(status="running") == 1


def test_stream_sends_heartbeats_and_ends_after_the_terminal_event(repo: JobRepository
                                                                    ) -> None:
    job_id = new_job(repo)
    repo.claim(job_id, "w1", lease_s=60, max_attempts=3)
    repo.record_progress(job_id, "w1", ProgressUpdate(epoch=0, step=1, extra={"kind": "step"}))

    def finish_later() -> None:
        time.sleep(0.4)
        repo.cancel(job_id)
        repo.transition(job_id, "cancelled", worker_id="w1")

    threading.Thread(target=finish_later).start()
    messages = collect(repo, job_id)
    assert ": keep-alive\n\n" in messages
    events = [m for m in messages if not m.startswith(":")]
    kinds = [m.split("\n")[1] for m in events]
    assert kinds == ["event: status", "event: status", "event: progress", "event: log",
                     "event: status"]
    assert events[-1].endswith('"status":"cancelled"}}\n\n')
    ids = [int(m.split("\n")[0].removeprefix("id: ")) for m in events]
    assert ids == sorted(ids)
    assert collect(repo, job_id, after=ids[-1]) == []  # resuming after the end: nothing
    assert [m.split("\n")[0] for m in collect(repo, job_id, after=ids[2])] == [
        f"id: {i}" for i in ids[3:]]


def test_metric_points_one_per_epoch(repo: JobRepository) -> None:
    job_id = new_job(repo)
    repo.claim(job_id, "w1", lease_s=60, max_attempts=3)
    for epoch, loss in ((1, 0.5), (2, 0.4), (2, 0.3)):  # epoch 2 again after a resume
        repo.record_progress(job_id, "w1", ProgressUpdate(
            epoch=epoch, step=epoch * 4, losses={"loss": loss}, val_metrics={"loss": loss},
            extra={"kind": "epoch"}))
    repo.record_progress(job_id, "w1", ProgressUpdate(step=9, extra={"kind": "step"}))
    points = jobs_api.metric_points(repo.events_after(job_id))
    assert [(p.epoch, p.losses["loss"]) for p in points] == [(1, 0.5), (2, 0.3)]


@pytest.mark.parametrize("name", ["../checkpoint.pt", "..", "a/b.png", ".x.png", "x.pt",
                                  "..png", "x.png\0", ""])
def test_sample_names_cannot_leave_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(artifacts.InvalidSampleName):
        artifacts.sample_path(tmp_path, "job", name)


def test_samples_listed_by_epoch(tmp_path: Path) -> None:
    folder = artifacts.job_dir(tmp_path, "j") / artifacts.SAMPLES_DIR
    folder.mkdir(parents=True)
    for name in ("ae_epoch_010.png", "ae_epoch_002.png", "notes.txt"):
        (folder / name).write_bytes(b"x")
    assert [(s.name, s.epoch) for s in artifacts.list_samples(tmp_path, "j")] == [
        ("ae_epoch_002.png", 2), ("ae_epoch_010.png", 10)]
    assert artifacts.sample_path(tmp_path, "j", "ae_epoch_002.png").read_bytes() == b"x"
    with pytest.raises(artifacts.SampleNotFound):
        artifacts.sample_path(tmp_path, "j", "ae_epoch_003.png")
