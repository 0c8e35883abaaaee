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
import threading
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
from tests.support.server import REPO, ApiServer

pytestmark = pytest.mark.local_store_only(
    "two replicas on one store directory (on S3: test_topology_s3.py)")

SWAP_WITHIN_S = 1.0


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 48), (200, 120, 40)).save(out, "JPEG")
    return out.getvalue()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Hammer:
    """One client thread per replica, posting /matte back to back; every answer recorded
    as (wall time received, version or error)."""

    def __init__(self, servers: list[ApiServer]) -> None:
        self.answers: dict[str, list[tuple[float, str]]] = {s.url: [] for s in servers}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(s,)) for s in servers]
        self._body = _jpeg()

    def _run(self, server: ApiServer) -> None:
        with server.client(timeout=10) as http:
            while not self._stop.is_set():
                try:
                    response = http.post("/matte", content=self._body,
                                         headers={"content-type": "image/jpeg"})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{server.url}: {exc!r}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{server.url}: {response.status_code} {response.text}")
                    continue
                self.answers[server.url].append((time.time(),
                                                 response.headers["x-model-version"]))

    def first(self, server: ApiServer, ref: str, after: float) -> float | None:
        """When ``server`` first answered with ``ref`` after ``after``; and it never answered
        with anything else after that (one sequential client: answers are in order)."""
        seen = [(t, v) for t, v in list(self.answers[server.url]) if t >= after]
        first = next((i for i, (_, v) in enumerate(seen) if v == ref), None)
        if first is None:
            return None
        assert all(v == ref for _, v in seen[first:]), f"{server.url} went back: {seen[first:]}"
        return seen[first][0]

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


def _activated_at(store: ModelStore, name: str, version: int) -> float:
    """The wall time the store recorded for the latest activation (history.jsonl)."""
    entry = store.history(name)[-1]
    assert entry["version"] == version
    return datetime.fromisoformat(entry["at"]).timestamp()


def _wait_for(hammer: Hammer, servers: list[ApiServer], ref: str, since: float,
              deadline_s: float) -> dict[str, float]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        firsts = {s.url: hammer.first(s, ref, since) for s in servers}
        if all(t is not None for t in firsts.values()):
            return {url: t for url, t in firsts.items() if t is not None}
        time.sleep(0.05)
    raise AssertionError(f"not every replica served {ref} within {deadline_s} s")


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


def test_an_activation_reaches_both_replicas_within_a_second(replicas, store_root):
    servers, env = replicas
    one, two = servers
    store = ModelStore(store_root)
    for i, server in enumerate(servers, 1):
        body = _readyz(server)
        assert body["replica"] == f"replica-{i}"
        assert body["reload"] == {"mode": "redis", "connected": True}
    with Hammer(servers) as hammer:
        time.sleep(0.3)  # both serving matte@1
        assert httpx.post(f"{one.url}/models/matte/activate", json={"version": 2},
                          timeout=10).json() == {"name": "matte", "active": 2, "previous": 1}
        at = _activated_at(store, "matte", 2)
        firsts = _wait_for(hammer, servers, "matte@2", at - 0.5, deadline_s=5)
        assert firsts[two.url] - at <= SWAP_WITHIN_S, (firsts, at)
        assert firsts[one.url] - at <= SWAP_WITHIN_S, (firsts, at)

        # The admin CLI announces too (it builds its store with the same notifier).
        cli = subprocess.run(
            [sys.executable, "-m", "worker.cli", "--store", str(store_root), "store",
             "activate", "matte", "1"], cwd=REPO, capture_output=True, text=True, timeout=60,
            env={**os.environ, **env})
        assert cli.returncode == 0, cli.stderr
        at = _activated_at(store, "matte", 1)
        firsts = _wait_for(hammer, servers, "matte@1", at, deadline_s=5)
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
        with Hammer(servers) as hammer:
            time.sleep(0.2)
            response = httpx.post(f"{one.url}/models/matte/activate", json={"version": 2},
                                  timeout=10)
            assert response.status_code == 200, response.text
            at = _activated_at(ModelStore(store_root), "matte", 2)
            firsts = _wait_for(hammer, servers, "matte@2", at - 0.5, deadline_s=5)
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
