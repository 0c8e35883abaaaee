"""INT8 variants: static, per-channel QDQ graphs made with onnxruntime's own tools, kept only
when they stay within the task's fidelity gate of the fp32 graphs.

At publish (import or fine-tune) every graph role of the version is quantized the same way
(``quantize_static``, ``QuantFormat.QDQ``, ``per_channel=True``, uint8 activations and
int8 weights in 7 bits, MinMax calibration) after onnxruntime's pre-processing (shape
inference and graph optimisation). The calibration inputs are the version's own validation
images for a fine-tune, or the real photos shipped in ``calibration/`` for an import; the
gate runs on held-out inputs the calibration did not see and compares each role's declared
output with the fp32 graph (``TaskSpec.int8_gate``). A variant that fails the gate, or whose
making fails, ships no file: the manifest records the figures and the reason, and the fp32
version publishes and serves as before. Nothing here can fail a publish.

The 7-bit weights (``reduce_range``) make the variant answer the same on every x86 host:
with 8-bit weights, onnxruntime's uint8 x int8 kernels on AVX2 CPUs without VNNI add pairs
of products in saturating 16-bit lanes (255 * 127 * 2 overflows, 255 * 64 * 2 does not),
so a variant gated on a VNNI host could serve far outside its gate on such a host, and the
gate's verdict would depend on the publishing CPU.

Inputs are made by the family's own serving recipe (``TaskSpec.image_inputs`` /
``drawn_inputs``, the functions the family's endpoints call) from the version's serving
config, so calibration sees exactly what the served graph sees.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

from model_store.manifest import GraphSpec, VariantRecord
from tasks import Int8Gate, TaskSpec, get_task

if TYPE_CHECKING:
    from worker.training.datasets import DatasetSource

log = logging.getLogger(__name__)

INT8 = "int8"
CALIBRATION_DIR = Path(__file__).parent / "calibration"
METHOD = ("onnxruntime.quantization.quantize_static: QDQ, per-channel, uint8 activations,"
          " int8 weights in 7 bits (reduce_range), MinMax calibration, after quant_pre_process;"
          " output layer float")
# Most validation images used (half calibrate, half are held out); each adds its mirror.
MAX_DATASET_IMAGES = 16
# The largest long side a calibration image gets when the graph takes any size.
DYNAMIC_SIDE = 256
DRAWN_SAMPLES = 16  # a graph fed no image: drawn inputs to calibrate, as many held out
SPEED_RUNS = 5

Feeds = dict[str, np.ndarray]


class CalibrationUnavailable(ValueError):
    """No calibration inputs can be made for this task (the message says why)."""


def int8_file(file: str) -> str:
    """``model.onnx`` -> ``model.int8.onnx``."""
    stem, dot, ext = file.rpartition(".")
    return f"{stem}.{INT8}.{ext}" if dot else f"{file}.{INT8}"


# ---------------------------------------------------------------- calibration images
def shipped_photos() -> list[Image.Image]:
    """The real photos shipped for imports (calibration/README.md: public domain / CC0)."""
    photos = []
    for path in sorted(CALIBRATION_DIR.glob("*.jpg")):
        with Image.open(path) as image:
            photos.append(image.convert("RGB"))
    return photos


def dataset_images(dataset_dir: DatasetSource, task: str, limit: int = MAX_DATASET_IMAGES
                   ) -> list[Image.Image]:
    """The primary images of a dataset's validation split (the layout's first key)."""
    from worker.training.datasets import load_splits  # torch: only on the fine-tune path

    splits = load_splits(dataset_dir, task)
    key = get_task(task).layout.sample_keys[0]
    images = []
    for sample in (splits.val or splits.test)[:limit]:
        with Image.open(sample[key]) as image:
            images.append(image.convert("RGB"))
    return images


def _views(image: Image.Image) -> list[Image.Image]:
    """Four inputs per image, as served requests could send them: the photo, its mirror,
    and the two of a centred crop of 3/4 of each side (another framing and scale)."""
    width, height = image.size
    left, top = width // 8, height // 8
    crop = image.crop((left, top, left + width * 3 // 4, top + height * 3 // 4))
    return [image, ImageOps.mirror(image), crop, ImageOps.mirror(crop)]


@dataclass
class ImageSets:
    calibration: list[Image.Image]
    held_out: list[Image.Image]
    source: str


def image_sets(dataset_dir: DatasetSource | None, task: str) -> ImageSets:
    """Calibration and held-out images: the dataset's validation images (alternately; the
    shipped photos are added when it has fewer than four), or the shipped photos."""
    images: list[Image.Image] = []
    source = ""
    if dataset_dir is not None:
        try:
            images = dataset_images(dataset_dir, task)
            source = f"{len(images)} validation images of the fine-tune's dataset"
        except Exception as exc:  # a dataset without val images still gets the photos
            log.warning("no validation images for calibration (%s); using shipped photos", exc)
    if len(images) < 4:
        photos = shipped_photos()
        images += photos
        source = (f"{source} + " if source else "") + f"{len(photos)} shipped photos"
    calibration = [v for image in images[0::2] for v in _views(image)]
    held_out = [v for image in images[1::2] for v in _views(image)]
    return ImageSets(calibration, held_out,
                     f"{source}, 4 views each (mirror, 3/4 crop); alternate images held out")


# ---------------------------------------------------------------- inputs per task
def _within(image: Image.Image, side: int) -> Image.Image:
    """``image`` with its long side at most ``side`` (aspect kept)."""
    if max(image.size) <= side:
        return image
    return ImageOps.contain(image, (side, side), Image.Resampling.BILINEAR)


def takes_any_size(graph: GraphSpec) -> bool:
    """Whether the graph's first input has a symbolic spatial axis (it takes any size)."""
    shape = graph.inputs[0].shape if graph.inputs else []
    return any(not isinstance(d, int) or d <= 0 for d in shape[-2:])


def main_feeds(spec: TaskSpec, config: Mapping[str, Any], images: Sequence[Image.Image],
               seed: int) -> list[Feeds]:
    """Batch-1 inputs of the main graph, made by the family's own serving recipe: each image
    prepared as the API prepares an upload, or (a graph fed no image) inputs drawn as a
    seeded request draws them."""
    typed = spec.serving.model_validate(dict(config))
    prepare = spec.image_prepare
    if prepare is not None:
        return [{k: np.asarray(v) for k, v in prepare(image, typed).items()}
                for image in images]
    if spec.drawn_inputs is not None:
        rng = np.random.default_rng(seed)
        return [{k: np.asarray(v) for k, v in spec.drawn_inputs(typed, rng).items()}
                for _ in range(DRAWN_SAMPLES)]
    raise CalibrationUnavailable(f"no calibration inputs are known for task {spec.name!r}"
                                 " (it declares neither image nor drawn inputs)")


def _role_feeds(spec: TaskSpec, role: str, main_outputs: list[Feeds]) -> list[Feeds]:
    """A graph other than main is fed what the main graph gives (autoencode's decoder takes
    the encoder's latents), so it calibrates on the values it serves."""
    inputs = spec.graphs[role].inputs
    missing = [name for name in inputs if name not in main_outputs[0]]
    if missing:
        raise CalibrationUnavailable(f"the {role} graph's inputs {missing} are not outputs of"
                                     " the main graph: no calibration inputs for it")
    return [{name: out[name] for name in inputs} for out in main_outputs]


# ---------------------------------------------------------------- fidelity metrics
def _per_image_minmax(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(len(values), -1).astype(np.float64)
    low, high = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (flat - low) / span, 0.0)


def _unit(values: np.ndarray, output_range: Sequence[float]) -> np.ndarray:
    low, high = float(output_range[0]), float(output_range[1])
    return np.clip((values.astype(np.float64) - low) / (high - low), 0.0, 1.0)


def _top_k(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits.reshape(len(logits), -1), axis=1, kind="stable")[:, :k]


def fidelity(metric: str, ref: np.ndarray, got: np.ndarray, config: Mapping[str, Any]) -> float:
    """One metric of ``got`` (INT8) against ``ref`` (fp32), over a stack of outputs."""
    output_range = config.get("output_range", (0.0, 1.0))
    if metric == "mask_mae":
        return float(np.mean(np.abs(_per_image_minmax(ref) - _per_image_minmax(got))))
    if metric == "mask_iou":
        a, b = _per_image_minmax(ref) >= 0.5, _per_image_minmax(got) >= 0.5
        union = np.logical_or(a, b).sum(axis=1)
        inter = np.logical_and(a, b).sum(axis=1)
        return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))
    if metric == "top1_agreement":
        return float(np.mean(_top_k(ref, 1)[:, 0] == _top_k(got, 1)[:, 0]))
    if metric == "top5_overlap":
        k = min(5, ref.reshape(len(ref), -1).shape[1])
        a, b = _top_k(ref, k), _top_k(got, k)
        return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]))
    if metric == "pixel_mae":
        return float(np.mean(np.abs(_unit(ref, output_range) - _unit(got, output_range))))
    if metric == "psnr_db":
        mse = float(np.mean((_unit(ref, output_range) - _unit(got, output_range)) ** 2))
        return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    raise CalibrationUnavailable(f"unknown INT8 gate metric {metric!r}")


_PER_IMAGE = frozenset({"mask_mae", "mask_iou", "top1_agreement", "top5_overlap"})


def fidelity_over(metric: str, refs: Sequence[np.ndarray], gots: Sequence[np.ndarray],
                  config: Mapping[str, Any]) -> float:
    """``fidelity`` over per-input outputs that may differ in size (cartoonize's graph
    takes any size): per-image metrics are averaged over the inputs, pixel metrics are
    taken over all their pixels together."""
    if len({r.shape for r in refs}) == 1:
        return fidelity(metric, np.concatenate(refs), np.concatenate(gots), config)
    if metric in _PER_IMAGE:
        return float(np.mean([fidelity(metric, r, g, config)
                              for r, g in zip(refs, gots, strict=True)]))
    flat = [np.concatenate([a.reshape(1, -1) for a in arrays], axis=1)
            for arrays in (refs, gots)]
    return fidelity(metric, flat[0], flat[1], config)


def _judge(gate: Int8Gate, outputs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]],
           config: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
    """Figures per role.metric, and the bounds that were missed."""
    figures: dict[str, float] = {}
    missed: list[str] = []
    for role, (ref, got) in outputs.items():
        for metric, bound in gate.at_most.items():
            value = fidelity_over(metric, ref, got, config)
            figures[f"{role}.{metric}"] = value
            if not value <= bound:
                missed.append(f"{role} {metric} {value:.4g} > {bound:.4g}")
        for metric, bound in gate.at_least.items():
            value = fidelity_over(metric, ref, got, config)
            figures[f"{role}.{metric}"] = value
            if not value >= bound:
                missed.append(f"{role} {metric} {value:.4g} < {bound:.4g}")
    return figures, missed


def _limits(gate: Int8Gate) -> dict[str, str]:
    return {**{m: f"<= {v:.6g}" for m, v in gate.at_most.items()},
            **{m: f">= {v:.6g}" for m, v in gate.at_least.items()}}


# ---------------------------------------------------------------- quantization
class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[Feeds]) -> None:
        self._feeds = feeds
        self._it: Iterator[Feeds] = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


# An output activation: its input's producer also stays float (the output layer).
_ACTIVATIONS = frozenset({"Sigmoid", "Tanh", "Clip", "Relu", "Softmax", "LeakyRelu"})


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


def quantize_graph(source: Path, target: Path, feeds: list[Feeds]) -> None:
    """Static QDQ INT8 of ``source`` calibrated on ``feeds``, written to ``target``; the
    output layer stays float (``output_layer``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Reader, CalibrationDataReader):  # type: ignore[misc]  # untyped base
        pass

    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # shape inference + optimisation (folds BN, fuses): better scales, fewer QDQ
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception as exc:  # an optimiser that cannot take the graph: quantize as is
            log.warning("quant_pre_process failed on %s (%s); quantizing it as exported",
                        source.name, exc)
            prepared = source
        quantize_static(
            str(prepared), str(target), Reader(feeds),
            # reduce_range: 7-bit weights, exact on every x86 kernel (module docstring)
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=output_layer(prepared),
        )


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_all(session: ort.InferenceSession, feeds: list[Feeds], outputs: list[str]
             ) -> list[Feeds]:
    return [dict(zip(outputs, session.run(outputs, f), strict=True)) for f in feeds]


def _speed(fp32: ort.InferenceSession, int8: ort.InferenceSession, feeds: Feeds
           ) -> tuple[float, float]:
    """Median ms of the two graphs on one batch-1 input, runs interleaved."""
    fp32.run(None, feeds)
    int8.run(None, feeds)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(SPEED_RUNS):
        for name, session in (("fp32", fp32), ("int8", int8)):
            started = time.perf_counter()
            session.run(None, feeds)
            times[name].append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times["fp32"]), statistics.median(times["int8"])


def build_int8_variant(
    directory: Path,
    task: str,
    graphs: Mapping[str, GraphSpec],
    config: Mapping[str, Any],
    *,
    dataset_dir: DatasetSource | None = None,
    gate: Int8Gate | None = None,
    seed: int = 0,
) -> VariantRecord | None:
    """Quantize every graph of a version being published in ``directory`` and gate it.

    Returns the record for the manifest (None: the task declares no INT8 gate). Never
    raises: a failure is a refused record with the error as its reason. A refused variant's
    files are removed, so only kept variants are hashed into the manifest."""
    spec = get_task(task)
    gate = gate or spec.int8_gate
    if gate is None:
        return None
    started = time.perf_counter()
    record = VariantRecord(precision=INT8, passed=False, limits=_limits(gate), method=METHOD,
                           onnxruntime_version=ort.__version__)
    written: list[Path] = []
    try:
        if any(spec.graphs[role].optional for role in graphs if role in spec.graphs):
            # an optional graph has no calibration recipe of its own (its inputs are not
            # the main graph's outputs): such versions serve in fp32
            raise ValueError(f"graphs {sorted(graphs)} include an optional one")
        sets = image_sets(dataset_dir, task)
        if takes_any_size(graphs["main"]):
            sets.calibration = [_within(i, DYNAMIC_SIDE) for i in sets.calibration]
            sets.held_out = [_within(i, DYNAMIC_SIDE) for i in sets.held_out]
        record.calibration = sets.source if spec.image_prepare is not None else (
            f"{DRAWN_SAMPLES} seeded request inputs (another {DRAWN_SAMPLES} held out)")
        calibrate = {"main": main_feeds(spec, config, sets.calibration, seed)}
        held = {"main": main_feeds(spec, config, sets.held_out, seed + 1)}
        record.calibration_inputs = len(calibrate["main"])
        record.held_out_inputs = len(held["main"])
        roles = spec.roles_held(graphs)
        fp32 = {role: _session(directory / graphs[role].file) for role in roles}
        main_out = list(spec.graphs["main"].outputs)
        for role in roles:
            if role != "main":
                calibrate[role] = _role_feeds(
                    spec, role, _run_all(fp32["main"], calibrate["main"], main_out))
        int8: dict[str, ort.InferenceSession] = {}
        for role in roles:
            target = directory / int8_file(graphs[role].file)
            written.append(target)
            quantize_graph(directory / graphs[role].file, target, calibrate[role])
            int8[role] = _session(target)
            record.graphs[role] = target.name
        compared: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        ref_main = _run_all(fp32["main"], held["main"], main_out)
        for role, output in gate.compare.items():
            # Each role is judged on the same inputs in both precisions (the decoder on the
            # fp32 encoder's latents), so a role's own error is what is measured.
            feeds = held["main"] if role == "main" else _role_feeds(spec, role, ref_main)
            compared[role] = ([fp32[role].run([output], f)[0] for f in feeds],
                              [int8[role].run([output], f)[0] for f in feeds])
        record.fidelity, missed = _judge(gate, compared, config)
        record.fp32_ms, record.int8_ms = _speed(fp32["main"], int8["main"], held["main"][0])
        record.speedup = record.fp32_ms / record.int8_ms if record.int8_ms else None
        record.passed = not missed
        record.reason = (
            f"within the {task} INT8 gate on {record.held_out_inputs} held-out inputs"
            if record.passed else "outside the INT8 gate: " + "; ".join(missed))
    except Exception as exc:  # never fail a publish over its variant
        log.warning("INT8 variant of a %s version failed: %s", task, exc, exc_info=True)
        record.passed = False
        record.reason = f"quantization failed: {type(exc).__name__}: {exc}"
    if not record.passed:
        for path in written:
            path.unlink(missing_ok=True)
        record.graphs = {}
    record.seconds = time.perf_counter() - started
    log.info("INT8 variant %s in %.1fs: %s (speed-up %s)",
             "kept" if record.passed else "refused", record.seconds, record.reason,
             f"{record.speedup:.2f}x" if record.speedup else "n/a")
    return record


def variants_enabled() -> bool:
    """``TOONFORGE_INT8_VARIANTS`` (Settings.int8_variants): build variants at publish."""
    from core.settings import Settings

    try:
        return Settings().int8_variants
    except Exception:  # a broken environment must not stop a publish either
        return os.environ.get("TOONFORGE_INT8_VARIANTS", "1").lower() not in ("0", "false")
