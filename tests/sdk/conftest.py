"""One real stack for the SDK and CLI tests: the API under uvicorn and one ``python -m worker``
process on the embedded broker + SQLite, over a store of tiny graphs (fast inference) plus a
real autoencoder imported through the real import path (the fine-tune base).

Session-scoped (tests/sdk only asks for it) so the worker starts once; tests that change
state use their own names (datasets, target models) or put it back. The server-side helpers
are imported inside the fixture: the pure tests here (the wire contract, the job-follow state
machine) collect and run without the server's packages.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import JobBackend
    from tests.support.processes import WorkerPool
    from tests.support.server import ApiServer

REAL_AE = "real-ae"  # a real autoencoder (random weights, real export and parity)
# A tiny autoencoder version with ONNX graphs only, no weights.pt (never active; its
# manifest says latent_dim 64 so a job on it passes the submit-time checks): a job on it is
# accepted and fails in the worker, which is how these tests get a failed job.
NO_WEIGHTS_AE = "sdk-no-weights@1"
DATASET = "sdk-faces"  # uploaded once per session, through the SDK's raw HTTP twin
EPOCHS = 2
# A tiny autoencode job that finishes in seconds (tests/integration/test_queue.py).
HYPER = {"epochs": EPOCHS, "batch_size": 4, "early_stop_patience": None}


@dataclass
class Stack:
    backend: JobBackend
    api: ApiServer
    workers: WorkerPool
    dataset_zip: bytes
    faces: list[bytes]  # PNGs from the synthetic dataset

    @property
    def url(self) -> str:
        return self.api.url

    def ready_worker(self) -> None:
        for worker in self.workers.workers:
            worker.wait_ready()

    def logs(self) -> str:
        return f"{self.api.log()[-4000:]}\n{self.workers.logs()}"


@pytest.fixture(scope="session")
def sdk_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from tasks.synthetic import make_dataset
    from tests.api.tiny_models import PREPROCESSING, build_tiny_store, publish_tiny
    from tests.integration.conftest import FAST_JOBS, JobBackend
    from tests.support.archives import zip_folder
    from tests.support.processes import WorkerPool
    from tests.support.server import ApiServer
    from tests.support.store import import_test_model

    root = tmp_path_factory.mktemp("sdk")
    env = {
        "TOONFORGE_DATA_DIR": str(root / "data"),
        "TOONFORGE_STORE_DIR": str(root / "store"),
        "TOONFORGE_JOB_QUEUE": f"toonforge-sdk-{uuid.uuid4().hex[:12]}",
        "TOONFORGE_JOB_EVENTS_POLL_S": "0.2",
        "TOONFORGE_RELOAD_POLL_S": "0.2",
        "TOONFORGE_STARTER_MODELS": "false",
        **FAST_JOBS,
    }
    backend = JobBackend("embedded", env, root)
    store = build_tiny_store(backend.store_dir)
    import_test_model(store, "autoencode", root / "ckpt", model=REAL_AE)
    publish_tiny(store, "autoencode", NO_WEIGHTS_AE.partition("@")[0], activate=False,
                 preprocessing={**PREPROCESSING["autoencode"], "latent_dim": 64})
    workers = WorkerPool(env, root / "logs")
    workers.start(wait=False)  # warms up (imports torch) while the API starts
    api = ApiServer(backend.store_dir, root / "api.log", env)
    faces_dir = make_dataset("autoencode", root / "faces", n=16)
    faces = [p.read_bytes() for p in sorted(faces_dir.rglob("*.png"))[:4]]
    stack = Stack(backend, api, workers, zip_folder(faces_dir), faces)
    try:
        yield stack
    finally:
        api.stop()
        workers.stop_all()


@pytest.fixture(scope="session")
def photo() -> bytes:
    """A 96x64 RGB PNG with some structure."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 2 % 256, y * 4 % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def dataset_id(sdk_stack: Stack) -> str:
    """The session's training dataset, uploaded once (over plain HTTP, not the SDK)."""
    import httpx

    r = httpx.post(f"{sdk_stack.url}/datasets", params={"task": "autoencode", "id": DATASET},
                   content=sdk_stack.dataset_zip, headers={"content-type": "application/zip"},
                   timeout=60)
    assert r.status_code == 201, r.text
    return DATASET
