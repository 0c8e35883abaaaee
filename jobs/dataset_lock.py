"""Accepting a job for a dataset and deleting that dataset, one after the other.

Both take a write lock on the dataset's row of ``dataset_locks`` as the first statement of
their transaction and hold it to the end: PostgreSQL's row lock, SQLite's database write
lock (so the statement must come first: a SQLite transaction that has read cannot take the
write lock once another writer committed). Then

- a job is accepted only if, under the lock, the dataset still exists (``JobRepository.
  create``'s ``before_commit`` checks it), and its row is committed before the lock goes;
- a delete checks, under the lock, that no queued or running job names the dataset
  (committed rows only: an acceptance in flight holds the lock) and removes the files
  before the lock goes.

So of a concurrent accept and delete exactly one wins: the job (the delete then answers 409
``dataset_conflict``) or the delete (the acceptance then answers 422: the dataset does not
exist). A waiter is bounded by the statement timeout (PostgreSQL) or the busy timeout
(SQLite) of jobs/db.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import DatasetLockRecord, JobRecord, utcnow
from jobs.states import JobStatus

_UNFINISHED = [s.value for s in JobStatus if not s.is_terminal]


def lock_dataset(session: Session, dataset_id: str) -> None:
    """Take the dataset's lock in ``session``'s transaction (released at commit/rollback)."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(DatasetLockRecord)
                    .values(dataset_id=dataset_id, locked_at=utcnow())
                    .on_conflict_do_nothing(index_elements=["dataset_id"]))
    # The insert locks nothing when the row exists; the update always does.
    session.execute(update(DatasetLockRecord)
                    .where(DatasetLockRecord.dataset_id == dataset_id)
                    .values(locked_at=utcnow()),
                    execution_options={"synchronize_session": False})


def in_use(session: Session, dataset_id: str) -> bool:
    """A job that has not finished (queued, running, exporting) names the dataset."""
    stmt = select(JobRecord.id).where(JobRecord.dataset_id == dataset_id,
                                      JobRecord.status.in_(_UNFINISHED)).limit(1)
    return session.scalar(stmt) is not None


@contextlib.contextmanager
def dataset_lock(sessions: sessionmaker[Session], dataset_id: str
                 ) -> Iterator[Callable[[str], bool]]:
    """Hold the dataset's lock for the block; yields the in-use check to run under it."""
    with sessions() as session:
        lock_dataset(session, dataset_id)
        yield lambda name: in_use(session, name)
        session.commit()
