"""The API under test: the real app under uvicorn in a subprocess, spoken to over HTTP."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tests.api.tiny_models import build_tiny_store

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiServer:
    """``python -m uvicorn service.app:app`` on a free loopback port."""

    def __init__(self, store: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.store = store
        self.log_path = log_path
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "TOONFORGE_STORE_DIR": str(store), **(env or {})}
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:app",
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start-up:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
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


@pytest.fixture()
def start_server(tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """Start servers on given stores (stopped when the test ends)."""
    servers: list[ApiServer] = []

    def start(store: Path, **env: str) -> ApiServer:
        name = f"server-{len(servers)}.log"
        server = ApiServer(store, tmp_path / name, {f"TOONFORGE_{k.upper()}": v
                                                    for k, v in env.items()})
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of tiny contract-honouring graphs (see tiny_models.py), one per module."""
    root = tmp_path_factory.mktemp("tiny-store")
    build_tiny_store(root)
    return root


@pytest.fixture(scope="module")
def tiny_server(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[ApiServer]:
    """One server per module on the tiny store, with a small byte cap to test limits."""
    server = ApiServer(tiny_store, tmp_path_factory.mktemp("logs") / "server.log",
                       {"TOONFORGE_MAX_UPLOAD_BYTES": str(2_000_000),
                        "TOONFORGE_MAX_PIXELS": str(5_000_000)})
    yield server
    server.stop()


@pytest.fixture()
def client(tiny_server: ApiServer) -> Iterator[httpx.Client]:
    with tiny_server.client() as http:
        yield http


# ------------------------------------------------------------------ real images
def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())


@pytest.fixture(scope="session")
def chelsea() -> Image.Image:
    return Image.fromarray(skimage.data.chelsea())


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut: Image.Image) -> bytes:
    return encode(astronaut, "JPEG", quality=90)


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def gradient16(width: int = 64, height: int = 48) -> np.ndarray:
    """A 16-bit ramp that uses the whole range (to see scaling versus clipping)."""
    row = np.linspace(0, 65535, width).astype(np.uint16)
    return np.tile(row, (height, 1))
