"""The embedded broker hands out jobs first in, first out, whatever the clock reads.

Messages are files that kombu's consumer takes in text order of their names; these tests
send real Celery messages through the embedded transport and read them back with kombu's
own consumer code, with the stamp clock injected.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty

import pytest

from core.settings import Settings
from jobs.queue import JobQueue, MessageStamps, _AtomicFilesystemChannel

MS = 1_000_000  # nanoseconds


@pytest.fixture()
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    settings = Settings(data_dir=tmp_path, store_dir=tmp_path / "store")
    queue = JobQueue(settings)
    saved = _AtomicFilesystemChannel.stamps
    yield queue
    _AtomicFilesystemChannel.stamps = saved
    queue.close()


def _use_clock(readings: list[int]) -> None:
    values = iter(readings)
    clock: Callable[[], int] = lambda: next(values)  # noqa: E731
    _AtomicFilesystemChannel.stamps = MessageStamps(clock)


def _consume_all(queue: JobQueue) -> list[str]:
    """Job ids in the order kombu's filesystem consumer delivers them."""
    ids = []
    with queue.app.connection_for_read() as conn:
        channel = conn.default_channel
        while True:
            try:
                message = channel._get(queue.settings.job_queue)
            except Empty:  # nothing left
                break
            raw = message["body"]
            if message["properties"].get("body_encoding") == "base64":
                raw = base64.b64decode(raw)
            args = json.loads(raw)[0]  # Celery's message body: [args, kwargs, embed]
            ids.append(args[0])
    return ids


def test_jobs_run_oldest_first_across_the_million_millisecond_boundary(queue: JobQueue):
    # 999,999 ms then 1,000,000 ms: unpadded stamps sorted the newer message first.
    _use_clock([999_999 * MS, 999_999 * MS + 500, 1_000_000 * MS, 1_000_001 * MS])
    for job in ("a", "b", "c", "d"):
        queue.enqueue_finetune(job)
    assert _consume_all(queue) == ["a", "b", "c", "d"]


def test_messages_from_before_a_restart_stay_ahead(queue: JobQueue):
    # A process that started later (a reboot) stamps from the same wall clock, not from zero.
    _use_clock([5_000_000 * MS])
    queue.enqueue_finetune("before-reboot")
    _use_clock([5_000_100 * MS])
    queue.enqueue_finetune("after-reboot")
    assert _consume_all(queue) == ["before-reboot", "after-reboot"]


def test_a_clock_that_steps_back_never_reorders_a_process_s_messages(queue: JobQueue):
    _use_clock([2_000_000 * MS, 1_000 * MS, 1_000 * MS])
    for job in ("first", "second", "third"):
        queue.enqueue_finetune(job)
    assert _consume_all(queue) == ["first", "second", "third"]


def test_stamps_have_a_fixed_width():
    stamps = MessageStamps(lambda: 7)
    assert [len(stamps.next()) for _ in range(3)] == [MessageStamps.WIDTH] * 3
