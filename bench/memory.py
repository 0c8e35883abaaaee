"""Memory per request (not a test): the worst allowed input of each endpoint against the
real API on real-size graphs, peak RSS side by side for two checkouts.

For each case the API process's RSS (``/proc/<pid>/status``) is read before the request,
sampled every 5 ms during it (peak) and read again 15 s after (the idle release runs after
``memory_release_idle_s``). Each checkout gets a fresh ``uvicorn service.app:app`` with
default settings; ``--repo`` names the checkouts (the second is usually one from before a
change: ``git worktree add /tmp/before <commit>``).

Store: bench/results/store (bench/serving.py builds it: every task's default model, random
weights in the official layouts), copied to bench/results/memory-store with an INT8 variant
forced onto the cartoon version (the random-weight DCT-Net misses the fidelity gate; its
memory does not depend on the weights), so both precisions can be asked for.

Usage:
    .venv/bin/python bench/memory.py [--repo . --repo /tmp/before] [--cases cartoonize-2048]
    .venv/bin/python bench/memory.py --cases cartoonize-2048-int8 --concurrent 8
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving import RESULTS, build_store  # noqa: E402

MB = 1024 * 1024
STORE = RESULTS / "memory-store"
INT8_FILE = "model.int8.onnx"
# RSS "after" is read this long after the answer (the idle release needs
# memory_release_idle_s + one reload poll, longer on a loaded machine).
SETTLE_S = 15


def _png(width: int, height: int) -> bytes:
    """One colour: a few hundred KB at most that decode to the full size (the issue's)."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


# name -> (path with query, body maker); the widest parameters each endpoint allows.
CASES = {
    "cartoonize-2048-int8": ("/cartoonize?max_side=2048&precision=int8", lambda: _png(6000, 6000)),
    "cartoonize-2048-fp32": ("/cartoonize?max_side=2048&precision=fp32", lambda: _png(6000, 6000)),
    "cartoonize-default": ("/cartoonize", lambda: _png(6000, 6000)),
    "matte-cutout": ("/matte?output=cutout", lambda: _png(6000, 6000)),
    "classify": ("/classify", lambda: _png(6000, 6000)),
    "autoencode": ("/autoencode?size=1024", lambda: _png(6000, 6000)),
    "generate-64": ("/generate?n=64&seed=1", lambda: b""),
}


def build_memory_store() -> Path:
    if (STORE / "models").is_dir():
        return STORE
    source = build_store(RESULTS / "store").root
    tmp = STORE.with_name(STORE.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    vdir = tmp / "models" / "cartoon" / "versions" / "1"
    from worker.training.quantize import quantize_graph  # torch-free, but the worker's code

    rng = np.random.default_rng(0)
    feeds = [{"image": rng.uniform(-1, 1, (1, 3, 128, 128)).astype(np.float32)}
             for _ in range(4)]
    quantize_graph(vdir / "model.onnx", vdir / INT8_FILE, feeds)
    from model_store.manifest import file_entries

    manifest = json.loads((vdir / "manifest.json").read_text())
    manifest["files"] = {k: v.model_dump() for k, v in file_entries(vdir).items()}
    manifest["variants"]["int8"].update(passed=True, graphs={"main": INT8_FILE},
                                        reason="bench: forced (random weights)")
    (vdir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    tmp.rename(STORE)
    return STORE


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Api:
    def __init__(self, repo: Path, store: Path, log: Path, env: dict[str, str]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, "PYTHONPATH": f"{repo}:{repo}/sdk", "TOONFORGE_STORE_DIR": str(store),
                "TOONFORGE_DATA_DIR": str(log.parent / "data"), "TOONFORGE_RATE_LIMIT_RPS": "0",
                **env}
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1",
             "--port", str(self.port)], cwd=repo, env=full, stdout=self._log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the API did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


def _send(api: Api, path: str, body: bytes) -> httpx.Response:
    if body:
        return httpx.post(api.url + path, content=body, timeout=900,
                          headers={"content-type": "image/png"})
    return httpx.post(api.url + path, json={}, timeout=900)


def measure(api: Api, path: str, body: bytes, concurrent: int = 1) -> dict[str, object]:
    pid = api.process.pid
    before, peak, stop = rss_mb(pid), 0.0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mb(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as clients:
        answers = list(clients.map(lambda _: _send(api, path, body), range(concurrent)))
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    time.sleep(SETTLE_S)
    statuses = [a.status_code for a in answers]
    return {"status": statuses[0] if concurrent == 1 else statuses,
            "before_mb": round(before), "peak_mb": round(peak),
            "after_mb": round(rss_mb(pid)), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", action="append", type=Path, help="checkouts to compare")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the API")
    parser.add_argument("--concurrent", type=int, default=1, help="copies sent at once")
    args = parser.parse_args()
    repos = args.repo or [ROOT]
    env = dict(item.split("=", 1) for item in args.env)
    store = build_memory_store()
    results: dict[str, dict[str, dict[str, object]]] = {}
    for repo in repos:
        for case in args.cases:  # a fresh process per case: one's arena is not the next's
            path, body = CASES[case]
            api = Api(repo.resolve(), store, RESULTS / f"memory-{repo.name}-{case}.log", env)
            try:
                row = measure(api, path, body(), args.concurrent)
                results.setdefault(case, {})[str(repo)] = row
            finally:
                api.stop()
            print(f"{case:24} {str(repo):24} {json.dumps(row)}", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
