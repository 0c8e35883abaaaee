"""A real S3-API server for the tests: moto's standalone server in a subprocess on loopback.

``S3Server`` starts ``python -m moto.server`` on a free 127.0.0.1 port; ``new_store_url()``
makes a fresh bucket so tests never see each other's objects. ``env()`` is what an API or
worker subprocess needs to use it (store URL, endpoint, dummy credentials): nothing here
talks to any address other than 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    def __init__(self, log_path: Path) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, **CREDENTIALS}, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited: {log_path.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start within 30 s")

    def new_store_url(self, prefix: str = "store") -> str:
        """A fresh, empty bucket: ``s3://<bucket>/<prefix>``."""
        from model_store.objects import ObjectStore

        url = f"s3://tf-{uuid.uuid4().hex[:20]}/{prefix}"
        ObjectStore.from_url(url, endpoint_url=self.endpoint).ensure_bucket()
        return url

    def env(self, store_url: str) -> dict[str, str]:
        """Environment for a subprocess (API, worker, CLI) that uses ``store_url``."""
        return {**CREDENTIALS, "TOONFORGE_STORE_URL": store_url,
                "TOONFORGE_S3_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
