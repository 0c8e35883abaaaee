"""Where a request's own time goes: cProfile of the API in-process, under real HTTP load.

The app runs in this process under uvicorn (the same protocol ``python -m service`` uses)
on a thread; load clients on other threads post the bench photo. Two kinds of thread are
profiled, each with its own ``cProfile.Profile`` (a profile sees only the thread that
enabled it):

- the event loop's thread (HTTP parsing, routing, parameter validation, responses);
- the pool's work threads: every callable ``InferencePool.run`` hands them is wrapped (a
  monkeypatch of this process's class; decode, prepare, finish, encode, and the graph run
  itself when it does not batch).

A batcher's collector thread only runs the graph and is not profiled. The summary gives,
per request, the CPU milliseconds of each stage (``time.thread_time``; cumulative time of
the stage's function); ``--top`` prints the heaviest functions too. cProfile's own overhead inflates
Python-heavy stages (the event loop most), so read the split, not the sum.

    .venv/bin/python bench/request_profile.py --clients 1,8 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import os
import pstats
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import RESULTS, build_store, load, photo_jpeg  # noqa: E402
from bench.serving import local_store  # noqa: E402

# Stages by the function that does them: (label, file suffix, function name).
STAGES = [
    # With batching on, requests' graph runs are on the batcher's thread; what shows here is
    # then the pool's idle arena shrink (pool.release_memory), not request work.
    ("graph run on work threads", "onnxruntime_inference_collection.py", "run"),
    ("decode (decode_image)", "service/imaging.py", "decode_image"),
    ("prepare: resize + tensor", "processing.py", "matte_input"),
    ("prepare: resize + tensor", "processing.py", "classify_input"),
    ("finish: mask resize", "processing.py", "matte_mask"),
    ("finish: cut-out", "processing.py", "cutout"),
    ("finish: top-k", "processing.py", "top_k"),
    ("encode (encode_image)", "service/imaging.py", "encode_image"),
]
LOOP_STAGES = [
    ("loop: read upload", "service/imaging.py", "read_uploads"),
    ("loop: h11 parse/send", "h11_impl.py", "data_received"),
    ("loop: response JSON", "pydantic", "model_dump_json"),
]


class ThreadProfiles:
    """One cProfile per thread that asks; merged at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_thread: dict[int, cProfile.Profile] = {}
        self.active = False

    def mine(self) -> cProfile.Profile:
        ident = threading.get_ident()
        with self._lock:
            # CPU time of the thread, not wall time: on a shared machine a stage's wall time
            # is mostly waiting for a core, and the CPU it takes is what overlaps or not.
            return self.by_thread.setdefault(ident, cProfile.Profile(time.thread_time))

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def profiled(*args: Any) -> Any:
            if not self.active:
                return fn(*args)
            profile = self.mine()
            profile.enable()
            try:
                return fn(*args)
            finally:
                profile.disable()
        return profiled

    def stats(self) -> pstats.Stats | None:
        profiles = list(self.by_thread.values())
        if not profiles:
            return None
        stats = pstats.Stats(profiles[0], stream=io.StringIO())
        for profile in profiles[1:]:
            stats.add(profile)
        return stats


def cumulative_ms(stats: pstats.Stats | None, suffix: str, name: str) -> float:
    if stats is None:
        return 0.0
    total = 0.0
    for (file, _, func), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and suffix in file:
            total += cum
    return total * 1000


def total_ms(stats: pstats.Stats | None) -> float:
    return 1000 * stats.total_tt if stats is not None else 0.0  # type: ignore[attr-defined]


def serve_in_thread(store: Path, env: dict[str, str]) -> tuple[str, Any, threading.Thread,
                                                                 ThreadProfiles]:
    os.environ.update({"TOONFORGE_STORE_DIR": str(store),
                       "TOONFORGE_DATA_DIR": str(store.parent / "profile-data"),
                       "TOONFORGE_OPEN_SCOPES": "infer,train,admin",
                       "TOONFORGE_RATE_LIMIT_RPS": "0", **env})
    import socket

    import uvicorn

    from core.settings import get_settings
    from service.app import create_app
    from service.http11 import JsonErrorH11Protocol
    from service.inference.pool import InferencePool

    work = ThreadProfiles()
    original = InferencePool.run

    async def run(self: InferencePool, fn: Callable[..., Any], *args: Any) -> Any:
        return await original(self, work.wrap(fn), *args)

    InferencePool.run = run  # type: ignore[method-assign]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    get_settings.cache_clear()
    config = uvicorn.Config(create_app(get_settings()), host="127.0.0.1", port=port,
                            log_config=None, log_level="warning", http=JsonErrorH11Protocol)
    server = uvicorn.Server(config)

    def serve() -> None:
        asyncio.run(_serve(server))

    thread = threading.Thread(target=serve, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return url, server, thread, work


async def _serve(server: Any) -> None:
    server.bench_loop = asyncio.get_running_loop()  # where the loop's profile is switched
    await server.serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=RESULTS / "peers-store",
                        help="bench/peers.py's store (built here when it lacks the models)")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batching", choices=["true", "false"], default="true")
    parser.add_argument("--top", type=int, default=0, help="also print the N heaviest functions")
    parser.add_argument("--sort", default="tottime", help="pstats order for --top")
    parser.add_argument("--paths", default="/matte?output=cutout,/classify")
    args = parser.parse_args()
    if not {"matte", "classify"} <= set(local_store(args.store).model_names()):
        build_store(args.store, 4)
    url, server, thread, work = serve_in_thread(
        args.store, {"TOONFORGE_BATCHING": args.batching})
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    photo = photo_jpeg()

    def send(http: httpx.Client, path: str) -> httpx.Response:
        return http.post(f"{url}{path}", content=photo, headers={"content-type": "image/jpeg"})

    print(f"load average {os.getloadavg()}; batching {args.batching}", flush=True)
    try:
        for path in args.paths.split(","):
            for clients in (int(c) for c in args.clients.split(",")):
                with httpx.Client(timeout=60) as http:
                    assert send(http, path).status_code == 200
                work.by_thread.clear()
                loop = ThreadProfiles()
                # The loop's profile is enabled from inside the loop (its own thread).
                asyncio.run_coroutine_threadsafe(_enable(loop), server.bench_loop).result()
                work.active = True
                started = time.perf_counter()
                latencies = load(lambda http, p=path: send(http, p), clients, args.seconds)
                elapsed = time.perf_counter() - started
                work.active = False
                asyncio.run_coroutine_threadsafe(_disable(loop), server.bench_loop).result()
                report(path, clients, latencies, elapsed, work.stats(), loop.stats(), args.top,
                       args.sort)
    finally:
        server.should_exit = True
        thread.join(10)


async def _enable(profiles: ThreadProfiles) -> None:
    profiles.mine().enable()


async def _disable(profiles: ThreadProfiles) -> None:
    profiles.mine().disable()


def report(path: str, clients: int, latencies: list[float], elapsed: float,
           work: pstats.Stats | None, loop: pstats.Stats | None, top: int,
           sort: str = "tottime") -> None:
    n = len(latencies)
    print(f"\n{path} clients={clients}: {n} requests, {n / elapsed:.2f} req/s,"
          f" p50 {sorted(latencies)[n // 2] * 1000:.1f} ms", flush=True)
    print(f"  work threads total {total_ms(work) / n:.1f} ms/request;"
          f" event loop {total_ms(loop) / n:.1f} ms/request")
    seen: dict[str, float] = {}
    for label, suffix, name in STAGES:
        seen[label] = seen.get(label, 0.0) + cumulative_ms(work, suffix, name) / n
    for label, suffix, name in LOOP_STAGES:
        seen[label] = seen.get(label, 0.0) + cumulative_ms(loop, suffix, name) / n
    for label, ms in seen.items():
        print(f"  {label:28s} {ms:7.2f} ms/request")
    for title, stats in (("work threads", work), ("event loop", loop)):
        if top and stats is not None:
            print(f"  -- {title}: top {top} by {sort}")
            out = io.StringIO()
            stats.stream = out  # type: ignore[attr-defined]
            stats.sort_stats(sort).print_stats(top)
            print("\n".join(line for line in out.getvalue().splitlines()[-top - 2:]))


if __name__ == "__main__":
    main()
