"""Real worker processes for tests: ``python -m worker`` with a test's environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.stores import RemoteStore, on_s3, remote_for

REPO_ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """One ``python -m worker`` subprocess; its output goes to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str = "test") -> None:
        # Starter jobs would join every test's queue; the starter test turns them back on.
        self.env = {**os.environ, "TOONFORGE_STARTER_MODELS": "false", **env,
                    "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.name = name
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", f"--hostname={self.name}@%h", "--loglevel=INFO"],
            cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        """Until Celery says "<name>@host ready." (the consumer is listening)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"{self.name}@" in self.log() and " ready." in self.log():
                return self
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no cleanup, no acknowledgement, no shutdown hooks."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (Celery's warm shutdown); kill -9 if it does not exit in time."""
        assert self.proc is not None
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


class WorkerPool:
    """Starts workers for one test and makes sure none outlives it.

    With ``remote`` (or under ``TOONFORGE_TEST_STORE=s3``, the bucket standing for the
    env's TOONFORGE_STORE_DIR: tests/support/stores.py) every worker runs on that S3 store
    with a ``store_dir`` of its own (``<log_dir>/<name>-store``), as on its own host."""

    def __init__(self, env: dict[str, str], log_dir: Path,
                 remote: RemoteStore | None = None) -> None:
        self.env, self.log_dir = env, log_dir
        self.remote = remote
        self.workers: list[WorkerProcess] = []

    def _remote(self) -> RemoteStore | None:
        if self.remote is None and on_s3() and "TOONFORGE_STORE_URL" not in self.env:
            self.remote = remote_for(Path(self.env["TOONFORGE_STORE_DIR"]))
        return self.remote

    def store_dir(self, name: str) -> Path:
        """The directory worker ``name`` writes: the store, or its own S3 working dir."""
        if self._remote() is None:
            return Path(self.env["TOONFORGE_STORE_DIR"])
        return self.log_dir / f"{name}-store"

    def start(self, name: str | None = None, wait: bool = True) -> WorkerProcess:
        name = name or f"w{len(self.workers) + 1}"
        remote = self._remote()
        env = self.env if remote is None else {**self.env,
                                               **remote.process_env(self.store_dir(name))}
        worker = WorkerProcess(env, self.log_dir / f"{name}.log", name).start()
        self.workers.append(worker)
        return worker.wait_ready() if wait else worker

    def logs(self) -> str:
        return "\n".join(f"----- {w.name}\n{w.log()[-6000:]}" for w in self.workers)

    def stop_all(self) -> None:
        # The tests are over: no need for Celery's (seconds-long) warm shutdown.
        for worker in self.workers:
            worker.kill()
