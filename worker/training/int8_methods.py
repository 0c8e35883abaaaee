"""How a graph is quantized: the candidate methods an INT8 variant may be made with, and the
per-layer sensitivity that decides which layers a method keeps in fp32.

Every candidate is static QDQ with per-channel int8 weights in 7 bits (``reduce_range``; why
in worker/training/quantize.py) and uint8 activations, after onnxruntime's pre-processing,
with the output layer in float (``output_layer``). They differ in how activation ranges are
calibrated and in how many layers stay float:

- ``minmax``: each activation's observed range (the method every variant was made with
  before candidates existed; first, so a model that passed then is made the same way now);
- ``percentile``: the range that holds 99.999% of the observed values (one outlier no
  longer widens the step of every other value);
- ``entropy``: the range minimising the KL divergence between the float and the quantized
  histograms;
- ``minmax+fp32-N%``: MinMax, with the N% of compute layers (Conv, ConvTranspose, Gemm,
  MatMul) that add the most error kept in float. A layer's error is measured, on a few
  calibration inputs, as the relative error of its output in the MinMax graph against the
  float graph, less that of its input: what the layer itself adds (its weights' and its
  input's rounding), not what it inherits.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]

# Inputs run through both graphs to rank the layers (each costs two runs with every
# intermediate tensor kept).
SENSITIVITY_INPUTS = 4
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# An output activation: its input's producer also stays float (the output layer).
_ACTIVATIONS = frozenset({"Sigmoid", "Tanh", "Clip", "Relu", "Softmax", "LeakyRelu"})


@dataclass(frozen=True)
class QuantMethod:
    """One way to quantize: the calibration of activation ranges, and the share of compute
    layers kept in float by sensitivity (0: only the output layer)."""

    name: str
    calibration: str  # onnxruntime CalibrationMethod member: MinMax, Percentile, Entropy
    float_share: float = 0.0

    def describe(self) -> str:
        kept = (f"; the {self.float_share:.0%} most sensitive compute layers and the output"
                " layer float" if self.float_share else "; output layer float")
        return (f"{self.name}: onnxruntime.quantization.quantize_static: QDQ, per-channel,"
                " uint8 activations, int8 weights in 7 bits (reduce_range),"
                f" {self.calibration} calibration, after quant_pre_process{kept}")


MINMAX = QuantMethod("minmax", "MinMax")
# Tried in this order until one passes the unchanged gate (quantize.py bounds the time).
CANDIDATES: tuple[QuantMethod, ...] = (
    MINMAX,
    QuantMethod("percentile", "Percentile"),
    QuantMethod("entropy", "Entropy"),
    QuantMethod("minmax+fp32-10%", "MinMax", 0.10),
    QuantMethod("minmax+fp32-25%", "MinMax", 0.25),
)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[Feeds]) -> None:
        self._feeds = feeds
        self._it: Iterator[Feeds] = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def output_layer(path: Path) -> list[str]:
    """Names of the nodes that make the graph's outputs, and of the layer under an output
    activation: they stay float. The output is what the gate compares, and an 8-bit
    activation there alone costs up to half a level of it (e.g. a sigmoid mask); one layer
    in float costs little time (U-2-Net's 6 -> 1 channel fuse conv)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    keep: list[str] = []
    for output in graph.output:
        node = producer.get(output.name)
        if node is None:
            continue
        keep.append(node.name)
        below = producer.get(node.input[0]) if node.input else None
        if node.op_type in _ACTIVATIONS and below is not None:
            keep.append(below.name)
    return [name for name in dict.fromkeys(keep) if name]


def prepare(source: Path, directory: Path) -> Path:
    """``source`` after onnxruntime's quantization pre-processing (shape inference and
    optimisation: folds BN, fuses, so scales are better and QDQ pairs fewer), written in
    ``directory``; ``source`` itself when the optimiser cannot take the graph."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = directory / f"{source.stem}.prepared.onnx"
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:  # an optimiser that cannot take the graph: quantize as is
        log.warning("quant_pre_process failed on %s (%s); quantizing it as exported",
                    source.name, exc)
        return source
    return prepared


def quantize_prepared(prepared: Path, target: Path, feeds: list[Feeds],
                      method: QuantMethod = MINMAX, keep_float: Sequence[str] = ()) -> None:
    """Static QDQ INT8 of the ``prepare``d graph by ``method``, calibrated on ``feeds``,
    written to ``target``; the output layer and the nodes ``keep_float`` stay float."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(_Reader, CalibrationDataReader):  # type: ignore[misc]  # untyped base
        pass

    exclude = list(dict.fromkeys([*output_layer(prepared), *keep_float]))
    quantize_static(
        str(prepared), str(target), Reader(feeds),
        # reduce_range: 7-bit weights, exact on every x86 kernel (quantize.py docstring)
        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod[method.calibration],
        calibration_providers=["CPUExecutionProvider"],
        nodes_to_exclude=exclude,
    )


def quantize_graph(source: Path, target: Path, feeds: list[Feeds],
                   method: QuantMethod = MINMAX) -> None:
    """Static QDQ INT8 of ``source`` calibrated on ``feeds``, written to ``target``; the
    output layer stays float (``output_layer``). A method that keeps sensitive layers float
    first quantizes by MinMax to measure them."""
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        prepared = prepare(source, Path(tmp))
        keep: list[str] = []
        if method.float_share:
            probe = Path(tmp) / "minmax.onnx"
            quantize_prepared(prepared, probe, feeds, MINMAX)
            keep = most_sensitive(prepared, probe, feeds, method.float_share)
        quantize_prepared(prepared, target, feeds, method, keep)


# ---------------------------------------------------------------- per-layer sensitivity
def _with_tensors(path: Path, names: Sequence[str], target: Path) -> None:
    """``path`` with ``names`` added to its outputs (written to ``target``)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                              for n in names if n not in present)
    onnx.save(model, str(target))


def _run(path: Path, names: list[str], feeds: list[Feeds]) -> list[dict[str, np.ndarray]]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [dict(zip(names, session.run(names, f), strict=True)) for f in feeds]


def layer_errors(prepared: Path, quantized: Path, feeds: list[Feeds]) -> dict[str, float]:
    """Compute node of the float graph -> the relative error it adds in the QDQ graph:
    ``|q(out) - f(out)| / |f(out)|`` less the same of its (dequantized) input, summed over
    ``feeds``. Nodes the QDQ graph does not hold by the same name are left out."""
    import onnx

    floats = {n.name: n for n in onnx.load(str(prepared), load_external_data=False).graph.node
              if n.op_type in COMPUTE_OPS and n.name and n.input and n.output}
    quants = {n.name: n for n in onnx.load(str(quantized), load_external_data=False).graph.node
              if n.name in floats}
    if not quants:
        return {}
    pairs = {name: ((floats[name].input[0], floats[name].output[0]),
                    (quants[name].input[0], quants[name].output[0])) for name in quants}
    float_names = sorted({t for (f, _) in pairs.values() for t in f})
    quant_names = sorted({t for (_, q) in pairs.values() for t in q})
    with tempfile.TemporaryDirectory(prefix="int8-sens-") as tmp:
        float_path, quant_path = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        _with_tensors(prepared, float_names, float_path)
        _with_tensors(quantized, quant_names, quant_path)
        float_out = _run(float_path, float_names, feeds)
        quant_out = _run(quant_path, quant_names, feeds)

    def relative(f: np.ndarray, q: np.ndarray) -> float:
        return float(np.linalg.norm(q - f) / max(float(np.linalg.norm(f)), 1e-12))

    added: dict[str, float] = {}
    for name, ((f_in, f_out), (q_in, q_out)) in pairs.items():
        added[name] = sum(relative(fo[f_out], qo[q_out]) - relative(fo[f_in], qo[q_in])
                          for fo, qo in zip(float_out, quant_out, strict=True))
    return added


def most_sensitive(prepared: Path, quantized: Path, feeds: list[Feeds], share: float
                   ) -> list[str]:
    """The ``share`` of compute layers (at least one) adding the most error, worst first."""
    errors = layer_errors(prepared, quantized, feeds[:SENSITIVITY_INPUTS])
    count = max(1, round(len(errors) * share)) if errors else 0
    return sorted(errors, key=lambda name: -errors[name])[:count]
