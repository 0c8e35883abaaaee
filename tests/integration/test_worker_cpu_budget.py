"""A real ``python -m worker`` claims its CPU budget: niceness and torch's thread team, read
from /proc of the running process (the settings' other half, onnxruntime's options, is
tests/unit/test_cpu_budget.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import JobBackend
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _threads(pid: int) -> dict[int, int]:
    """Each thread of ``pid`` and its niceness (field 19 of /proc/<pid>/task/<tid>/stat)."""
    nices = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        # The fields after the command name in parentheses start at field 3.
        nices[int(task.name)] = int(stat.rsplit(")", 1)[1].split()[16])
    return nices


def _start(backend: JobBackend, name: str, **settings: str) -> WorkerProcess:
    env = {**backend.env, **{f"TOONFORGE_{k.upper()}": v for k, v in settings.items()}}
    return WorkerProcess(env, backend.root / "logs" / f"{name}.log", name).start()


def test_the_worker_runs_niced_with_its_thread_budget(embedded_backend: JobBackend) -> None:
    one = _start(embedded_backend, "one", train_threads="1", train_nice="7")
    three = _start(embedded_backend, "three", train_threads="3", train_nice="12")
    try:
        for worker in (one, three):
            worker.wait_ready(timeout=180)
        assert one.proc is not None and three.proc is not None
        one_threads, three_threads = _threads(one.proc.pid), _threads(three.proc.pid)
        # Every thread, the main one and those started later (Celery's, torch's team), runs
        # at the budget's niceness.
        # (A worker started at a higher niceness, as under `nice -n 15 pytest`, keeps it.)
        assert set(one_threads.values()) == {max(7, os.nice(0))}, one_threads
        assert set(three_threads.values()) == {max(12, os.nice(0))}, three_threads
        # torch's intra-op team is started at ready: 3 threads need at least 2 more
        # threads than 1 (the same code runs in both, so the rest is equal).
        assert len(three_threads) - len(one_threads) >= 2, (one_threads, three_threads)
        assert (f"torch threads 1 (inter-op 1), nice {max(7, os.nice(0))}, OpenMP wait PASSIVE"
                in one.log())
        assert (f"torch threads 3 (inter-op 1), nice {max(12, os.nice(0))}, OpenMP wait"
                " PASSIVE" in three.log())
    finally:
        one.kill()
        three.kill()


def test_a_worker_without_the_setting_keeps_omp_num_threads(embedded_backend: JobBackend
                                                            ) -> None:
    # The tests' workers set OMP_NUM_THREADS=1 (conftest FAST_JOBS): without train_threads
    # that stays the worker's thread count, and spinning can be switched back on.
    assert embedded_backend.env["OMP_NUM_THREADS"] == "1"
    worker = _start(embedded_backend, "default", train_passive_wait="false", train_nice="3")
    try:
        worker.wait_ready(timeout=180)
        assert worker.proc is not None
        nice = max(3, os.nice(0))
        assert set(_threads(worker.proc.pid).values()) == {nice}
        assert f"torch threads 1 (inter-op 1), nice {nice}, OpenMP wait default" in worker.log()
    finally:
        worker.kill()
