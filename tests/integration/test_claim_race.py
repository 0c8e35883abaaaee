"""A worker can read a job's message before the API's transaction commits its row (the
producer sends first so that a broker outage writes nothing). On PostgreSQL the worker's
UPDATE does not see the uncommitted row; the claim must wait for it, not fail the job."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from core.wire import FinetuneRequest
from jobs.db import Database
from jobs.repository import ClaimOutcome, JobRepository
from tests.integration.conftest import _admin, postgres_admin_url_or_skip


@pytest.fixture()
def pg_repo() -> Iterator[JobRepository]:
    admin = postgres_admin_url_or_skip()
    name = f"toonforge_race_{uuid.uuid4().hex[:10]}"
    _admin(admin, f'CREATE DATABASE "{name}"')
    db = Database(make_url(admin).set(database=name).render_as_string(hide_password=False))
    db.create_schema()
    try:
        yield JobRepository(db.sessions)
    finally:
        db.dispose()
        _admin(admin, f'DROP DATABASE "{name}" WITH (FORCE)')


def test_a_message_that_outruns_its_row_still_claims_the_job(pg_repo: JobRepository) -> None:
    sent = threading.Event()
    outcome: dict = {}

    def worker() -> None:
        sent.wait(5)
        outcome["claim"] = pg_repo.claim(outcome["id"], "w1", lease_s=60, max_attempts=3)

    def send_then_commit_late(job) -> None:
        outcome["id"] = job.id
        sent.set()  # the message is out; the row commits only after this returns
        threading.Event().wait(0.3)

    thread = threading.Thread(target=worker)
    thread.start()
    request = FinetuneRequest(task="autoencode", dataset_id="faces", base="ae",
                              target_model="faces-ae", hyperparameters={"epochs": 1})
    job, _ = pg_repo.create(request, before_commit=send_then_commit_late)
    thread.join(15)
    assert outcome["claim"].outcome == ClaimOutcome.CLAIMED, outcome["claim"]
    stored = pg_repo.get(job.id)
    assert (stored.status, stored.attempts, stored.error) == ("running", 1, None)
