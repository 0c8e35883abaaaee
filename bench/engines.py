"""onnxruntime vs PyTorch eager, per architecture, on the same input and thread count."""

from __future__ import annotations

import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import onnxruntime as ort
import torch

from worker.nets.registry import create_model, get_arch, list_archs
from worker.training.export import export_and_verify


def p50_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


# The batch-1 input the API feeds each built-in architecture's graph by default (dctnet: a
# 720x480 photo); an architecture not listed (a plugin's) is timed on its export example.
SERVING_SHAPES = {"dctnet": (1, 3, 480, 720), "u2net": (1, 3, 320, 320),
                  "u2netp": (1, 3, 320, 320), "googlenet": (1, 3, 224, 224),
                  "dcgan": (1, 100, 1, 1), "ae": (1, 3, 64, 64)}


def serving_input(arch: str, example: torch.Tensor) -> torch.Tensor:
    """A batch-1 input of the size the API feeds the graph."""
    shape = SERVING_SHAPES.get(arch)
    if shape is None:
        return example[:1]
    gen = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=gen) * 2 - 1


def compare_engines(threads: int, repeats: int, archs: list[str] | None = None) -> list[dict]:
    torch.set_num_threads(threads)
    rows = []
    for arch in archs or list_archs():
        architecture = get_arch(arch)
        torch.manual_seed(0)
        module = create_model(arch).eval()
        graph = architecture.export_graphs(module)["main"]
        with tempfile.TemporaryDirectory() as tmp:
            export_and_verify(module, architecture, Path(tmp))
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(
                str(Path(tmp) / "model.onnx"), opts, providers=["CPUExecutionProvider"]
            )
        x = serving_input(arch, graph.example_inputs[0])
        feeds = {graph.input_names[0]: x.numpy()}
        with torch.no_grad():
            torch_ms = p50_ms(partial(graph.module, x), repeats)
        ort_ms = p50_ms(partial(session.run, None, feeds), repeats)
        rows.append({"arch": arch, "input": "x".join(map(str, x.shape)),
                     "torch_ms": torch_ms, "ort_ms": ort_ms, "speedup": torch_ms / ort_ms})
    return rows
