"""ONNX export and the parity proof that every published version carries.

Each architecture names the graphs it serves (``ArchSpec.export_graphs``). They are exported
with a dynamic batch axis, checked with ``onnx.checker``, then run in onnxruntime on fixed
inputs and compared with the PyTorch module output by output.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from model_store.manifest import GraphSpec, ParityReport, TensorSpec
from tasks import get_task
from worker.nets.registry import ArchSpec, ExportGraph

OPSET = 17
# Absolute tolerance of |onnxruntime - torch| per output element (docs/ARCHITECTURE.md).
DEFAULT_TOLERANCE = 1e-4


class ExportFailed(RuntimeError):
    pass


class ParityFailed(RuntimeError):
    def __init__(self, report: ParityReport) -> None:
        super().__init__(report.detail)
        self.report = report


@dataclass
class ExportResult:
    graphs: dict[str, GraphSpec]
    parity: ParityReport


def _tensor_specs(values: list[onnx.ValueInfoProto]) -> list[TensorSpec]:
    specs = []
    for value in values:
        dims: list[int | str] = [
            d.dim_param if d.dim_param else int(d.dim_value)
            for d in value.type.tensor_type.shape.dim
        ]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        specs.append(TensorSpec(name=value.name, shape=dims, dtype=str(np.dtype(dtype))))
    return specs


def export_graph(graph: ExportGraph, path: Path, opset: int = OPSET) -> GraphSpec:
    """Export one graph to ``path`` and check it; returns its tensor description."""
    graph.module.eval()
    # The TorchScript-based exporter handles our dynamic H/W and ceil-mode pools directly
    # and takes ~0.1 s per graph; the dynamo exporter takes seconds per graph here.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                graph.module,
                graph.example_inputs,
                str(path),
                input_names=list(graph.input_names),
                output_names=list(graph.output_names),
                dynamic_axes=graph.dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many unrelated types
            raise ExportFailed(f"ONNX export of {path.name} failed: {exc}") from exc
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportFailed(f"onnx.checker rejected {path.name}: {exc}") from exc
    return GraphSpec(
        file=path.name,
        inputs=_tensor_specs(list(model.graph.input)),
        outputs=_tensor_specs(list(model.graph.output)),
        opset=opset,
    )


def _as_tuple(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def check_parity(
    graphs: dict[str, ExportGraph], directory: Path, task: str,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityReport:
    """Run every exported graph of ``task`` in onnxruntime (CPU) and PyTorch on the parity
    inputs."""
    files = {role: io.file for role, io in get_task(task).graphs.items()}
    worst: dict[str, float] = {}
    calls = 0
    for role, graph in graphs.items():
        session = ort.InferenceSession(
            str(directory / files[role]), providers=["CPUExecutionProvider"]
        )
        for inputs in graph.parity_inputs:
            with torch.no_grad():
                expected = _as_tuple(graph.module(*inputs))
            feeds = {n: t.numpy() for n, t in zip(graph.input_names, inputs, strict=True)}
            got = session.run(list(graph.output_names), feeds)
            for name, ref, out in zip(graph.output_names, expected, got, strict=True):
                if tuple(ref.shape) != tuple(out.shape):
                    err = float("inf")
                else:
                    err = float(np.max(np.abs(ref.numpy().astype(np.float64) - out)))
                key = f"{role}.{name}"
                worst[key] = max(worst.get(key, 0.0), err)
            calls += 1
    passed = bool(worst) and all(v <= tolerance for v in worst.values())
    failing = {k: v for k, v in worst.items() if not v <= tolerance}
    return ParityReport(
        passed=passed,
        tolerance=tolerance,
        max_abs_error=worst,
        inputs=f"{calls} fixed seeded batches (batch sizes 1 and >1)",
        torch_version=torch.__version__,
        onnxruntime_version=ort.__version__,
        detail="" if passed else f"max |onnxruntime - torch| above {tolerance}: {failing}",
    )


def export_and_verify(
    module: nn.Module, arch: ArchSpec, directory: Path, tolerance: float | None = None,
    config: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export ``module`` as ``arch`` into ``directory`` and prove the graphs match it.
    ``config`` is the version's serving config (the manifest's preprocessing): the graphs'
    fixed input sizes follow it; None is the arch's defaults."""
    module.eval()
    graphs = arch.export_graphs(module, config)
    expected = get_task(arch.task).graphs
    if set(graphs) != set(expected):
        raise ExportFailed(
            f"{arch.name} exports graphs {sorted(graphs)}, task {arch.task} needs"
            f" {sorted(expected)}"
        )
    specs: dict[str, GraphSpec] = {}
    for role, graph in graphs.items():
        io = expected[role]
        if (graph.input_names, graph.output_names) != (io.inputs, io.outputs):
            raise ExportFailed(
                f"{arch.name} {role} graph names {graph.input_names}->{graph.output_names}"
                f" do not match the {arch.task} contract {io.inputs}->{io.outputs}"
            )
        specs[role] = export_graph(graph, directory / io.file)
    parity = check_parity(graphs, directory, arch.task, tolerance or DEFAULT_TOLERANCE)
    return ExportResult(graphs=specs, parity=parity)
