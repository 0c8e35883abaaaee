"""Soak and memory benchmark (not a test): the real API on a store of real-size graphs.

Two runs, each against a fresh ``uvicorn service.app:app`` this script starts:

- ``soak`` (default): N mixed requests (cartoonize, matte, classify, generate, autoencode)
  from 8 client threads while another thread activates matte v1 and v2 back and forth
  through the API; prints the server's RSS at start, middle, end and after 10 s idle,
  and every status.
- ``burst``: B concurrent /matte requests, three times, then a quiet minute; prints RSS
  before, after each burst and after the quiet period, with the statuses (a burst larger
  than max_concurrency + max_queued is partly answered 503 ``overloaded``, by design).

Usage:
    .venv/bin/python bench/soak.py [--requests 2000] [--clients 8]
    .venv/bin/python bench/soak.py --burst [--burst-size 200] [--quiet-s 60]
    ... --env TOONFORGE_MAX_QUEUED=1000 --env TOONFORGE_ORT_CPU_MEM_ARENA=true  (old setup)

The store (every task's default model, random weights in the official layouts, matte with
a second version) is built once under bench/results/store, as bench/serving.py does.
RSS is read from /proc (Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving import RESULTS, build_store, photo_bytes  # noqa: E402
from tests.support.server import ApiServer  # noqa: E402

MB = 1024 * 1024


def rss_mb(pid: int) -> dict[str, float]:
    """Resident set size now and at its peak (VmHWM), in MiB, from /proc/<pid>/status."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_mb": round(fields["VmHWM"], 1)}


def small_photo(side: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo_bytes())).resize((side, side)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# ------------------------------------------------------------------ soak
def _requests(photo: bytes, cartoon_photo: bytes) -> list[tuple[str, dict]]:
    jpeg = {"content-type": "image/jpeg"}
    return [
        ("/cartoonize", {"content": cartoon_photo, "headers": jpeg}),
        ("/matte", {"content": photo, "headers": jpeg}),
        ("/classify", {"content": photo, "headers": jpeg}),
        ("/generate?n=16", {}),
        ("/autoencode", {"content": photo, "headers": jpeg}),
    ]


def soak(server: ApiServer, total: int, clients: int, activate_every_s: float,
         quiet_s: float) -> dict:
    photo, cartoon_photo = photo_bytes(), small_photo(256)
    kinds = _requests(photo, cartoon_photo)
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(total))
    done = threading.Event()
    samples: dict[str, dict] = {"start": rss_mb(server.process.pid)}
    activations: Counter[str] = Counter()

    def client() -> None:
        with server.client(timeout=120) as http:
            for i in counter:  # next() on a shared iterator is atomic under the GIL
                path, kwargs = kinds[i % len(kinds)]
                try:
                    response = http.post(path, **kwargs)
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{path}: {exc!r}")
                    continue
                with lock:
                    statuses[f"{path.split('?')[0]} {response.status_code}"] += 1
                    if response.status_code >= 400:
                        errors.append(f"{path}: {response.status_code} {response.text[:200]}")
                    if i == total // 2:
                        samples["middle"] = rss_mb(server.process.pid)

    def activator() -> None:
        version = 2
        with server.client(timeout=120) as http:
            while not done.wait(activate_every_s):
                response = http.post("/models/matte/activate", json={"version": version})
                activations[f"matte@{version} {response.status_code}"] += 1
                version = 3 - version

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    switcher = threading.Thread(target=activator)
    switcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    switcher.join()
    samples["end"] = rss_mb(server.process.pid)
    time.sleep(quiet_s)
    samples[f"after {quiet_s:.0f} s quiet"] = rss_mb(server.process.pid)
    return {"requests": total, "clients": clients, "seconds": round(time.monotonic() - started, 1),
            "rss": samples, "statuses": dict(sorted(statuses.items())),
            "activations": dict(sorted(activations.items())),
            "errors": len(errors), "first_errors": errors[:5]}


# ------------------------------------------------------------------ bursts
async def _burst(url: str, size: int, body: bytes) -> Counter[str]:
    limits = httpx.Limits(max_connections=size + 10, max_keepalive_connections=size + 10)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        async def one() -> str:
            try:
                response = await http.post("/matte", content=body,
                                           headers={"content-type": "image/jpeg"})
            except httpx.HTTPError as exc:
                return type(exc).__name__
            code = response.status_code
            if code == 503:
                return f"503 {response.json()['error']['code']}"
            return str(code)

        return Counter(await asyncio.gather(*(one() for _ in range(size))))


def bursts(server: ApiServer, size: int, rounds: int, quiet_s: float) -> dict:
    body = photo_bytes()
    samples = [{"when": "before", **rss_mb(server.process.pid)}]
    for round_ in range(1, rounds + 1):
        started = time.monotonic()
        statuses = asyncio.run(_burst(server.url, size, body))
        samples.append({"when": f"after burst {round_}", **rss_mb(server.process.pid),
                        "seconds": round(time.monotonic() - started, 1),
                        "statuses": dict(statuses)})
    time.sleep(quiet_s)
    samples.append({"when": f"after {quiet_s:.0f} s quiet", **rss_mb(server.process.pid)})
    return {"burst_size": size, "samples": samples}


# ------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", action="store_true", help="the burst run instead of the soak")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--activate-every-s", type=float, default=2.0)
    parser.add_argument("--burst-size", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quiet-s", type=float, default=None,
                        help="idle time before the last RSS sample (60 s burst, 10 s soak)")
    parser.add_argument("--store", type=Path, default=RESULTS / "store")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra server environment (repeatable)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    store = build_store(args.store)
    env = dict(item.split("=", 1) for item in args.env)
    env.setdefault("TOONFORGE_LOG_LEVEL", "WARNING")
    kind = "burst" if args.burst else "soak"
    server = ApiServer(store.root, RESULTS / f"api-{kind}.log", env, wait_path="/readyz")
    try:
        if args.burst:
            report = bursts(server, args.burst_size, args.rounds,
                            60.0 if args.quiet_s is None else args.quiet_s)
        else:
            report = soak(server, args.requests, args.clients, args.activate_every_s,
                          10.0 if args.quiet_s is None else args.quiet_s)
        ready = httpx.get(f"{server.url}/readyz", timeout=30)
        report["readyz"] = ready.status_code
    finally:
        server.stop()
    report["env"] = env
    print(json.dumps(report, indent=2))
    (RESULTS / f"{kind}.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
