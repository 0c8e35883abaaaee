"""Serving benchmark: prints, side by side in one run on this machine,

1. per endpoint: service p50 (HTTP, decode, pre/post-processing, encode) vs raw onnxruntime
   p50 (the same version's graph, same thread settings, on the same preprocessed input);
2. onnxruntime vs PyTorch eager per architecture;
3. throughput at 1, 4 and 8 concurrent clients with dynamic batching off and on.

Ratios only: nothing here passes or fails. Usage:  .venv/bin/python bench/serving.py [--quick]
Models are random weights in the official layouts (timings do not depend on the values).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engines import compare_engines, p50_ms  # noqa: E402
from core.settings import Settings  # noqa: E402
from model_store.factory import open_model_store  # noqa: E402
from model_store.store import ModelStore  # noqa: E402
from service.imaging import decode_image  # noqa: E402
from tasks import get_task  # noqa: E402
from tests.support.server import ApiServer  # noqa: E402

RESULTS = ROOT / "bench" / "results"
THREADS = 2  # this machine's cores; the API runs onnxruntime with the same intra-op count


def photo_bytes(side: int = 512) -> bytes:
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((side, side))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def local_store(root: Path) -> ModelStore:
    """The directory store at ``root``: the benches build one and start APIs on it
    (whatever TOONFORGE_STORE_URL says in the environment)."""
    return open_model_store(Settings(store_dir=root, store_url=None))


def build_store(root: Path) -> ModelStore:
    if (root / "models").is_dir() and len(list((root / "models").iterdir())) >= 5:
        return local_store(root)
    from tests.support.store import build_test_store

    return build_test_store(root, root.parent / "checkpoints")


def raw_session(store: ModelStore, model: str) -> tuple[ort.InferenceSession, dict]:
    version = store.active_version(model)
    manifest = store.manifest(model, version)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    path = store.local_version_dir(model, version) / "model.onnx"
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), manifest


def raw_input(task: str, image: Image.Image, preprocessing: dict) -> np.ndarray:
    """The main graph's input as the API builds it, from the version's typed config."""
    spec = get_task(task)
    config = spec.serving.model_validate(preprocessing)
    if spec.image_prepare is not None:
        return next(iter(spec.image_prepare(image, config).values()))
    assert spec.drawn_inputs is not None
    return next(iter(spec.drawn_inputs(config, np.random.default_rng(0)).values()))


# Endpoint of each task (served by its default model).
ENDPOINTS = {
    "cartoonize": "/cartoonize",
    "matte": "/matte?output=mask",
    "classify": "/classify",
    "generate": "/generate?n=1&seed=1",
    "autoencode": "/autoencode",
}


def service_vs_raw(url: str, store: ModelStore, photo: bytes, repeats: int) -> list[dict]:
    rows = []
    image = decode_image(photo, 10**9)
    with httpx.Client(timeout=120) as client:
        for task, path in ENDPOINTS.items():
            session, manifest = raw_session(store, get_task(task).default_model)
            x = raw_input(task, image, manifest.preprocessing)
            feeds = {manifest.graphs["main"].inputs[0].name: x}
            if task == "generate":
                send = partial(client.post, f"{url}{path}")
            else:
                send = partial(client.post, f"{url}{path}", content=photo,
                               headers={"content-type": "image/jpeg"})
            first = send()
            assert first.status_code == 200, first.text
            service_ms = p50_ms(send, repeats)
            ort_ms = p50_ms(partial(session.run, None, feeds), repeats)
            rows.append({"endpoint": path.split("?")[0], "arch": manifest.arch,
                         "input": "x".join(map(str, x.shape)), "service_ms": service_ms,
                         "ort_ms": ort_ms, "ratio": service_ms / ort_ms})
    return rows


def throughput(url: str, path: str, photo: bytes, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def loop() -> None:
        nonlocal errors
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < stop:
                start = time.perf_counter()
                r = client.post(f"{url}{path}", content=photo,
                                headers={"content-type": "image/jpeg"})
                with lock:
                    latencies.append((time.perf_counter() - start) * 1000)
                    errors += r.status_code != 200

    started = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {"clients": clients, "rps": len(latencies) / elapsed,
            "p50_ms": statistics.median(latencies), "errors": errors}


@contextlib.contextmanager
def running_api(store: Path, env: dict[str, str]) -> Iterator[str]:
    """The real API on ``store``; its log goes to bench/results so the tables stay readable."""
    name = "api-batching.log" if env.get("TOONFORGE_BATCHING") == "true" else "api.log"
    server = ApiServer(store, RESULTS / name, env, wait_path="/readyz")
    try:
        yield server.url
    finally:
        server.stop()


def fmt_table(rows: list[dict], cols: list[str]) -> str:
    def cell(v: object) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(cell(r[c])) for r in rows)) for c in cols]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(cell(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True))
              for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args()
    repeats, seconds = (5, 3.0) if args.quick else (30, 15.0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    store = build_store(RESULTS / "store")
    photo = photo_bytes()
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, "
                               f"{THREADS} threads", "repeats": repeats}

    base_env = {"TOONFORGE_ORT_INTRA_OP_THREADS": str(THREADS)}
    with running_api(store.root, {**base_env, "TOONFORGE_BATCHING": "false"}) as url:
        report["service_vs_raw"] = service_vs_raw(url, store, photo, repeats)
        print("\n== 1. service p50 vs raw onnxruntime p50 (1 client, 512x512 JPEG) ==")
        print(fmt_table(report["service_vs_raw"],
                        ["endpoint", "arch", "input", "service_ms", "ort_ms", "ratio"]))
        unbatched = {p: [throughput(url, p, photo, c, seconds) for c in (1, 4, 8)]
                     for p in ("/matte?output=mask", "/classify")}

    report["engines"] = compare_engines(THREADS, repeats)
    print("\n== 2. onnxruntime vs PyTorch eager (batch 1, same threads) ==")
    print(fmt_table(report["engines"], ["arch", "input", "torch_ms", "ort_ms", "speedup"]))

    with running_api(store.root, {**base_env, "TOONFORGE_BATCHING": "true"}) as url:
        batched = {p: [throughput(url, p, photo, c, seconds) for c in (1, 4, 8)]
                   for p in unbatched}
    rows = []
    for path in unbatched:
        for off, on in zip(unbatched[path], batched[path], strict=True):
            rows.append({"endpoint": path.split("?")[0], "clients": off["clients"],
                         "rps_off": off["rps"], "rps_on": on["rps"],
                         "on/off": on["rps"] / off["rps"], "p50_off_ms": off["p50_ms"],
                         "p50_on_ms": on["p50_ms"], "errors": off["errors"] + on["errors"]})
    report["batching"] = rows
    print(f"\n== 3. throughput, batching off vs on ({seconds:.0f} s per cell) ==")
    print(fmt_table(rows, ["endpoint", "clients", "rps_off", "rps_on", "on/off",
                           "p50_off_ms", "p50_on_ms", "errors"]))
    (RESULTS / "serving.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
