"""Tiny ONNX graphs that honour each task's contract, published into a real ModelStore.

They make pool, batching and reload tests fast (milliseconds per run) without torch; the
session-scoped ``populated_store`` (real architectures, real export) covers the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_store.files import DECODER_GRAPH, MAIN_GRAPH
from model_store.manifest import GraphSpec, Lineage, Manifest, ParityReport, TensorSpec
from model_store.store import ModelStore
from tasks import get_task

OPSET = 18
MATTE_SIDE = 32
PORTRAIT_SIDE = 32
CROP = 32
CLASSES = 5
NZ = 8
GEN_SIDE = 8
AE_SIDE = 16
LATENT = 8


def _f(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: list) -> None:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _cartoon(path: Path, gain: float) -> None:
    # cartoon = clip(gain * image, -1, 1): size-preserving, like DCT-Net.
    _save(path, [helper.make_node("Mul", ["image", "gain"], ["scaled"]),
                 helper.make_node("Clip", ["scaled", "lo", "hi"], ["cartoon"])],
          [_f("image", ["N", 3, "H", "W"])], [_f("cartoon", ["N", 3, "H", "W"])],
          [_const("gain", np.float32(gain)), _const("lo", np.float32(-1)),
           _const("hi", np.float32(1))])


def _matte(path: Path, bias: float) -> None:
    # mask = sigmoid(mean over channels + bias)
    _save(path, [helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=1),
                 helper.make_node("Add", ["mean", "bias"], ["biased"]),
                 helper.make_node("Sigmoid", ["biased"], ["mask"])],
          [_f("image", ["N", 3, MATTE_SIDE, MATTE_SIDE])],
          [_f("mask", ["N", 1, MATTE_SIDE, MATTE_SIDE])],
          [_const("axes", np.array([1], np.int64)), _const("bias", np.float32(bias))])


def _portrait(path: Path, bias: float) -> None:
    # d1 = sigmoid(mean over channels + bias): a line map the API turns into 1 - d1
    _save(path, [helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=1),
                 helper.make_node("Add", ["mean", "bias"], ["biased"]),
                 helper.make_node("Sigmoid", ["biased"], ["d1"])],
          [_f("image", ["N", 3, PORTRAIT_SIDE, PORTRAIT_SIDE])],
          [_f("d1", ["N", 1, PORTRAIT_SIDE, PORTRAIT_SIDE])],
          [_const("axes", np.array([1], np.int64)), _const("bias", np.float32(bias))])


def _classify(path: Path, rng: np.random.Generator) -> None:
    weights = rng.standard_normal((3, CLASSES)).astype(np.float32)
    _save(path, [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
                 helper.make_node("Flatten", ["pooled"], ["flat"]),
                 helper.make_node("MatMul", ["flat", "w"], ["logits"])],
          [_f("image", ["N", 3, CROP, CROP])], [_f("logits", ["N", CLASSES])],
          [_const("w", weights)])


def _generate(path: Path, rng: np.random.Generator) -> None:
    weights = rng.standard_normal((NZ, 3 * GEN_SIDE * GEN_SIDE)).astype(np.float32)
    _save(path, [helper.make_node("Flatten", ["z"], ["flat"]),
                 helper.make_node("MatMul", ["flat", "w"], ["pre"]),
                 helper.make_node("Tanh", ["pre"], ["act"]),
                 helper.make_node("Reshape", ["act", "shape"], ["images"]),
                 helper.make_node("ReduceMean", ["flat", "axes"], ["scores"], keepdims=0)],
          [_f("z", ["N", NZ, 1, 1])],
          [_f("images", ["N", 3, GEN_SIDE, GEN_SIDE]), _f("scores", ["N"])],
          [_const("w", weights), _const("shape", np.array([-1, 3, GEN_SIDE, GEN_SIDE])),
           _const("axes", np.array([1], np.int64))])


def _decoder_nodes(latent: str, out: str) -> list:
    return [helper.make_node("MatMul", [latent, "w_dec"], [f"{out}_pre"]),
            helper.make_node("Sigmoid", [f"{out}_pre"], [f"{out}_act"]),
            helper.make_node("Reshape", [f"{out}_act", "shape"], [out])]


def _autoencoder(main: Path, decoder: Path, rng: np.random.Generator) -> None:
    pixels = 3 * AE_SIDE * AE_SIDE
    enc = (rng.standard_normal((pixels, LATENT)) / np.sqrt(pixels)).astype(np.float32)
    dec = rng.standard_normal((LATENT, pixels)).astype(np.float32)
    shape = _const("shape", np.array([-1, 3, AE_SIDE, AE_SIDE]))
    _save(main, [helper.make_node("Flatten", ["image"], ["flat"]),
                 helper.make_node("MatMul", ["flat", "w_enc"], ["latent"]),
                 *_decoder_nodes("latent", "reconstruction")],
          [_f("image", ["N", 3, AE_SIDE, AE_SIDE])],
          [_f("latent", ["N", LATENT]), _f("reconstruction", ["N", 3, AE_SIDE, AE_SIDE])],
          [_const("w_enc", enc), _const("w_dec", dec), shape])
    _save(decoder, _decoder_nodes("latent", "image"), [_f("latent", ["N", LATENT])],
          [_f("image", ["N", 3, AE_SIDE, AE_SIDE])], [_const("w_dec", dec), shape])


def _spec(path: Path) -> GraphSpec:
    model = onnx.load(str(path))

    def tensors(values: list) -> list[TensorSpec]:
        return [TensorSpec(name=v.name, shape=[d.dim_param or d.dim_value
                                               for d in v.type.tensor_type.shape.dim])
                for v in values]

    return GraphSpec(file=path.name, inputs=tensors(model.graph.input),
                     outputs=tensors(model.graph.output), opset=OPSET)


TINY_TASKS = ("cartoonize", "matte", "portrait", "classify", "generate", "autoencode")

# Each task's serving config, exactly (tasks/<task>.py: every field required, no extras).
PREPROCESSING: dict[str, dict] = {
    "cartoonize": {"max_side": 720, "multiple_of": 4, "color_order": "BGR",
                   "input_range": [-1, 1], "output_range": [-1, 1]},
    "matte": {"size": MATTE_SIDE, "divide_by_max": True,
              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "portrait": {"size": PORTRAIT_SIDE, "mean": [0.485, 0.456, 0.406],
                 "std": [0.229, 0.224, 0.225]},
    "classify": {"resize_shorter": 36, "crop": CROP,
                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "generate": {"nz": NZ, "output_range": [-1, 1]},
    "autoencode": {"size": AE_SIDE, "latent_dim": LATENT, "input_range": [0, 1],
                   "output_range": [0, 1]},
}


def publish_tiny(store: ModelStore, task: str, model: str | None = None, *, seed: int = 0,
                 activate: bool = True, parity: bool = True, latent_stats: bool = True,
                 preprocessing: dict | None = None, job_id: str | None = None) -> int:
    """Publish one tiny version of ``task`` (by job ``job_id``, if given); returns its
    number."""
    name = model or get_task(task).default_model
    rng = np.random.default_rng(seed)
    with store.staging(name) as staged:
        main = staged / MAIN_GRAPH
        graphs = {"main": main}
        if task == "cartoonize":
            _cartoon(main, gain=1.0 + seed)
        elif task == "matte":
            _matte(main, bias=float(seed))
        elif task == "portrait":
            _portrait(main, bias=float(seed))
        elif task == "classify":
            _classify(main, rng)
        elif task == "generate":
            _generate(main, rng)
        else:
            graphs["decoder"] = staged / DECODER_GRAPH
            _autoencoder(main, graphs["decoder"], rng)
            if latent_stats:
                np.savez(staged / "latent_stats.npz", mean=np.full(LATENT, 0.5, np.float32),
                         cholesky=np.eye(LATENT, dtype=np.float32) * 0.1)
        manifest = Manifest(
            model=name, version=0, task=task, arch="tiny",
            graphs={role: _spec(path) for role, path in graphs.items()},
            preprocessing=PREPROCESSING[task] if preprocessing is None else preprocessing,
            labels=[f"label-{i}" for i in range(CLASSES)] if task == "classify" else None,
            parity=ParityReport(passed=parity, tolerance=1e-5,
                                detail="" if parity else "test: made to fail"),
            lineage=Lineage(source="finetune" if job_id else "scratch", job_id=job_id),
        )
        final = store.publish(name, staged, manifest)
    if activate:
        store.activate(name, final.version)
    return final.version


def build_tiny_store(root: Path) -> ModelStore:
    """Every task's default model at v1 (active); matte also has v2 (inactive, different)."""
    store = ModelStore(root)
    for task in TINY_TASKS:
        publish_tiny(store, task)
    publish_tiny(store, "matte", seed=1, activate=False)
    return store
