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
- ``minmax+fp32-N%``: MinMax, with the N% of the graph's nodes that add the most error
  kept in float. A node's error is measured, on a few calibration inputs, as the relative
  error of its output in the MinMax graph (after its quantize/dequantize pair) against the
  float graph, less that of its worst input: what the node itself adds (its weights' and
  its output's rounding), not what it inherits. Not only the convolutions: in U-2-Net the
  rounding of the upsampled side outputs that the fuse layer concatenates matters as much.

Entropy calibration (onnxruntime's ``CalibrationMethod.Entropy``) is not a candidate: on
u2netp and DCGAN graphs here its variants gave the same figures as MinMax, at twice the
calibration time.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.training.ort_budget import cpu_session

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]

# Inputs run through both graphs to rank the layers (each costs two runs with every
# intermediate tensor kept).
SENSITIVITY_INPUTS = 4
# An output activation: its input's producer also stays float (the output layer).
_ACTIVATIONS = frozenset({"Sigmoid", "Tanh", "Clip", "Relu", "Softmax", "LeakyRelu"})


@dataclass(frozen=True)
class QuantMethod:
    """One way to quantize: the calibration of activation ranges, and the share of the
    graph's nodes kept in float by sensitivity (0: only the output layer)."""

    name: str
    calibration: str  # onnxruntime CalibrationMethod member: MinMax, Percentile, Entropy
    float_share: float = 0.0

    def label(self) -> str:
        kept = (f"; the {self.float_share:.0%} most error-adding nodes and the output layer"
                " float" if self.float_share else "; output layer float")
        return (f"{self.name}: onnxruntime.quantization.quantize_static: QDQ, per-channel,"
                " uint8 activations, int8 weights in 7 bits (reduce_range),"
                f" {self.calibration} calibration, after quant_pre_process{kept}")


MINMAX = QuantMethod("minmax", "MinMax")
# Tried in this order until one passes the unchanged gate (quantize.py bounds the time).
CANDIDATES: tuple[QuantMethod, ...] = (
    MINMAX,
    QuantMethod("percentile", "Percentile"),
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
    session = cpu_session(path, optimize=False)
    return [dict(zip(names, session.run(names, f), strict=True)) for f in feeds]


def layer_errors(prepared: Path, quantized: Path, feeds: list[Feeds]) -> dict[str, float]:
    """Node of the float graph -> the relative error it adds in the QDQ graph, summed over
    ``feeds``: ``|q(out) - f(out)| / |f(out)|`` of its output as its consumers see it (after
    its own quantize/dequantize pair, so an activation's rounding counts for the node that
    makes it), less the largest of the same over its activation inputs. Nodes the QDQ graph
    does not hold by the same name, or that take no activation, are left out."""
    import onnx
    from onnxruntime.quantization.quant_utils import DEQUANT_OUTPUT_SUFFIX

    float_graph = onnx.load(str(prepared), load_external_data=False).graph
    # float activations only (shape arithmetic is int64 and never quantized); their types
    # come from the shape inference of ``prepare``
    typed = [*float_graph.input, *float_graph.value_info, *float_graph.output]
    made = {v.name for v in typed if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    floats = {n.name: n for n in float_graph.node
              if n.name and n.output and n.output[0] in made and any(i in made for i in n.input)}
    quant_graph = onnx.load(str(quantized), load_external_data=False).graph
    quant_tensors = {out for node in quant_graph.node for out in node.output}
    quants = {n.name: n for n in quant_graph.node if n.name in floats
              and n.op_type == floats[n.name].op_type}
    if not quants:
        return {}

    def seen(name: str) -> str:  # a float tensor as the QDQ graph's consumers see it
        post = name + DEQUANT_OUTPUT_SUFFIX
        return post if post in quant_tensors else name

    # The QDQ graph's node may output another name than the float one (a Relu folded into
    # its Conv's quantization): its own output and inputs are matched to float tensors by
    # name, the dequantized inputs by the name they dequantize.
    pairs: dict[str, list[tuple[str, str]]] = {}  # node -> [(float, qdq) output, inputs...]
    for name, node in quants.items():
        if node.output[0] not in made:
            continue
        ins = []
        for tensor in node.input:
            plain = tensor.removesuffix(DEQUANT_OUTPUT_SUFFIX)
            if plain in made:
                ins.append((plain, tensor))
        pairs[name] = [(node.output[0], seen(node.output[0])), *ins]
    float_names = sorted({f for pair in pairs.values() for f, _ in pair})
    quant_names = sorted({q for pair in pairs.values() for _, q in pair})
    with tempfile.TemporaryDirectory(prefix="int8-sens-") as tmp:
        float_path, quant_path = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        _with_tensors(prepared, float_names, float_path)
        _with_tensors(quantized, quant_names, quant_path)
        float_out = _run(float_path, float_names, feeds)
        quant_out = _run(quant_path, quant_names, feeds)

    def relative(f: np.ndarray, q: np.ndarray) -> float:
        return float(np.linalg.norm(q - f) / max(float(np.linalg.norm(f)), 1e-12))

    added: dict[str, float] = {}
    for name, ((f_out, q_out), *ins) in pairs.items():
        added[name] = sum(
            relative(fo[f_out], qo[q_out])
            - max((relative(fo[f], qo[q]) for f, q in ins), default=0.0)
            for fo, qo in zip(float_out, quant_out, strict=True))
    return added


def most_sensitive(prepared: Path, quantized: Path, feeds: list[Feeds], share: float
                   ) -> list[str]:
    """The ``share`` of the graph's nodes (at least one) adding the most error, worst
    first."""
    errors = layer_errors(prepared, quantized, feeds[:SENSITIVITY_INPUTS])
    count = max(1, round(len(errors) * share)) if errors else 0
    return sorted(errors, key=lambda name: -errors[name])[:count]
