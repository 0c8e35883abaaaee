"""The GPU paths in one table, in under 5 minutes on a CUDA machine (run it with bench/gpu.sh).

1. **providers**: onnxruntime's CUDA and TensorRT execution providers each open a small
   graph and run it (an unloadable provider is reported with onnxruntime's reason, and the
   bench goes on: TensorRT needs its own libraries);
2. **serving**: the real API (``python -m uvicorn service.app:app``) with
   ``TOONFORGE_PROVIDERS`` = CUDA then CPU, serving a u2netp (/matte, 512x512 JPEG in, cut-out
   out) and a GoogLeNet (/classify), random weights in the official layouts, fp32; each at 1,
   8 and 16 clients sending back to back for ``--seconds``, with dynamic batching off, then
   on (one API each). /readyz must report CUDAExecutionProvider first for both models, else
   the row says what served;
3. **training**: a short matte fine-tune (u2netp, synthetic mattes, 320 px resize, 288 crop,
   batch 8) on ``cuda`` with mixed precision (``torch.autocast`` + ``GradScaler``, the
   trainer's ``mixed_precision``), and the same in fp32 for the ratio: seconds per epoch
   after the first (median).

Needs one environment with a CUDA build of torch and onnxruntime-gpu (not the CPU
onnxruntime: the two packages share files), e.g. the worker image plus
``pip install onnxruntime-gpu``, or ``pip install -c requirements/lock.txt -e '.[worker,gpu]'``
with torch from the CUDA wheel index. Without a CUDA device, or without onnxruntime's CUDA
provider, it says which is missing and exits with status 2, having measured nothing.
Writes bench/results/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
NO_CUDA_STATUS = 2


def missing_cuda() -> list[str]:
    """What this environment lacks for the bench (empty: it can run)."""
    problems = []
    try:
        import torch
    except ImportError:
        return ["torch is not installed (the worker extra)"]
    if not torch.cuda.is_available():
        build = torch.version.cuda or "a CPU-only build"
        problems.append(f"torch {torch.__version__} ({build}) sees no CUDA device")
    try:
        import onnxruntime as ort
    except ImportError:
        return [*problems, "onnxruntime is not installed"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        problems.append(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider"
                        f" (it offers {', '.join(ort.get_available_providers())}): install"
                        " onnxruntime-gpu instead of onnxruntime")
    return problems


# ------------------------------------------------------------------ 1. providers
def provider_rows(work: Path) -> list[dict[str, Any]]:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], [0.01] * 216)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y"], ["z"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 64, 64])], [weight])
    path = work / "probe.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    rows = []
    for provider in PROVIDERS:
        started = time.perf_counter()
        try:
            session = ort.InferenceSession(str(path), providers=[provider,
                                                                 "CPUExecutionProvider"])
            session.run(None, {"x": np.ones((1, 3, 64, 64), np.float32)})
            used = session.get_providers()[0]
            result = ("loaded, ran" if used == provider
                      else f"NOT loaded: onnxruntime fell back to {used} (see its log above)")
        except Exception as exc:  # a provider's library missing or broken: say so, go on
            result = f"NOT loaded: {type(exc).__name__}: {str(exc)[:160]}"
        rows.append({"part": "provider", "what": provider, "result": result,
                     "seconds": time.perf_counter() - started})
    return rows


# ------------------------------------------------------------------ 2. serving
def build_store(root: Path) -> Path:
    import torch

    from bench.serving import local_store
    from model_store.manifest import Lineage
    from worker.nets.registry import create_model
    from worker.training.publish import publish_version

    store = local_store(root)
    torch.manual_seed(0)
    for name, arch, labels in (("matte", "u2netp", None),
                               ("classify", "googlenet", [f"c{i}" for i in range(1000)])):
        if name not in store.model_names():
            publish_version(store, model_name=name, arch_name=arch,
                            module=create_model(arch).eval(), labels=labels,
                            lineage=Lineage(source="scratch"), int8=False, activate=True)
    return root


def serving_rows(store: Path, seconds: float, clients: list[int]) -> list[dict[str, Any]]:
    import httpx

    from bench.peers import load, photo_jpeg
    from tests.support.server import ApiServer

    photo = photo_jpeg()
    rows = []
    for batching in ("false", "true"):
        env = {"TOONFORGE_STORE_URL": "", "TOONFORGE_BATCHING": batching,
               "TOONFORGE_PROVIDERS": '["CUDAExecutionProvider", "CPUExecutionProvider"]'}
        server = ApiServer(store, RESULTS / f"gpu-api-batching-{batching}.log", env,
                           wait_path="/readyz")
        try:
            ready = httpx.get(f"{server.url}/readyz", timeout=30).json()
            served = {m["name"]: (m["providers"] or ["?"])[0] for m in ready["models"]}
            for path, model in (("/matte", "matte"), ("/classify", "classify")):

                def send(http: Any, url: str = f"{server.url}{path}") -> Any:
                    return http.post(url, content=photo,
                                     headers={"content-type": "image/jpeg"})

                load(send, 2, 2.0)  # warm-up (CUDA kernels, cuDNN algorithm search)
                for n in clients:
                    latencies = sorted(load(send, n, seconds))
                    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
                    rows.append({
                        "part": "serve", "what": f"{path} batching {batching} {n} clients",
                        "result": f"{len(latencies) / seconds:.1f} req/s, p50"
                                  f" {statistics.median(latencies) * 1000:.1f} ms, p99"
                                  f" {p99 * 1000:.1f} ms on {served.get(model, '?')}",
                        "rps": len(latencies) / seconds, "provider": served.get(model)})
        finally:
            server.stop()
    return rows


# ------------------------------------------------------------------ 3. training
def training_rows(root: Path, epochs: int) -> list[dict[str, Any]]:
    import torch

    from core.settings import Settings
    from families.matte.spec import MatteHyperparameters
    from model_store.factory import open_dataset_store
    from worker.starter import publish_synthetic_dataset
    from worker.training.trainers import ProgressEvent, TrainContext, get_trainer

    datasets = open_dataset_store(Settings(_env_file=None, store_dir=root, store_url=None))
    data = publish_synthetic_dataset(datasets, "matte", "gpu-mattes", n=64)
    seconds: dict[bool, float] = {}
    rows = []
    for amp in (True, False):
        ends: list[float] = []

        def progress(event: ProgressEvent, ends: list[float] = ends) -> None:
            if event.kind == "epoch":
                torch.cuda.synchronize()
                ends.append(time.perf_counter())

        hp = MatteHyperparameters(epochs=epochs, resize=320, crop=288, batch_size=8,
                                  mixed_precision=amp)
        trainer = get_trainer("matte")
        torch.manual_seed(0)
        trainer.train(TrainContext(dataset_dir=data, work_dir=root / f"train-amp-{amp}",
                                   hyperparameters=hp, arch="u2netp",
                                   device=torch.device("cuda"), on_progress=progress))
        per_epoch = statistics.median(b - a for a, b in zip(ends, ends[1:], strict=False))
        seconds[amp] = per_epoch
        rows.append({"part": "train", "what": f"matte u2netp cuda {'amp' if amp else 'fp32'}",
                     "result": f"{per_epoch:.2f} s/epoch (64 images, 288 px, batch 8)",
                     "seconds": per_epoch})
    rows.append({"part": "train", "what": "amp speed-up",
                 "result": f"{seconds[False] / seconds[True]:.2f}x fp32's epoch time"})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="each load window")
    parser.add_argument("--clients", default="1,8,16")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per run")
    args = parser.parse_args()

    problems = missing_cuda()
    if problems:
        print("bench/gpu.sh: this machine cannot run the GPU bench; nothing was measured:",
              file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return NO_CUDA_STATUS

    import torch

    started = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA"
          f" {torch.version.cuda}), {os.cpu_count()} CPUs, {platform.node()};"
          f" load average {os.getloadavg()[0]:.2f}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="toonforge-gpu-") as tmp:
        work = Path(tmp)
        rows += provider_rows(work)
        store = build_store(work / "store")
        rows += serving_rows(store, args.seconds, [int(c) for c in args.clients.split(",")])
        rows += training_rows(work / "store", args.epochs)
    width = max(len(r["what"]) for r in rows)
    print(f"\n{'part':<9} {'what':<{width}}  result")
    for row in rows:
        print(f"{row['part']:<9} {row['what']:<{width}}  {row['result']}")
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s")
    (RESULTS / "gpu.json").write_text(json.dumps({"rows": rows, "seconds": total}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
