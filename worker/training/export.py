"""ONNX export and the parity proof that every published version carries.

Each architecture names the graphs it serves (``Architecture.export_graphs``). They are exported
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

from model_store.manifest import GraphSpec, OutputParity, ParityReport, TensorSpec
from tasks import get_task
from worker.nets.registry import Architecture, ExportGraph
from worker.training.ort_budget import cpu_session

OPSET = 17
# The parity rule, per graph output (docs/ARCHITECTURE.md, "Export and parity"):
#   max |onnxruntime - torch| <= DEFAULT_TOLERANCE + DEFAULT_RTOL * max |torch|.
# The absolute term alone (the earlier rule) keeps outputs in [0, 1] or [-1, 1] as
# strict as ever; the relative term scales with the output, because float32 rounding does:
# a GoogLeNet whose logits span -19..+16 was 1.4e-4 away from its own float64 run, so an
# ONNX graph cannot be held closer than that to it. rtol 1e-4 is 10x the worst float32-only
# error seen (ORT 2.0e-4 off on logits near 19: 1e-5 of the scale); every family measured
# here is at 1e-7..5e-6 of its scale; a 0.1% weight drift is ~10x over the bound.
DEFAULT_TOLERANCE = 1e-4
DEFAULT_RTOL = 1e-4


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
    tolerance: float = DEFAULT_TOLERANCE, rtol: float = DEFAULT_RTOL,
) -> ParityReport:
    """Run every exported graph of ``task`` in onnxruntime (CPU) and PyTorch on the parity
    inputs; an output passes when its worst |ORT - torch| is at most ``tolerance`` (atol)
    + ``rtol`` * its largest |torch| value (both over all parity inputs)."""
    files = {role: io.file for role, io in get_task(task).graphs.items()}
    worst: dict[str, float] = {}
    scale: dict[str, float] = {}
    calls = 0
    for role, graph in graphs.items():
        session = cpu_session(directory / files[role])
        for inputs in graph.parity_inputs:
            with torch.no_grad():
                expected = _as_tuple(graph.module(*inputs))
            feeds = {n: t.numpy() for n, t in zip(graph.input_names, inputs, strict=True)}
            got = session.run(list(graph.output_names), feeds)
            for name, ref, out in zip(graph.output_names, expected, got, strict=True):
                ref64 = ref.numpy().astype(np.float64)
                if tuple(ref.shape) != tuple(out.shape):
                    err = float("inf")
                else:
                    err = float(np.max(np.abs(ref64 - out))) if ref64.size else 0.0
                # NaN or inf anywhere (either side) is a failure, never a pass: NaN would
                # lose every comparison, including max() below.
                if not np.isfinite(err):
                    err = float("inf")
                key = f"{role}.{name}"
                worst[key] = max(worst.get(key, 0.0), err)
                finite = np.abs(ref64[np.isfinite(ref64)])
                ref_scale = float(finite.max()) if finite.size else 0.0
                scale[key] = max(scale.get(key, 0.0), ref_scale)
            calls += 1
    outputs = {}
    for key, err in worst.items():
        bound = tolerance + rtol * scale[key]
        outputs[key] = OutputParity(max_abs_error=err, scale=scale[key], atol=tolerance,
                                    rtol=rtol, bound=bound, passed=bool(err <= bound))
    passed = bool(outputs) and all(o.passed for o in outputs.values())
    failing = ", ".join(f"{k} {o.max_abs_error:.3g} > {o.bound:.3g} (scale {o.scale:.3g})"
                        for k, o in outputs.items() if not o.passed)
    return ParityReport(
        passed=passed,
        tolerance=tolerance,
        rule="relative",
        rtol=rtol,
        max_abs_error=worst,
        outputs=outputs,
        inputs=f"{calls} fixed seeded batches (batch sizes 1 and >1)",
        torch_version=torch.__version__,
        onnxruntime_version=ort.__version__,
        detail="" if passed else (
            f"max |onnxruntime - torch| above {tolerance:g} + {rtol:g} * max |torch|: {failing}"
            if outputs else "no graph output was compared"
        ),
    )


def export_and_verify(
    module: nn.Module, arch: Architecture, directory: Path, tolerance: float | None = None,
    config: Mapping[str, Any] | None = None, *, rtol: float | None = None,
) -> ExportResult:
    """Export ``module`` as ``arch`` into ``directory`` and prove the graphs match it.
    ``config`` is the version's serving config (the manifest's preprocessing): the graphs'
    fixed input sizes follow it; None is the arch's defaults."""
    module.eval()
    graphs = arch.export_graphs(module, config)
    task = get_task(arch.task)
    expected = task.graphs
    if set(graphs) - set(expected) or set(task.roles_held(graphs)) != set(graphs):
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
    parity = check_parity(graphs, directory, arch.task,
                          DEFAULT_TOLERANCE if tolerance is None else tolerance,
                          DEFAULT_RTOL if rtol is None else rtol)
    return ExportResult(graphs=specs, parity=parity)
