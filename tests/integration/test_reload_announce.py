"""Reload across replicas: an activation announced on Redis reaches every API replica at once.

Two real API processes on one store with a 30 s poll, so only the announcement can explain
a swap within a second; a client thread per replica posts /matte without pause while the
version is activated through replica 1's API, then through `toonforge store activate`.
Then with Redis unreachable: the activation still succeeds and the poll still reloads.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image

from model_store.store import ModelStore
from tests.api.tiny_models import build_tiny_store
from tests.integration.conftest import redis_or_skip
from tests.support.hammer import ReplicaHammer
from tests.support.server import REPO, ApiServer

pytestmark = pytest.mark.local_store_only(
    "two replicas on one store directory (on S3: test_topology_s3.py)")

# The replicas poll every 30 s here, so a swap seen within this bound came from the
# announcement, not the poll. The bound tells the two apart; it is not a latency target
# (bench/reload.py measures that), so it leaves room for a loaded 2-core machine.
SWAP_WITHIN_S = 5.0


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 48), (200, 120, 40)).save(out, "JPEG")
    return out.getvalue()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hammer(servers: list[ApiServer]) -> ReplicaHammer:
    return ReplicaHammer(servers, "/matte", _jpeg(), "image/jpeg")


def _activated_at(store: ModelStore, name: str, version: int) -> float:
    """The wall time the store recorded for the latest activation (history.jsonl)."""
    entry = store.history(name)[-1]
    assert entry["version"] == version
    return datetime.fromisoformat(entry["at"]).timestamp()


def _readyz(server: ApiServer) -> dict:
    return httpx.get(f"{server.url}/readyz", timeout=5).json()


@pytest.fixture()
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    build_tiny_store(root)  # matte@1 active, matte@2 published and inactive
    return root


@pytest.fixture()
def replicas(tmp_path: Path, store_root: Path) -> Iterator[tuple[list[ApiServer], dict]]:
    url = redis_or_skip()
    env = {"TOONFORGE_RELOAD_POLL_S": "30", "TOONFORGE_RELOAD_REDIS_URL": url,
           # a channel of its own: other test runs may share this Redis
           "TOONFORGE_RELOAD_REDIS_CHANNEL": f"toonforge-test:{uuid.uuid4().hex[:12]}"}
    servers: list[ApiServer] = []
    try:
        for i in (1, 2):
            servers.append(ApiServer(store_root, tmp_path / f"replica-{i}.log",
                                     {**env, "TOONFORGE_REPLICA_ID": f"replica-{i}"}))
        deadline = time.monotonic() + 10
        while not all(_readyz(s)["reload"]["connected"] for s in servers):
            assert time.monotonic() < deadline, "replicas never subscribed"
            time.sleep(0.1)
        yield servers, env
    finally:
        for server in servers:
            server.stop()


def test_an_activation_is_announced_to_both_replicas(replicas, store_root):
    servers, env = replicas
    one, two = servers
    store = ModelStore(store_root)
    for i, server in enumerate(servers, 1):
        body = _readyz(server)
        assert body["replica"] == f"replica-{i}"
        assert body["reload"] == {"mode": "redis", "connected": True}
    with _hammer(servers) as hammer:
        time.sleep(0.3)  # both serving matte@1
        assert httpx.post(f"{one.url}/models/matte/activate", json={"version": 2},
                          timeout=10).json() == {"name": "matte", "active": 2, "previous": 1}
        at = _activated_at(store, "matte", 2)
        firsts = hammer.wait_for(servers, "matte@2", timeout=10, after=at - 0.5)
        assert firsts[two.url] - at <= SWAP_WITHIN_S, (firsts, at)
        assert firsts[one.url] - at <= SWAP_WITHIN_S, (firsts, at)

        # The admin CLI announces too (it builds its store with the same notifier).
        cli = subprocess.run(
            [sys.executable, "-m", "worker.cli", "--store", str(store_root), "store",
             "activate", "matte", "1"], cwd=REPO, capture_output=True, text=True, timeout=60,
            env={**os.environ, **env})
        assert cli.returncode == 0, cli.stderr
        at = _activated_at(store, "matte", 1)
        firsts = hammer.wait_for(servers, "matte@1", timeout=10, after=at)
        assert max(firsts.values()) - at <= SWAP_WITHIN_S, (firsts, at)
    assert not hammer.failures, hammer.failures[:5]
    assert all(len(a) > 5 for a in hammer.answers.values())
    for server in servers:
        models = {m["name"]: m for m in _readyz(server)["models"]}
        assert models["matte"]["loaded_version"] == models["matte"]["active_version"] == 1
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert 'toonforge_model_served_version{model="matte"} 1.0' in metrics
    assert "announced by" in two.log()


def test_redis_unreachable_the_activation_succeeds_and_the_poll_reloads(tmp_path, store_root,
                                                                         caplog):
    env = {"TOONFORGE_RELOAD_POLL_S": "0.5",
           "TOONFORGE_RELOAD_REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0"}
    servers = []
    try:
        for i in (1, 2):
            servers.append(ApiServer(store_root, tmp_path / f"down-{i}.log",
                                     {**env, "TOONFORGE_REPLICA_ID": f"down-{i}"}))
        one, two = servers
        assert _readyz(two)["reload"] == {"mode": "redis", "connected": False}
        with _hammer(servers) as hammer:
            time.sleep(0.2)
            response = httpx.post(f"{one.url}/models/matte/activate", json={"version": 2},
                                  timeout=10)
            assert response.status_code == 200, response.text
            at = _activated_at(ModelStore(store_root), "matte", 2)
            firsts = hammer.wait_for(servers, "matte@2", timeout=5, after=at - 0.5)
            assert firsts[two.url] - at <= 0.5 + 2.0  # one poll interval plus a load
        assert not hammer.failures, hammer.failures[:5]
        assert "could not announce matte@2" in one.log()
    finally:
        for server in servers:
            server.stop()

    # The same in-process: a store with a notifier that cannot reach Redis still activates.
    from core.settings import Settings
    from model_store.notify import notifier_from_settings

    settings = Settings(_env_file=None, reload_redis_url=env["TOONFORGE_RELOAD_REDIS_URL"])
    store = ModelStore(store_root, notifier=notifier_from_settings(settings))
    with caplog.at_level("WARNING", logger="model_store.notify"):
        assert store.activate("matte", 1) == 2
    assert store.active_version("matte") == 1
    assert "could not announce matte@1" in caplog.text
