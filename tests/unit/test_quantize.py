"""INT8 variants at publish: every family's variant is built from the real worker net (small
widths and sizes), gated against its fp32 graphs, and recorded; a refused or failed variant
leaves the fp32 version publishing and serving, with the reason in the manifest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from core.settings import Settings
from model_store.manifest import Lineage
from model_store.store import ModelStore
from tasks import Int8Gate, get_task, list_tasks
from worker.nets.registry import create_model
from worker.training.publish import publish_version
from worker.training.quantize import (
    build_int8_variant,
    fidelity,
    fidelity_over,
    int8_file,
    main_feeds,
    shipped_photos,
)

# task -> (arch, arch kwargs, hyper-parameters giving small served sizes)
SMALL = {
    "matte": ("u2netp", {}, {"resize": 48, "crop": 32}),
    "classify": ("googlenet", {"num_classes": 5, "aux_logits": False}, {"image_size": 48}),
    "cartoonize": ("dctnet", {}, {"image_size": 32}),
    "generate": ("dcgan", {"ngf": 8, "ndf": 8}, {"ngf": 8, "ndf": 8}),
    "autoencode": ("ae", {"latent_dim": 32}, {"latent_dim": 32}),
}


@pytest.fixture(autouse=True)
def _small_dynamic_side(monkeypatch: pytest.MonkeyPatch) -> None:
    # DCT-Net takes any size: calibrate it at 64 px here (256 by default) to stay quick.
    monkeypatch.setattr("worker.training.quantize.DYNAMIC_SIDE", 64)


def _publish(store: ModelStore, task: str, **kwargs: object):
    arch, arch_kwargs, hp = SMALL[task]
    torch.manual_seed(0)
    module = create_model(arch, **arch_kwargs).eval()
    return publish_version(
        store, model_name=f"{task}-q", arch_name=arch, module=module, arch_kwargs=arch_kwargs,
        labels=[f"c{i}" for i in range(5)] if task == "classify" else None,
        lineage=Lineage(source="scratch"),
        hyperparameters=get_task(task).hyperparameters.model_validate(hp), **kwargs)


def test_every_family_declares_a_gate_and_has_a_small_case() -> None:
    gated = [t for t in list_tasks() if get_task(t).int8_gate is not None]
    assert set(SMALL) <= set(gated)
    for task in SMALL:
        gate = get_task(task).int8_gate
        assert gate is not None and set(gate.compare) == set(get_task(task).graphs)


@pytest.mark.parametrize("task", list(SMALL))
def test_family_variant_is_built_gated_and_recorded(task: str, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    manifest = _publish(store, task, int8=True)
    record = manifest.variants["int8"]
    gate = get_task(task).int8_gate
    assert gate is not None
    vdir = store.version_dir(manifest.model, manifest.version)
    # The decision is the figures against the task's bounds, role by role.
    expected = [f"{role}.{m}" for role in gate.compare for m in (*gate.at_most, *gate.at_least)]
    assert sorted(record.fidelity) == sorted(expected), record.reason
    within = all(record.fidelity[f"{r}.{m}"] <= b for r in gate.compare
                 for m, b in gate.at_most.items()) and all(
        record.fidelity[f"{r}.{m}"] >= b for r in gate.compare for m, b in gate.at_least.items())
    assert record.passed is within, record.reason
    assert record.calibration_inputs > 0 and record.held_out_inputs > 0
    assert record.fp32_ms and record.int8_ms and record.speedup == pytest.approx(
        record.fp32_ms / record.int8_ms)
    if record.passed:
        assert set(record.graphs) == set(get_task(task).graphs)
        for role, file in record.graphs.items():
            assert file == int8_file(manifest.graphs[role].file)
            assert file in manifest.files and (vdir / file).is_file()
            graph = ort.InferenceSession(str(vdir / file), providers=["CPUExecutionProvider"])
            ops = {node.op_type for node in _onnx_nodes(vdir / file)}
            assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
            assert [i.name for i in graph.get_inputs()] == list(get_task(task).graphs[role].inputs)
    else:
        assert record.graphs == {} and "outside the INT8 gate" in record.reason
        assert not any(".int8." in f for f in manifest.files)
    assert (vdir / manifest.graphs["main"].file).is_file()  # fp32 always publishes


def _onnx_nodes(path: Path) -> list:
    import onnx

    return list(onnx.load(str(path)).graph.node)


def test_refused_variant_leaves_fp32_serving_with_the_reason(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    impossible = Int8Gate({"main": "images"}, at_most={"pixel_mae": 0.0})
    import worker.training.quantize as quantize

    real = quantize.build_int8_variant

    def strict(*args: object, **kwargs: object):
        return real(*args, **{**kwargs, "gate": impossible})  # type: ignore[arg-type]

    quantize_fn = "worker.training.publish.build_int8_variant"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantize_fn, strict)
        manifest = _publish(store, "generate", int8=True, activate=True)
    record = manifest.variants["int8"]
    assert not record.passed and record.graphs == {}
    assert "pixel_mae" in record.reason and "> 0" in record.reason
    assert record.fidelity["main.pixel_mae"] > 0.0
    vdir = store.version_dir(manifest.model, manifest.version)
    assert sorted(p.name for p in vdir.glob("*.int8.onnx")) == []
    # The version is active and serves fp32 from its own graph.
    assert store.active_version(manifest.model) == manifest.version
    reread = store.manifest(manifest.model, manifest.version)
    assert reread.variants["int8"].reason == record.reason
    session = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
    images = session.run(["images"], {"z": np.zeros((1, 100, 1, 1), np.float32)})[0]
    assert images.shape == (1, 3, 96, 96)


def test_a_quantization_failure_is_recorded_not_raised(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    broken = Int8Gate({"main": "no_such_output"}, at_most={"pixel_mae": 1.0})
    import worker.training.quantize as quantize

    real = quantize.build_int8_variant
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("worker.training.publish.build_int8_variant",
                      lambda *a, **k: real(*a, **{**k, "gate": broken}))
        manifest = _publish(store, "generate", int8=True)
    record = manifest.variants["int8"]
    assert not record.passed and record.reason.startswith("quantization failed:")
    assert "no_such_output" in record.reason
    assert not list(store.version_dir(manifest.model, manifest.version).glob("*.int8.onnx"))


def test_no_variant_when_disabled(tmp_path: Path) -> None:
    manifest = _publish(ModelStore(tmp_path / "store"), "generate", int8=False)
    assert manifest.variants == {}


def test_fidelity_metrics_on_known_arrays() -> None:
    ref = np.zeros((2, 1, 4, 4), np.float32)
    ref[:, :, :2] = 1.0  # top half foreground
    got = ref.copy()
    got[1, :, :, :2] = 0.0  # second image: only the top-right quarter
    got[1, 0, 3, 3] = 0.2  # a background pixel off by 0.2 (its min-max span stays 0..1)
    assert fidelity("mask_iou", ref, got, {}) == pytest.approx((1.0 + 0.5) / 2)
    assert fidelity("mask_mae", ref, got, {}) == pytest.approx((4 + 0.2) / 32)
    logits = np.array([[3.0, 2, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5]])
    swapped = logits[:, [1, 0, 2, 3, 4, 5]]
    assert fidelity("top1_agreement", logits, swapped, {}) == 0.5
    # row 2 swaps its two lowest: 0 replaces 1 in the top 5
    assert fidelity("top5_overlap", logits, swapped, {}) == pytest.approx((1.0 + 0.8) / 2)
    images = np.zeros((1, 3, 2, 2), np.float32)
    off = images + 0.02  # [-1, 1] range: 0.01 in [0, 1]
    assert fidelity("pixel_mae", images, off, {"output_range": [-1, 1]}) == pytest.approx(0.01)
    assert fidelity("psnr_db", images, off, {"output_range": [-1, 1]}) == pytest.approx(40.0)
    assert math.isinf(fidelity("psnr_db", images, images, {"output_range": [-1, 1]}))


def test_outputs_of_different_sizes_are_compared() -> None:
    small, large = np.zeros((1, 3, 4, 4), np.float32), np.zeros((1, 3, 8, 4), np.float32)
    off = [small + 0.02, large]  # 16 of the 48 + 96 values off by 0.01 in [0, 1]
    value = fidelity_over("pixel_mae", [small, large], off, {"output_range": [-1, 1]})
    assert value == pytest.approx(0.01 * 48 / 144)


def test_calibration_inputs_follow_the_serving_config() -> None:
    photos = shipped_photos()
    assert len(photos) >= 4
    spec = get_task("matte")
    config = {"size": 40, "divide_by_max": True, "mean": [0.5] * 3, "std": [0.25] * 3}
    feeds = main_feeds(spec, config, photos, seed=0)
    assert [f["image"].shape for f in feeds] == [(1, 3, 40, 40)] * len(photos)
    # divide by max then (x - 0.5) / 0.25: the brightest value of each image is exactly 2
    assert all(float(f["image"].max()) == pytest.approx(2.0) for f in feeds)


@pytest.mark.parametrize("task", list_tasks())
def test_calibration_inputs_are_the_served_inputs(task: str, tmp_path: Path) -> None:
    """INT8 calibration feeds each family's main graph through the family's own serving
    recipe: for the same image (or seed) the inputs equal what the API builds from the
    version it loaded (typed config, graph input names)."""
    from service.inference.sessions import load_version
    from tests.api.tiny_models import build_tiny_store

    store = build_tiny_store(tmp_path / "store")
    spec = get_task(task)
    version = load_version(store, spec.default_model, 1, Settings(store_dir=store.root))
    manifest_config = store.manifest(spec.default_model, 1).preprocessing
    names = list(version.graph("main").inputs)
    photo = shipped_photos()[0].resize((96, 72))
    calibration = main_feeds(spec, manifest_config, [photo], seed=5)
    if spec.image_prepare is not None:
        served = [spec.image_prepare(photo, version.config)]
    else:
        assert spec.drawn_inputs is not None, f"{task} declares no calibration inputs"
        rng = np.random.default_rng(5)
        served = [spec.drawn_inputs(version.config, rng) for _ in calibration]
    assert len(calibration) == len(served)
    for got, want in zip(calibration, served, strict=True):
        assert sorted(got) == sorted(names) == sorted(want)
        for name in names:
            assert got[name].dtype == np.float32
            assert np.array_equal(got[name], want[name]), f"{task} {name}"


def _int8_sessions(path: Path) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    """The graph as served (fused integer kernels) and as its QDQ arithmetic in float."""
    sessions = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        sessions.append(ort.InferenceSession(str(path), options,
                                             providers=["CPUExecutionProvider"]))
    return sessions[0], sessions[1]


def test_int8_answers_do_not_depend_on_the_hosts_integer_kernels(tmp_path: Path) -> None:
    # The tiny autoencoder's decoder (latents x a wide N(0, 1) matrix) quantized for real.
    from tests.api.tiny_models import LATENT, publish_tiny

    store = ModelStore(tmp_path / "store")
    version = publish_tiny(store, "autoencode", "ae", activate=False)
    manifest = store.manifest("ae", version)
    vdir = store.version_dir("ae", version)
    record = build_int8_variant(vdir, "autoencode", manifest.graphs, manifest.preprocessing)
    assert record is not None
    assert record.passed, record.reason
    import onnx
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    inputs = {"image": rng.random((4, 3, 16, 16), np.float32),
              "latent": rng.uniform(-1, 1, (4, LATENT)).astype(np.float32)}
    for role, file in record.graphs.items():
        graph = onnx.load(str(vdir / file)).graph
        # 7-bit weights: a uint8 x int8 pair sum (255 * 64 * 2) fits the 16-bit lanes of
        # AVX2 kernels without VNNI, so every x86 host computes the same answer.
        weights = [numpy_helper.to_array(t) for t in graph.initializer
                   if t.data_type == onnx.TensorProto.INT8]
        assert weights and all(int(np.abs(w.astype(np.int64)).max()) <= 64 for w in weights)
        served, reference = _int8_sessions(vdir / file)
        feeds = {i.name: inputs[i.name] for i in served.get_inputs()}
        for got, ref in zip(served.run(None, feeds), reference.run(None, feeds), strict=True):
            assert float(np.abs(got - ref).max()) <= 0.01, role
    assert record.fidelity["decoder.pixel_mae"] <= 2 / 255
