"""Clients that hammer API replicas while a version swaps (tests of reload across replicas).

One thread per replica posts the same image to one route back to back; every answer is
recorded as (wall time received, ``X-Model-Version``), every failure kept, so a test can
say when each replica first served a version and that no request failed on the way.
"""

from __future__ import annotations

import threading
import time

import httpx

from tests.support.server import ApiServer


class ReplicaHammer:
    def __init__(self, servers: list[ApiServer], path: str, body: bytes,
                 content_type: str) -> None:
        self.answers: dict[str, list[tuple[float, str]]] = {s.url: [] for s in servers}
        self.failures: list[str] = []
        self._path, self._body, self._content_type = path, body, content_type
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(s,)) for s in servers]

    def _run(self, server: ApiServer) -> None:
        with server.client(timeout=10) as http:
            while not self._stop.is_set():
                try:
                    response = http.post(self._path, content=self._body,
                                         headers={"content-type": self._content_type})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{server.url}: {exc!r}")
                    continue
                if response.status_code != 200:
                    self.failures.append(
                        f"{server.url}: {response.status_code} {response.text[:300]}")
                    continue
                self.answers[server.url].append((time.time(),
                                                 response.headers["x-model-version"]))

    def first(self, server: ApiServer, ref: str, after: float = 0.0) -> float | None:
        """When ``server`` first answered with ``ref`` after ``after``; and it never answered
        with anything else after that (one sequential client: answers are in order)."""
        seen = [(t, v) for t, v in list(self.answers[server.url]) if t >= after]
        at = next((i for i, (_, v) in enumerate(seen) if v == ref), None)
        if at is None:
            return None
        assert all(v == ref for _, v in seen[at:]), f"{server.url} went back: {seen[at:]}"
        return seen[at][0]

    def wait_for(self, servers: list[ApiServer], ref: str, timeout: float,
                 after: float = 0.0) -> dict[str, float]:
        """Each replica's first answer with ``ref`` (after ``after``), waiting up to
        ``timeout`` seconds for all of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            firsts = {s.url: self.first(s, ref, after) for s in servers}
            if all(t is not None for t in firsts.values()):
                return {url: t for url, t in firsts.items() if t is not None}
            time.sleep(0.05)
        raise AssertionError(f"not every replica served {ref} within {timeout} s: "
                             f"{ {u: a[-3:] for u, a in self.answers.items()} }")

    def __enter__(self) -> ReplicaHammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
