"""Starter benchmark: the first start's starter jobs on an empty store, timed per starter.

Usage:  PYTHONPATH=$PWD:$PWD/sdk .venv/bin/python bench/starters.py [--tasks matte,generate]
        [--in-process] [--keep DIR]

Default: what ``make run`` does on a first start. A real job worker (``python -m worker``,
the embedded broker and SQLite, a fresh store in a temporary directory,
``TOONFORGE_STARTER_MODELS=true``) queues every task's starter and runs them one after the
other; this script polls the jobs database and the worker's ``/proc/<pid>/stat`` once a
second. Per starter it prints the wall time (the job's ``started_at`` to ``finished_at``),
the worker's CPU seconds over that window (user + system of the worker and its waited-for
children, sampled at the job's start and end, so +-1 s), the gate's verdict (activated or
not, and the job's reason) and the 1-minute load average at its end; then the whole run:
worker start to the last starter finished (wall), the worker's total CPU seconds
(``getrusage(RUSAGE_CHILDREN)`` once it has exited) and the load average before and after.

``--in-process``: no worker process; the starter datasets are published and the chosen jobs
(``--tasks``) run here, one after the other, through ``worker.runner.run_job``; CPU seconds
are this process's ``getrusage(RUSAGE_SELF)`` (+ children) deltas. For trying a recipe.

Nothing passes or fails; run it on an idle machine for the README's figure (the load average
is printed because on a shared machine the wall times stretch with it, the CPU seconds much
less). Writes bench/results/starters.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.procstat import cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "starters.json"


def _load() -> float:
    return os.getloadavg()[0]


def _self_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _env(root: Path) -> dict[str, str]:
    return {**os.environ,
            "TOONFORGE_DATA_DIR": str(root / "data"),
            "TOONFORGE_STORE_DIR": str(root / "store"),
            "TOONFORGE_STARTER_MODELS": "true",
            "TOONFORGE_LOG_FORMAT": "text",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "sdk"),
                                           os.environ.get("PYTHONPATH", "")])}


def _row(job: Any, wall: float | None, cpu: float | None, load: float) -> dict[str, Any]:
    return {"task": job.task, "model": job.target_model, "status": job.status,
            "wall_s": None if wall is None else round(wall, 1),
            "cpu_s": None if cpu is None else round(cpu, 1),
            "activated": bool(job.activated), "reason": job.activation_reason or job.error,
            "metrics": job.published_metrics, "load_1min_at_end": round(load, 2)}


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds()


def run_worker(root: Path, tasks: set[str] | None, timeout_s: float) -> dict[str, Any]:
    """A real worker process on an empty store; per-starter figures from the jobs DB and
    the worker's /proc CPU counters."""
    env = _env(root)
    os.environ.update({k: v for k, v in env.items() if k.startswith("TOONFORGE_")})
    from core.settings import get_settings
    from worker.runtime import WorkerRuntime

    load_before, t0 = _load(), time.monotonic()
    log = (root / "worker.log").open("w")
    worker = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    repo = None
    cpu_at: dict[str, dict[str, float]] = {}
    rows: dict[str, dict[str, Any]] = {}
    try:
        while time.monotonic() - t0 < timeout_s:
            time.sleep(1.0)
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}); see {log.name}")
            if repo is None:
                try:
                    repo = WorkerRuntime.create(get_settings()).repo
                except Exception:
                    continue
            cpu = cpu_seconds(worker.pid)
            try:
                jobs = repo.list(limit=50)
            except Exception:
                continue
            for job in jobs:
                seen = cpu_at.setdefault(job.id, {})
                if job.status == "running" and "start" not in seen and cpu is not None:
                    seen["start"] = cpu
                if job.status in ("succeeded", "failed", "cancelled") and job.id not in rows:
                    spent = (cpu - seen["start"]) if cpu is not None and "start" in seen \
                        else None
                    rows[job.id] = _row(job, _seconds(job.started_at, job.finished_at),
                                        spent, _load())
                    print(f"{job.task:11s} {rows[job.id]['status']:9s} "
                          f"wall {rows[job.id]['wall_s']} s  cpu {rows[job.id]['cpu_s']} s  "
                          f"live={rows[job.id]['activated']}  {rows[job.id]['reason']}",
                          flush=True)
            wanted = [j for j in jobs if tasks is None or j.task in tasks]
            if jobs and wanted and all(j.id in rows for j in wanted):
                break
        else:
            raise RuntimeError(f"starters not done in {timeout_s} s; see {log.name}")
        wall = time.monotonic() - t0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"mode": "worker", "starters": list(rows.values()),
            "total_wall_s": round(wall, 1),
            "worker_cpu_s": round(kids.ru_utime + kids.ru_stime, 1),
            "load_1min_before": round(load_before, 2), "load_1min_after": round(_load(), 2)}


def run_in_process(root: Path, tasks: set[str] | None) -> dict[str, Any]:
    """The starter datasets published and the chosen starter jobs run in this process."""
    os.environ.update({k: v for k, v in _env(root).items() if k.startswith("TOONFORGE_")})
    from worker.runner import run_job
    from worker.runtime import WorkerRuntime
    from worker.starter import queue_starter_jobs

    load_before, t0, cpu0 = _load(), time.monotonic(), _self_cpu()
    from core.settings import get_settings

    runtime = WorkerRuntime.create(get_settings())
    job_ids = queue_starter_jobs(runtime)
    rows = []
    for job_id in job_ids:
        job = runtime.repo.get(job_id)
        if tasks is not None and job.task not in tasks:
            continue
        w, c = time.monotonic(), _self_cpu()
        run_job(job_id, runtime)
        row = _row(runtime.repo.get(job_id), time.monotonic() - w, _self_cpu() - c, _load())
        rows.append(row)
        print(f"{row['task']:11s} {row['status']:9s} wall {row['wall_s']} s  "
              f"cpu {row['cpu_s']} s  live={row['activated']}  {row['reason']}", flush=True)
    return {"mode": "in-process", "starters": rows,
            "total_wall_s": round(time.monotonic() - t0, 1),
            "worker_cpu_s": round(_self_cpu() - cpu0, 1),
            "load_1min_before": round(load_before, 2), "load_1min_after": round(_load(), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", help="comma-separated tasks to wait for (default: all)")
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--keep", type=Path, help="use (and keep) this directory")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    tasks = set(args.tasks.split(",")) if args.tasks else None
    with tempfile.TemporaryDirectory(prefix="starters-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        result = (run_in_process(root, tasks) if args.in_process
                  else run_worker(root, tasks, args.timeout))
    result.update(cpus=os.cpu_count(), python=platform.python_version(),
                  when=datetime.now().isoformat(timespec="seconds"))
    print(f"total: wall {result['total_wall_s']} s, CPU {result['worker_cpu_s']} s, "
          f"load average {result['load_1min_before']} before, {result['load_1min_after']} "
          f"after, {result['cpus']} CPUs")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
