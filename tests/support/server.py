"""The real API under uvicorn in a subprocess, on a free loopback port (tests and bench)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.stores import RemoteStore, on_s3, remote_for

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0
# Tests that are not about access get a server anyone may use fully (no keys, no request-rate
# limit); tests/api/test_auth.py passes its own values (docs/SECURITY.md).
OPEN_ACCESS = {"TOONFORGE_OPEN_SCOPES": "infer,train,admin", "TOONFORGE_RATE_LIMIT_RPS": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiServer:
    """``python -m uvicorn service.app:app`` on a free loopback port.

    ``store`` is the test's store directory. With ``remote`` (or under
    ``TOONFORGE_TEST_STORE=s3``, the bucket standing for ``store``: tests/support/stores.py)
    the API runs on that S3 store instead, with a private ``store_dir`` of its own beside
    the log (its cache: another replica's is never read)."""

    def __init__(self, store: Path, log_path: Path, env: dict[str, str] | None = None,
                 *, wait_path: str = "/healthz", remote: RemoteStore | None = None,
                 store_dir: Path | None = None) -> None:
        self.store = store
        self.log_path = log_path
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The job database and embedded broker go beside the log unless the test shares
        # them with workers (then it passes TOONFORGE_DATA_DIR): never into the repository.
        data_dir = log_path.parent / f"{log_path.stem}-data"
        full_env = {**os.environ, "TOONFORGE_STORE_DIR": str(store),
                    "TOONFORGE_DATA_DIR": str(data_dir), **OPEN_ACCESS, **(env or {})}
        if remote is None and on_s3() and "TOONFORGE_STORE_URL" not in (env or {}):
            remote = remote_for(store)
        self.remote = remote
        # The directory this process writes: the store itself, or its own S3 cache.
        self.store_dir = Path(full_env["TOONFORGE_STORE_DIR"])
        if remote is not None:
            self.store_dir = store_dir or log_path.parent / f"{log_path.stem}-store"
            full_env.update(remote.process_env(self.store_dir))
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            # The protocol `python -m service` runs (JSON errors for what h11 refuses).
            [sys.executable, "-m", "uvicorn", "service.app:app",
             "--http", "service.http11:JsonErrorH11Protocol",
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_healthy(wait_path)

    def _wait_healthy(self, path: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start-up:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not become healthy:\n{self.log()}")

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
