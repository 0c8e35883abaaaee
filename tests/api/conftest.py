"""The API under test: the real app under uvicorn in a subprocess, spoken to over HTTP."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tests.api.tiny_models import build_tiny_store
from tests.support.server import ApiServer


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
