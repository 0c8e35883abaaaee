"""Hot reload under load: no request fails while versions swap back and forth."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.api.conftest import ApiServer, encode
from tests.api.tiny_models import build_tiny_store
from tests.support.stores import store_at

HAMMER_THREADS = 4
POLLER_DEADLINE_S = 2.0


class Hammer:
    """Client threads posting /matte until stopped, recording every answer."""

    def __init__(self, server: ApiServer, body: bytes) -> None:
        self.seen: Counter[str] = Counter()
        self.failures: list[str] = []
        self._server, self._body = server, body
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(HAMMER_THREADS)]

    def _run(self) -> None:
        with self._server.client(timeout=30) as http:
            while not self._stop.is_set():
                try:
                    response = http.post("/matte", content=self._body,
                                         headers={"content-type": "image/jpeg"})
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.seen[response.headers["x-model-version"]] += 1
                    else:
                        self.failures.append(f"{response.status_code} {response.text}")

    def latest_count(self, ref: str) -> int:
        with self._lock:
            return self.seen[ref]

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def wait_until_served(http: httpx.Client, version: int, deadline_s: float) -> float:
    """Seconds until /models/matte reports ``version`` loaded (fails after the deadline)."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if http.get("/models/matte").json()["loaded_version"] == version:
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"matte@{version} was not served within {deadline_s}s")


def swap_back_and_forth(server: ApiServer, store_root: Path, body: bytes, rounds: int,
                        poller_deadline_s: float) -> Hammer:
    store = store_at(store_root)  # the server's store (its bucket on S3)
    with server.client() as http, Hammer(server, body) as hammer:
        for _ in range(rounds):
            # Through this process: it has swapped before it answers.
            response = http.post("/models/matte/activate", json={"version": 2})
            assert response.status_code == 200, response.text
            assert http.get("/models/matte").json()["loaded_version"] == 2
            seen_v2 = hammer.latest_count("matte@2")
            deadline = time.monotonic() + 10
            while hammer.latest_count("matte@2") == seen_v2 and time.monotonic() < deadline:
                time.sleep(0.02)
            # Behind its back, as a worker or another replica would: the poller follows.
            store.activate("matte", 1)
            wait_until_served(http, 1, poller_deadline_s)
            time.sleep(0.2)
    return hammer


@pytest.mark.store
@pytest.mark.parametrize("batching", ["false", "true"])
def test_reload_under_load_tiny(start_server, tmp_path, batching):
    root = tmp_path / "store"
    build_tiny_store(root)
    server = start_server(root, batching=batching)
    body = encode(Image.new("RGB", (200, 150), "orange"), "JPEG")
    hammer = swap_back_and_forth(server, root, body, rounds=3,
                                 poller_deadline_s=POLLER_DEADLINE_S)
    assert hammer.failures == []
    assert hammer.seen["matte@1"] > 0 and hammer.seen["matte@2"] > 0
    log = server.log()
    assert "retired matte@1" in log and "retired matte@2" in log
    assert "released matte@" in log  # in-flight requests drained, then the old one freed


def test_reload_under_load_real_models(start_server, store_copy, chelsea):
    """The same with real U-2-Net-p versions (load and warm-up take real time)."""
    server = start_server(store_copy)
    body = encode(chelsea.resize((160, 106)), "JPEG")
    # Loading u2netp competes with the hammer for 2 cores; allow it beyond the poll interval.
    hammer = swap_back_and_forth(server, store_copy, body, rounds=2,
                                 poller_deadline_s=POLLER_DEADLINE_S + 8.0)
    assert hammer.failures == []
    assert hammer.seen["matte@1"] > 0 and hammer.seen["matte@2"] > 0
