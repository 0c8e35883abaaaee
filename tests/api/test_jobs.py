"""POST /jobs/{id}/resume at the API level: 404, 409 for a job that is not failed/cancelled
or left no checkpoint, 201 with a new queued job for a cancelled one with a checkpoint, 503
when the broker is down. No worker runs here (the resumed training itself is covered on
the worker side); jobs are put in their states straight through the job repository, on the
server's own database."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from toonforge_client import AsyncClient, Client, ConflictError
from toonforge_client.cli import main as toonforge

from core.settings import Settings
from core.wire import FinetuneRequest
from jobs import artifacts
from jobs.db import Database
from jobs.queue import embedded_broker_dirs
from jobs.repository import JobRepository
from tests.api.test_inputs import assert_error
from tests.support.stores import artifacts_at

# Runs again on S3 (TOONFORGE_TEST_STORE=s3): the checkpoints are then objects of the
# server's bucket, written and read through artifacts_at.
pytestmark = pytest.mark.store

REQUEST = FinetuneRequest(task="autoencode", dataset_id="faces", base="faces-ae",
                          target_model="faces-ae", hyperparameters={"epochs": 3},
                          auto_activate=True, webhook_url="http://127.0.0.1:9/hook")


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(store, data dir) shared by the server and the test's own repository."""
    return tmp_path / "store", tmp_path / "data"


@pytest.fixture()
def repo(dirs: tuple[Path, Path]) -> Iterator[JobRepository]:
    db = Database(Settings(data_dir=dirs[1]).jobs_database_url)
    db.create_schema()
    yield JobRepository(db.sessions)
    db.dispose()


def new_job(repo: JobRepository) -> str:
    job, _ = repo.create(REQUEST)
    return job.id


def cancelled(repo: JobRepository, store: Path, *, checkpoint: bool) -> str:
    job_id = new_job(repo)
    repo.claim(job_id, "w1", lease_s=60, max_attempts=3)
    repo.cancel(job_id)
    repo.transition(job_id, "cancelled", worker_id="w1")
    if checkpoint:  # what a worker leaves: the file in its work dir, pushed to the store
        files = artifacts_at(store)
        folder = files.work_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / artifacts.CHECKPOINT_FILE).write_bytes(b"checkpoint bytes")
        files.push(job_id, folder)
    return job_id


def jobs_with_files(store: Path) -> list[str]:
    """The job ids the store holds files of (a directory's jobs/, or the bucket's)."""
    files = artifacts_at(store)
    if isinstance(files, artifacts.S3JobArtifacts):
        return sorted({key.split("/")[1] for key, _ in files.objects.list("jobs/")})
    return sorted(p.name for p in artifacts.job_dir(store, "").iterdir())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def messages(data_dir: Path) -> list[Path]:
    return sorted(embedded_broker_dirs(Settings(data_dir=data_dir))["queue"].glob("*.msg"))


def test_resume(start_server, dirs: tuple[Path, Path], repo: JobRepository) -> None:
    store, data = dirs
    server = start_server(store, data_dir=str(data))
    queued, succeeded = new_job(repo), new_job(repo)
    repo.claim(succeeded, "w1", lease_s=60, max_attempts=3)
    repo.transition(succeeded, "exporting", worker_id="w1")
    repo.transition(succeeded, "succeeded", worker_id="w1", result_version="faces-ae@2")
    bare = cancelled(repo, store, checkpoint=False)
    old = cancelled(repo, store, checkpoint=True)
    sent_before = len(messages(data))
    with server.client() as http:
        assert_error(http.post("/jobs/nope/resume"), 404, "job_not_found")
        for job_id in (queued, succeeded, bare):
            assert_error(http.post(f"/jobs/{job_id}/resume"), 409, "job_conflict")
        assert len(messages(data)) == sent_before  # nothing was sent or recorded
        assert http.get("/jobs").json()["total"] == 4

        before = http.get(f"/jobs/{old}").json()
        response = http.post(f"/jobs/{old}/resume")
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["id"] != old and job["status"] == "queued"
        assert job["resumed_from"] == old
        for field in ("task", "dataset_id", "base", "target_model", "hyperparameters",
                      "auto_activate"):
            assert job[field] == before[field], field
        assert (job["published_epoch"], job["published_metrics"],
                job["activation_reason"]) == (None, None, None)
        assert http.get(f"/jobs/{job['id']}").json() == job
        assert http.get(f"/jobs/{old}").json() == before  # left as it was

    assert repo.get(job["id"]).webhook_url == str(REQUEST.webhook_url)
    files = artifacts_at(store)  # as the worker that takes the new job sees it
    work = files.work_dir(job["id"])
    files.pull(job["id"], work)
    assert (work / artifacts.CHECKPOINT_FILE).read_bytes() == b"checkpoint bytes"
    assert len(messages(data)) == sent_before + 1


def test_resume_through_the_sdk_and_cli(start_server, dirs: tuple[Path, Path],
                                        repo: JobRepository, capsys) -> None:
    store, data = dirs
    server = start_server(store, data_dir=str(data))
    old, queued = cancelled(repo, store, checkpoint=True), new_job(repo)
    with Client(server.url) as tf:
        with pytest.raises(ConflictError) as refused:
            tf.resume_job(queued)
        assert refused.value.code == "job_conflict"
        first = tf.resume_job(old)
        assert first["resumed_from"] == old and first["status"] == "queued"

    async def resume_async() -> str:
        async with AsyncClient(server.url) as atf:
            return (await atf.resume_job(old))["id"]

    second = asyncio.run(resume_async())
    assert toonforge(["--url", server.url, "jobs", "resume", old]) == 0
    out, err = capsys.readouterr()
    third = out.strip()
    assert f"job {third} queued: resumes {old}" in err
    assert len({first["id"], second, third, old}) == 4  # each resume is a new job
    assert toonforge(["--url", server.url, "jobs", "show", third]) == 0
    assert f"resumed from {old}" in capsys.readouterr().out
    assert toonforge(["--url", server.url, "jobs", "resume", queued]) == 1
    assert "job_conflict" in capsys.readouterr().err


def test_resume_with_the_broker_down(start_server, dirs: tuple[Path, Path],
                                     repo: JobRepository) -> None:
    store, data = dirs
    old = cancelled(repo, store, checkpoint=True)
    server = start_server(store, data_dir=str(data),
                          broker_url=f"redis://127.0.0.1:{closed_port()}/0",
                          broker_connect_timeout_s="1")
    with server.client() as http:
        assert_error(http.post(f"/jobs/{old}/resume"), 503, "broker_unavailable")
        assert [j["id"] for j in http.get("/jobs").json()["jobs"]] == [old]
    assert jobs_with_files(store) == [old]
