"""The key cache during a database outage and on revocation, and idempotency keys scoped
per API key, on the real repository (SQLite) and a controllable clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.wire import FinetuneRequest
from jobs.db import Database
from jobs.keys import ApiKey, CachedVerifier, KeyLimits
from jobs.repository import JobRepository

KEY = ApiKey(id="0123456789ab", name="k", scopes=("infer",),
             created_at=datetime(2026, 1, 1, tzinfo=UTC), revoked_at=None, limits=KeyLimits())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FlakyKeyTable:
    """Stands in for the key table: can fail like a silent database; counts its reads."""

    def __init__(self) -> None:
        self.down = False
        self.reads = 0

    def verify(self, token: str) -> ApiKey | None:
        self.reads += 1
        if self.down:
            raise ConnectionError("the database does not answer")
        return KEY if token == "good" else None


def test_an_outage_is_not_waited_for_on_every_request() -> None:
    clock, db = Clock(), FlakyKeyTable()
    cache = CachedVerifier(db.verify, ttl_s=5, clock=clock)
    assert cache.verify("good") == KEY and db.reads == 1
    db.down = True
    clock.now = 6  # past the ttl: the next check asks, fails, answers from the stale entry
    assert cache.verify("good") == KEY and db.reads == 2
    clock.now = 7  # within ttl of the failure: no new wait for the database
    assert cache.verify("good") == KEY and db.reads == 2
    clock.now = 12  # then it asks again
    db.down = False
    assert cache.verify("good") == KEY and db.reads == 3


def test_forget_drops_a_revoked_key_at_once() -> None:
    clock, db = Clock(), FlakyKeyTable()
    cache = CachedVerifier(db.verify, ttl_s=60, clock=clock)
    assert cache.verify("good") == KEY
    assert cache.forget(KEY.id) == 1
    assert cache.cached("good") == (False, None)
    assert cache.forget(KEY.id) == 0


@pytest.fixture()
def repo(tmp_path: Path) -> Iterator[JobRepository]:
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.create_schema()
    yield JobRepository(db.sessions)
    db.dispose()


def test_idempotency_keys_are_scoped_per_api_key(repo: JobRepository) -> None:
    body = FinetuneRequest(task="autoencode", dataset_id="faces", base="ae",
                           target_model="faces-ae", hyperparameters={"epochs": 1})
    anonymous, created = repo.create(body, "k-1")
    assert created
    replay, created = repo.create(body, "k-1")
    assert not created and replay.id == anonymous.id
    keyed, created = repo.create(body, "k-1", owner_key="0123456789ab")
    assert created and keyed.id != anonymous.id
    other, created = repo.create(body, "k-1", owner_key="ba9876543210")
    assert created and other.id not in {anonymous.id, keyed.id}
    again, created = repo.create(body, "k-1", owner_key="0123456789ab")
    assert not created and again.id == keyed.id
    # A long client key still fits the column (the stored form is a digest).
    long_key, created = repo.create(body, "x" * 255, owner_key="0123456789ab")
    assert created and long_key.idempotency_key is not None
    assert len(long_key.idempotency_key) <= 255
