"""The scale-out topology as native processes, on the S3 store: Redis (broker and reload
announcements), PostgreSQL (jobs), moto's S3 server (models, datasets, job files), two API
replicas and one Celery worker, each with its own empty store_dir, as on three hosts.

The store starts as a directory holding ``inverter@1`` (tests/toy_family: a 1x1 conv set to
the identity map, the trivial predictor) and is moved into the bucket with
``toonforge store push``. A dataset is uploaded through replica 2, the job submitted through
replica 1; the worker trains on the bucket's dataset, publishes ``inverter@2`` to the bucket
and activates it (it beats the identity map and v1). Both replicas must serve it within a
second of the activation -- with a 30 s poll, only the Redis announcement explains that --
while a client hammers each of them, and no request may fail. Each replica serves from
blobs in its own cache; nothing reads another process's directory.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from model_store.s3_models import manifest_key
from tests.integration.conftest import JobBackend, redis_or_skip
from tests.support.hammer import ReplicaHammer
from tests.support.processes import WorkerPool
from tests.support.s3 import S3Server
from tests.support.server import REPO, ApiServer
from tests.support.stores import RemoteStore

pytestmark = pytest.mark.timeout(180)

MODEL = "inverter"
SIDE = 16
# The replicas poll every 30 s here, so a swap seen within this bound came from the
# announcement, not the poll. The bound tells the two apart; it is not a latency target
# (bench/reload.py measures that), so it leaves room for a loaded 2-core machine.
SWAP_WITHIN_S = 5.0
PLUGINS = {"TOONFORGE_TASK_PLUGINS": "tests.toy_family.spec",
           "TOONFORGE_WORKER_PLUGINS": "tests.toy_family.worker",
           "TOONFORGE_STARTER_MODELS": "false"}


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(out, format="PNG")
    return out.getvalue()


def _dataset_zip(pairs: int = 12) -> bytes:
    """Random pictures and their colour negatives, in the invert task's layout."""
    rng = np.random.default_rng(3)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for i in range(pairs):
            photo = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            zf.writestr(f"photos/{i:02d}.png", _png(photo))
            zf.writestr(f"negatives/{i:02d}.png", _png(255 - photo))
    return out.getvalue()


# Run in a subprocess: the test process never registers the toy family (its registries
# are shared by the whole session).
SEED = f"""
import sys
from pathlib import Path

import torch

import tests.toy_family.spec
from model_store.manifest import Lineage
from model_store.store import ModelStore
from tests.toy_family.spec import InvertHyperparameters
from tests.toy_family.worker import Inverter
from worker.training.publish import publish_version

module = Inverter({SIDE})
with torch.no_grad():  # the identity map: the trivial predictor a new version must beat
    module.mix.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
    module.mix.bias.zero_()
publish_version(ModelStore(Path(sys.argv[1])), model_name="{MODEL}", arch_name="toy-invert",
                module=module, lineage=Lineage(source="scratch"), activate=True, int8=False,
                arch_kwargs={{"size": {SIDE}}},
                hyperparameters=InvertHyperparameters(epochs=1, batch_size=1,
                                                      image_size={SIDE}))
"""


def _seed_directory_store(root: Path) -> None:
    """A directory store with inverter@1 active: the identity map (weight I, bias 0)."""
    proc = subprocess.run([sys.executable, "-c", SEED, str(root)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _store_push(source: Path, remote: RemoteStore, store_dir: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "worker.cli", "store", "push", str(source)], cwd=REPO,
        env={**os.environ, **PLUGINS, **remote.process_env(store_dir)},
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _hammer(servers: list[ApiServer]) -> ReplicaHammer:
    return ReplicaHammer(servers, "/infer/invert",
                         _png(np.full((20, 20, 3), (200, 120, 40), np.uint8)), "image/png")


def _readyz(server: ApiServer) -> dict:
    return httpx.get(f"{server.url}/readyz", timeout=5).json()


def _served_from_own_cache(store_dir: Path, remote: RemoteStore, version: int) -> None:
    """Every file of the served version is a link into ``store_dir``'s own blob cache, to
    the blob named by the manifest's sha256 (the cache verified it on arrival)."""
    # The manifest as stored (raw JSON: this process does not register the toy task).
    raw = remote.models().objects.get(manifest_key(MODEL, version))
    assert raw is not None
    manifest = json.loads(raw)
    # The replica's tree of that version (one per file set: it holds no weights.pt).
    trees = list((store_dir / "cache" / "trees" / "models" / MODEL / str(version)).iterdir())
    assert len(trees) == 1, trees
    assert "weights.pt" in manifest["files"] and not (trees[0] / "weights.pt").exists()
    for graph in manifest["graphs"].values():
        link = trees[0] / graph["file"]
        assert link.is_file(), f"{link} is not in {store_dir}'s cache"
        target = link.resolve()
        sha = manifest["files"][graph["file"]]["sha256"]
        assert target == (store_dir / "cache" / "blobs" / sha).resolve(), target
        assert target.is_relative_to(store_dir.resolve()), target


@pytest.fixture()
def stack(backend: JobBackend, s3_server: S3Server, tmp_path: Path
          ) -> Iterator[tuple[list[ApiServer], WorkerPool, RemoteStore]]:
    redis_url = redis_or_skip()
    url = s3_server.new_store_url()
    remote = RemoteStore(url, s3_server.env(url), tmp_path / "test-views")
    seed = tmp_path / "seed-store"
    _seed_directory_store(seed)
    first = _store_push(seed, remote, tmp_path / "cli-1")
    assert "versions copied: 1 (inverter@1)" in first and "pointers copied: 1" in first, first
    again = _store_push(seed, remote, tmp_path / "cli-2")  # idempotent: nothing twice
    assert "versions copied: 0" in again and "versions skipped: 1" in again, again

    env = {k: v for k, v in backend.env.items() if k != "TOONFORGE_STORE_DIR"}
    env.update({**PLUGINS, "TOONFORGE_RELOAD_POLL_S": "30",
                "TOONFORGE_RELOAD_REDIS_URL": redis_url,
                "TOONFORGE_RELOAD_REDIS_CHANNEL": f"toonforge-test:{uuid.uuid4().hex[:12]}",
                "TOONFORGE_JOB_EVENTS_POLL_S": "0.2"})
    workers = WorkerPool(env, tmp_path / "worker", remote=remote)
    servers: list[ApiServer] = []
    try:
        workers.start("w1", wait=False)  # imports torch while the replicas start
        for i in (1, 2):
            own = tmp_path / f"replica-{i}"
            servers.append(ApiServer(own, tmp_path / f"replica-{i}.log",
                                     {**env, "TOONFORGE_REPLICA_ID": f"replica-{i}"},
                                     remote=remote, store_dir=own))
        deadline = time.monotonic() + 10
        while not all(_readyz(s)["reload"]["connected"] for s in servers):
            assert time.monotonic() < deadline, "the replicas never subscribed"
            time.sleep(0.1)
        workers.workers[0].wait_ready(timeout=90)
        yield servers, workers, remote
    finally:
        for server in servers:
            server.stop()
        workers.stop_all()


@pytest.mark.parametrize("backend", ["redis-postgres"], indirect=True)
def test_a_job_published_to_s3_is_announced_to_both_replicas(
        backend: JobBackend, stack: tuple[list[ApiServer], WorkerPool, RemoteStore]) -> None:
    servers, workers, remote = stack
    one, two = servers
    assert backend.env["TOONFORGE_DATABASE_URL"].startswith("postgresql")
    worker_dir = workers.store_dir("w1")
    dirs = [one.store_dir, two.store_dir, worker_dir]
    for a in dirs:  # three private directories, none inside another
        assert sum(a == b or a in b.parents for b in dirs) == 1, dirs
    for server in servers:
        models = {m["name"]: m for m in _readyz(server)["models"]}
        assert models[MODEL]["loaded_version"] == models[MODEL]["active_version"] == 1

    with _hammer(servers) as hammer:
        hammer.wait_for(servers, f"{MODEL}@1", timeout=10)
        with two.client() as http:  # the dataset through replica 2 ...
            r = http.post("/datasets", params={"task": "invert", "id": "negatives"},
                          content=_dataset_zip(), headers={"content-type": "application/zip"})
            assert r.status_code == 201, r.text
        with one.client() as http:  # ... the job through replica 1
            r = http.post("/jobs/finetune", json={
                "task": "invert", "dataset_id": "negatives", "base": MODEL,
                "target_model": MODEL, "auto_activate": True,
                "hyperparameters": {"epochs": 25, "batch_size": 4, "lr": 0.05,
                                    "image_size": SIDE}})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            deadline = time.monotonic() + 90
            while (job := http.get(f"/jobs/{job_id}").json())["status"] not in (
                    "succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline, f"job {job['status']}\n{workers.logs()}"
                time.sleep(0.2)
        assert job["status"] == "succeeded", f"{job['error']}\n{workers.logs()}"
        assert job["result_version"] == f"{MODEL}@2" and job["activated"], job
        entry = remote.models().history(MODEL)[-1]  # what the worker wrote to the bucket
        assert entry["version"] == 2 and entry["previous"] == 1
        at = datetime.fromisoformat(entry["at"]).timestamp()
        firsts = hammer.wait_for(servers, f"{MODEL}@2", timeout=10)
        time.sleep(0.3)  # a few more answers on the new version
    assert not hammer.failures, hammer.failures[:5]
    for server in servers:
        assert firsts[server.url] - at <= SWAP_WITHIN_S, (firsts, at)
        assert len(hammer.answers[server.url]) > 5
        models = {m["name"]: m for m in _readyz(server)["models"]}
        assert models[MODEL]["loaded_version"] == models[MODEL]["active_version"] == 2
    assert "announced by" in two.log()

    # Each replica serves from blobs in its own cache; the worker's directory holds the
    # job's work (pushed to the bucket too), and no replica's links lead into it.
    for server in servers:
        _served_from_own_cache(server.store_dir, remote, 2)
    assert (worker_dir / "jobs" / job_id / "checkpoint.pt").is_file()
    assert remote.artifacts().has_checkpoint(job_id)
    for server in servers:
        for link in (server.store_dir / "cache" / "trees").rglob("*"):
            if link.is_symlink():
                assert link.resolve().is_relative_to(server.store_dir.resolve()), link


def test_store_push_refuses_without_an_s3_url_or_a_store_directory(
        s3_server: S3Server, tmp_path: Path) -> None:
    def push(source: Path, extra: dict[str, str]) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "TOONFORGE_STORE_URL"}
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "--store", str(tmp_path / "cli"), "store",
             "push", str(source)], cwd=REPO, env={**env, **extra}, capture_output=True,
            text=True, timeout=60)

    (tmp_path / "store" / "models").mkdir(parents=True)
    no_url = push(tmp_path / "store", {})
    assert no_url.returncode == 1 and "set TOONFORGE_STORE_URL" in no_url.stderr, no_url
    url = s3_server.new_store_url()
    not_a_store = push(tmp_path / "elsewhere", s3_server.env(url))
    assert not_a_store.returncode == 1, not_a_store
    assert "is not a store directory" in not_a_store.stderr, not_a_store.stderr
    empty = push(tmp_path / "store", s3_server.env(url))  # a store with nothing in it
    assert empty.returncode == 0 and "versions copied: 0" in empty.stdout, empty
    missing = subprocess.run(
        [sys.executable, "-m", "worker.cli", "store", "push"], cwd=REPO, capture_output=True,
        text=True, timeout=60, env={**os.environ, **s3_server.env(url)})
    assert missing.returncode == 2 and "needs a local store DIR" in missing.stderr
