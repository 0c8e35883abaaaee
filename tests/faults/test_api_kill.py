"""``kill -9`` of the API while it is activating versions as fast as a client can ask.

Activation replaces the pointer atomically and appends to history.jsonl under the model's
lock (docs/ARCHITECTURE.md); a process killed at any instant must leave a store whose
pointer names an existing version whose files match their sha256, whose history parses
line by line, and which a fresh API serves.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from model_store.manifest import sha256_file
from model_store.store import ModelStore
from tests.api.tiny_models import build_tiny_store
from tests.support.archives import image_bytes
from tests.support.server import ApiServer

MODEL = "matte"  # the tiny store has matte v1 (active) and v2
OPEN = {"TOONFORGE_OPEN_SCOPES": "infer,train,admin"}


class Activator(threading.Thread):
    """POSTs activate v1, v2, v1, ... until told to stop or the server goes away."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.done = 0
        self.stop = threading.Event()
        self.statuses: list[int] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self.stop.is_set():
                try:
                    r = http.post(f"/models/{MODEL}/activate",
                                  json={"version": 1 + self.done % 2})
                except httpx.TransportError:
                    return  # killed under us
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.done += 1


def assert_store_consistent(root: Path) -> int:
    """The pointer names a version whose files are intact; history parses. Returns it."""
    store = ModelStore(root)
    pointer = (store.active_path(MODEL)).read_text()
    assert pointer.strip().isdigit(), f"pointer holds {pointer!r}"
    version = int(pointer)
    assert version in store.versions(MODEL)
    manifest = store.manifest(MODEL, version)
    vdir = store.version_dir(MODEL, version)
    assert manifest.files, "a manifest with no hashed files"
    for name, entry in manifest.files.items():
        assert sha256_file(vdir / name) == entry.sha256, name
    lines = (store.model_dir(MODEL) / "history.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]  # each line whole JSON
    assert entries, "no activation recorded"
    assert store.history(MODEL) == entries
    return version


@pytest.mark.parametrize("after", [2, 9, 23])
def test_kill_during_activations_leaves_a_consistent_servable_store(
        tmp_path: Path, after: int) -> None:
    root = tmp_path / "store"
    build_tiny_store(root)
    server = ApiServer(root, tmp_path / "api-1.log", OPEN)
    activator = Activator(server.url)
    try:
        activator.start()
        deadline = time.monotonic() + 30
        while activator.done < after and time.monotonic() < deadline:
            time.sleep(0.002)
        assert activator.done >= after, (activator.done, activator.statuses[-5:], server.log())
        server.process.kill()  # SIGKILL, with an activation in flight
        server.process.wait(timeout=10)
        activator.join(timeout=10)
    finally:
        activator.stop.set()
        server.stop()
    assert set(activator.statuses) <= {200}, activator.statuses
    version = assert_store_consistent(root)

    fresh = ApiServer(root, tmp_path / "api-2.log", OPEN)
    try:
        with fresh.client(timeout=30) as http:
            assert http.get(f"/models/{MODEL}").json()["active"] == version
            r = http.post("/matte", content=image_bytes(32, 32),
                          headers={"Content-Type": "image/png"})
            assert r.status_code == 200, r.text
            assert r.headers["X-Model-Version"] == f"{MODEL}@{version}"
            assert http.get("/readyz").status_code == 200
            # and it can keep activating from there
            other = 1 if version == 2 else 2
            assert http.post(f"/models/{MODEL}/activate",
                             json={"version": other}).status_code == 200
    finally:
        fresh.stop()
    assert assert_store_consistent(root) == other
