"""Job states, the job spec and the repository on SQLite (no broker, no worker)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.wire import FinetuneRequest
from jobs import webhooks
from jobs.db import Database
from jobs.errors import InvalidJobRequest, InvalidTransition, JobNotFound
from jobs.repository import ClaimOutcome, JobRepository, ProgressUpdate
from jobs.request_checks import Stores, check_references, validate_hyperparameters
from jobs.states import JobStatus, can_transition
from jobs.views import job_view


def request(**overrides: object) -> FinetuneRequest:
    body: dict = {"task": "autoencode", "dataset_id": "faces", "base": "ae",
                  "target_model": "faces-ae", "hyperparameters": {"epochs": 2}}
    return FinetuneRequest(**{**body, **overrides})


@pytest.fixture()
def repo(tmp_path: Path) -> Iterator[JobRepository]:
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.create_schema()
    yield JobRepository(db.sessions)
    db.dispose()


def test_states() -> None:
    assert {s for s in JobStatus if s.is_terminal} == {"succeeded", "failed", "cancelled"}
    assert can_transition("queued", "running") and can_transition("running", "exporting")
    assert not can_transition("succeeded", "running")
    assert not can_transition("queued", "succeeded")  # only through exporting


def test_hyperparameter_errors_name_the_field() -> None:
    with pytest.raises(InvalidJobRequest) as err:
        validate_hyperparameters("autoencode", {"lr": -1, "learning_rate": 0.1})
    locs = {tuple(e["loc"]) for e in err.value.errors}
    assert locs == {("body", "hyperparameters", "lr"),
                    ("body", "hyperparameters", "learning_rate")}
    filled = validate_hyperparameters("autoencode", {"epochs": 3})
    assert filled["epochs"] == 3 and filled["lr"] == 1e-3


def test_create_get_list(repo: JobRepository) -> None:
    a, created = repo.create(request())
    b, _ = repo.create(request(task="classify", base="googlenet", target_model="cls",
                               hyperparameters={}))
    assert created and repo.get(a.id).status == "queued"
    assert repo.get(a.id).total_epochs == 2
    assert [j.id for j in repo.list()] == [b.id, a.id]  # newest first
    assert [j.id for j in repo.list(task="autoencode")] == [a.id]
    assert [j.id for j in repo.list(limit=1, offset=1)] == [a.id]
    assert repo.list(status="running") == []
    with pytest.raises(JobNotFound):
        repo.get("nope")


def test_failed_send_writes_nothing(repo: JobRepository) -> None:
    def refuse(job: object) -> None:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError):
        repo.create(request(), "key", before_commit=refuse)
    assert repo.list() == []
    job, created = repo.create(request(), "key")  # the key was not burnt
    assert created


def test_claim_is_exclusive(repo: JobRepository) -> None:
    job, _ = repo.create(request())
    assert repo.claim(job.id, "w1", lease_s=60, max_attempts=3).outcome == ClaimOutcome.CLAIMED
    # a duplicate delivery to another worker while w1's lease is live
    assert repo.claim(job.id, "w2", lease_s=60, max_attempts=3).outcome == ClaimOutcome.HELD
    # a redelivery to the same worker resumes
    again = repo.claim(job.id, "w1", lease_s=60, max_attempts=3)
    assert again.outcome == ClaimOutcome.CLAIMED and again.job.attempts == 2
    with pytest.raises(InvalidTransition):
        repo.transition(job.id, JobStatus.EXPORTING, worker_id="w2")  # not w2's job
    repo.transition(job.id, JobStatus.EXPORTING, worker_id="w1")
    repo.transition(job.id, JobStatus.SUCCEEDED, worker_id="w1", result_version="m@1")
    late = repo.claim(job.id, "w3", lease_s=0, max_attempts=3)
    assert late.outcome == ClaimOutcome.FINISHED and late.job.result_version == "m@1"
    assert repo.claim("missing", "w1", lease_s=60, max_attempts=3).outcome == "missing"


def test_a_take_over_records_the_requeue_it_implies(repo: JobRepository) -> None:
    # w1 is lost; w2 gets the redelivered message before the reclaimer marks the row queued
    # (the reclaimer sends first). The status history must read the same either way.
    job, _ = repo.create(request())
    repo.claim(job.id, "w1", lease_s=60, max_attempts=3)
    taken = repo.claim(job.id, "w2", lease_s=0, max_attempts=3)  # lease 0: w1's is expired
    assert taken.outcome == ClaimOutcome.CLAIMED and taken.job.worker_id == "w2"
    statuses = [(e.data["status"], e.data.get("reason"), e.data.get("worker"))
                for e in repo.events_after(job.id) if e.kind == "status"]
    assert statuses == [("queued", None, None), ("running", None, "w1"),
                        ("queued", "lease expired", None), ("running", None, "w2")]
    # The reclaimer, late, finds nothing stale and writes nothing more.
    assert repo.reclaim_stale(60, 3, requeue=lambda _id: None).requeued == []
    assert len([e for e in repo.events_after(job.id) if e.kind == "status"]) == 4


def test_progress_and_events(repo: JobRepository) -> None:
    job, _ = repo.create(request())
    repo.claim(job.id, "w1", lease_s=60, max_attempts=3)
    update = ProgressUpdate(epoch=1, step=4, total_steps=8,
                            losses={"loss": 0.5}, val_metrics={"acc": math.nan})
    assert repo.record_progress(job.id, "w1", update)
    assert not repo.record_progress(job.id, "w2", update)  # lost lease: nothing written
    row = repo.get(job.id)
    assert (row.epoch, row.step, row.losses, row.val_metrics) == (1, 4, {"loss": 0.5},
                                                                   {"acc": None})
    events = repo.events_after(job.id)
    assert [e.kind for e in events] == ["status", "status", "progress"]
    assert [e.id for e in repo.events_after(job.id, after_id=events[1].id)] == [events[2].id]
    view = job_view(row)
    assert view.status == "running" and json.loads(view.model_dump_json())["step"] == 4


def test_cancel(repo: JobRepository) -> None:
    queued, _ = repo.create(request())
    assert repo.request_cancel(queued.id).status == "cancelled"
    assert repo.request_cancel(queued.id).status == "cancelled"  # idempotent
    running, _ = repo.create(request())
    repo.claim(running.id, "w1", lease_s=60, max_attempts=3)
    flagged = repo.request_cancel(running.id)
    assert flagged.status == "running" and repo.is_cancel_requested(running.id)
    repo.transition(running.id, JobStatus.FAILED, worker_id="w1", error="boom")
    with pytest.raises(InvalidTransition):
        repo.request_cancel(running.id)


def test_release_gives_the_attempt_back(repo: JobRepository) -> None:
    job, _ = repo.create(request())
    repo.claim(job.id, "w1", lease_s=60, max_attempts=3)
    sent: list[str] = []
    assert repo.release(job.id, "w1", sent.append)
    row = repo.get(job.id)
    assert (row.status, row.attempts, row.worker_id, sent) == ("queued", 0, None, [job.id])


def _stores(root: Path) -> Stores:
    from model_store.datasets import DatasetStore
    from model_store.store import ModelStore

    return Stores(ModelStore(root), DatasetStore(root))


def test_check_references(tmp_path: Path) -> None:
    from worker.starter import publish_synthetic_dataset

    stores = _stores(tmp_path)
    publish_synthetic_dataset(stores.datasets, "autoencode", "faces", n=4)
    check_references(request(), stores)
    for field, bad in (("dataset_id", request(dataset_id="other")),
                       ("dataset_id", request(task="generate", base="dcgan")),
                       ("base", request(base="faces-ae@3"))):
        with pytest.raises(InvalidJobRequest) as err:
            check_references(bad, stores)
        assert err.value.errors[0]["loc"] == ["body", field]


def test_submit_checks_the_base_against_the_task(tmp_path: Path) -> None:
    from tests.api.tiny_models import LATENT, publish_tiny
    from worker.starter import publish_synthetic_dataset

    stores = _stores(tmp_path)
    publish_synthetic_dataset(stores.datasets, "autoencode", "faces", n=4)
    publish_tiny(stores.models, "autoencode", "faces-ae")
    # An architecture of another task is refused before anything is queued.
    with pytest.raises(InvalidJobRequest, match="'dcgan' serves generate, not autoencode") as err:
        check_references(request(base="dcgan"), stores)
    assert err.value.errors[0]["loc"] == ["body", "base"]
    with pytest.raises(InvalidJobRequest, match="neither a model nor an architecture"):
        check_references(request(base="nonsense"), stores)
    # A base version fixes its latent size: inherited when not given, refused when it differs.
    inherited = check_references(request(base="faces-ae"), stores)
    assert inherited.hyperparameters["latent_dim"] == LATENT
    other = LATENT * 2
    with pytest.raises(InvalidJobRequest, match=f"latent_dim={LATENT}") as err:
        check_references(request(base="faces-ae",
                                 hyperparameters={"epochs": 2, "latent_dim": other}), stores)
    assert err.value.errors[0]["loc"] == ["body", "hyperparameters", "latent_dim"]


class _Flaky(BaseHTTPRequestHandler):
    codes: list[int] = []
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"delivery": self.headers["X-Toonforge-Delivery"], **body})
        self.send_response(type(self).codes.pop(0))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("codes", "delivered", "tries"),
                         [([500, 503, 200], True, 3), ([404], False, 1), ([500] * 3, False, 3)])
def test_webhook_retries(codes: list[int], delivered: bool, tries: int,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "BACKOFF_S", 0.01)
    _Flaky.codes, _Flaky.seen = list(codes), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ok = webhooks.deliver(f"http://127.0.0.1:{server.server_port}/", b'{"id": "j"}',
                              {"Content-Type": "application/json",
                               "X-Toonforge-Delivery": "d1"}, timeout_s=2, tries=3,
                              allow_hosts=["127.0.0.1"])  # a loopback receiver, on purpose
    finally:
        server.shutdown()
    assert ok is delivered and len(_Flaky.seen) == tries
    assert {s["delivery"] for s in _Flaky.seen} == {"d1"}



def test_a_finished_job_has_no_eta(repo: JobRepository) -> None:
    """The last progress row's ETA is kept in the row; the view drops it once the job ended
    (cancelled mid-epoch, failed, succeeded): nothing is left to wait for."""
    job, _ = repo.create(request())
    repo.claim(job.id, "w1", lease_s=60, max_attempts=3)
    repo.record_progress(job.id, "w1", ProgressUpdate(epoch=1, step=4, eta_seconds=12.5))
    assert job_view(repo.get(job.id)).eta_seconds == 12.5
    repo.request_cancel(job.id)
    repo.transition(job.id, JobStatus.CANCELLED, worker_id="w1")
    row = repo.get(job.id)
    assert row.eta_seconds == 12.5 and job_view(row).eta_seconds is None
