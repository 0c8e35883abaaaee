"""Reload latency across replicas (not a test): poll vs Redis announcement.

Two real API replicas (``uvicorn service.app:app``) on one tiny store (tests/api/
tiny_models.py: matte v1 and v2). A client posts /matte to replica 2 back to back while
the version is activated through replica 1's API, N times back and forth; the latency is
the activation's time in the store's history.jsonl to the first answer of the new version
from replica 2 (the OTHER replica). Two setups, printed side by side:

- ``poll``: no Redis (``TOONFORGE_RELOAD_REDIS_URL=off``), the default 1 s poll;
- ``redis``: announcements on Redis, with the poll at 30 s (so it cannot be the cause);
- ``redis + s3`` (``--s3``): the same on the S3 store (moto's server on 127.0.0.1,
  tests/support/s3.py), each replica with its own empty cache directory: the latency now
  includes fetching the version's blobs into the replica's cache on first use.

Usage: .venv/bin/python bench/reload.py [--rounds 10] [--redis redis://127.0.0.1:6379/15]
       [--s3]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.api.tiny_models import build_tiny_store  # noqa: E402
from tests.support.s3 import CREDENTIALS, S3Server  # noqa: E402
from tests.support.server import ApiServer  # noqa: E402
from tests.support.stores import RemoteStore, new_remote, use_server  # noqa: E402


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 48), (200, 120, 40)).save(out, "JPEG")
    return out.getvalue()


def measure(env: dict[str, str], rounds: int, work: Path, s3: bool = False) -> list[float]:
    store_root = work / f"store-{uuid.uuid4().hex[:6]}"
    store = build_tiny_store(store_root)
    remote: RemoteStore | None = None
    if s3:  # a fresh bucket seeded from the directory; the history is read from it
        remote = new_remote(work / f"views-{uuid.uuid4().hex[:6]}", store_root)
        store = remote.models()
    servers = [ApiServer(store_root, work / f"{env['name']}-{i}.log",
                         {k: v for k, v in env.items() if k != "name"}, remote=remote,
                         store_dir=(work / f"{env['name']}-cache-{i}") if remote else None)
               for i in (1, 2)]
    answers: list[tuple[float, str]] = []
    stop = threading.Event()
    body = _jpeg()

    def hammer() -> None:
        with servers[1].client(timeout=10) as http:
            while not stop.is_set():
                r = http.post("/matte", content=body, headers={"content-type": "image/jpeg"})
                if r.status_code == 200:
                    answers.append((time.time(), r.headers["x-model-version"]))

    thread = threading.Thread(target=hammer)
    try:
        time.sleep(1.0)  # subscriptions up
        thread.start()
        latencies = []
        for i in range(rounds):
            version = 2 if i % 2 == 0 else 1
            httpx.post(f"{servers[0].url}/models/matte/activate", json={"version": version},
                       timeout=10).raise_for_status()
            at = datetime.fromisoformat(store.history("matte")[-1]["at"]).timestamp()
            deadline = time.monotonic() + 10
            first = None
            while first is None and time.monotonic() < deadline:
                first = next((t for t, v in list(answers) if t >= at and v == f"matte@{version}"),
                             None)
                time.sleep(0.01)
            if first is None:
                raise RuntimeError(f"replica 2 never served matte@{version}")
            latencies.append(first - at)
            time.sleep(0.3 + (hash(i) % 7) / 10)  # de-phase from the poll
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        for server in servers:
            server.stop()
    return latencies


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{statistics.median(ms):7.1f} {p95:7.1f} {ms[-1]:7.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--s3", action="store_true",
                        help="also measure Redis announcements on the S3 store (moto)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        on_s3: list[float] = []
        if args.s3:
            for key, value in CREDENTIALS.items():
                os.environ.setdefault(key, value)
            server = S3Server(work / "moto.log")
            use_server(server)
            try:
                on_s3 = measure({"name": "s3", "TOONFORGE_RELOAD_REDIS_URL": args.redis,
                                 "TOONFORGE_RELOAD_POLL_S": "30",
                                 "TOONFORGE_RELOAD_REDIS_CHANNEL":
                                     f"bench:{uuid.uuid4().hex[:8]}"},
                                args.rounds, work, s3=True)
            finally:
                server.stop()
        poll = measure({"name": "poll", "TOONFORGE_RELOAD_REDIS_URL": "off",
                        "TOONFORGE_RELOAD_POLL_S": "1.0"}, args.rounds, work)
        redis = measure({"name": "redis", "TOONFORGE_RELOAD_REDIS_URL": args.redis,
                         "TOONFORGE_RELOAD_POLL_S": "30",
                         "TOONFORGE_RELOAD_REDIS_CHANNEL": f"bench:{uuid.uuid4().hex[:8]}"},
                        args.rounds, work)
    print(f"activation -> first answer of the new version on the other replica,"
          f" {args.rounds} activations each (ms)")
    print(f"{'setup':<28} {'p50':>7} {'p95':>7} {'max':>7}")
    print(f"{'poll (reload_poll_s=1.0)':<28} {summary(poll)}")
    print(f"{'redis announcement':<28} {summary(redis)}")
    if on_s3:
        print(f"{'redis announcement, S3 store':<28} {summary(on_s3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
