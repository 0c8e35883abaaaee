"""INT8 candidate methods: when the first method is refused by the gate a later one is
tried, the one kept is recorded in the manifest, each candidate makes a graph the gate can
judge, and the search stops at its time bound."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

from model_store.manifest import Lineage, Manifest
from model_store.store import ModelStore
from tasks import Int8Gate, get_task
from worker.nets.registry import create_model
from worker.training.int8_methods import layer_errors, prepare, quantize_prepared
from worker.training.publish import publish_version
from worker.training.quantize import (
    CANDIDATES,
    MINMAX,
    Attempt,
    QuantMethod,
    build_int8_variant,
    int8_file,
)

# Every node but the output layer kept float: nothing left to round in a DCGAN generator.
ALL_FLOAT = QuantMethod("all-float", "MinMax", 1.0)


def _generator(store: ModelStore, **kwargs: object) -> Manifest:
    torch.manual_seed(0)
    module = create_model("dcgan", ngf=8, ndf=8).eval()
    hp = get_task("generate").hyperparameters.model_validate({"ngf": 8, "ndf": 8})
    return publish_version(store, model_name="gen-q", arch_name="dcgan", module=module,
                           arch_kwargs={"ngf": 8, "ndf": 8}, lineage=Lineage(source="scratch"),
                           hyperparameters=hp, **kwargs)


def _minmax_error(store: ModelStore, manifest: Manifest) -> float:
    vdir = store.version_dir(manifest.model, manifest.version)
    record = build_int8_variant(vdir, "generate", manifest.graphs, manifest.preprocessing,
                                methods=(MINMAX,))
    assert record is not None and record.passed, record and record.reason
    for file in record.graphs.values():
        (vdir / file).unlink()
    return record.fidelity["main.pixel_mae"]


def test_a_refused_first_method_falls_back_and_the_kept_one_is_recorded(tmp_path: Path
                                                                      ) -> None:
    store = ModelStore(tmp_path / "store")
    plain = _generator(store, int8=False)
    error = _minmax_error(store, plain)
    assert error > 0.0
    # A gate the MinMax graph misses (its own error is twice the bound).
    tight = Int8Gate({"main": "images"}, at_most={"pixel_mae": error / 2})
    attempts: list[Attempt] = []
    real = build_int8_variant

    def strict(*args: object, **kwargs: object):
        return real(*args, **{**kwargs, "gate": tight,  # type: ignore[arg-type]
                              "methods": (MINMAX, ALL_FLOAT), "attempts": attempts})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("worker.training.publish.build_int8_variant", strict)
        manifest = _generator(store, int8=True)
    assert [a.method.name for a in attempts] == ["minmax", "all-float"]
    assert attempts[0].missed and attempts[0].figures["main.pixel_mae"] == pytest.approx(error)
    assert attempts[1].passed and attempts[1].float_layers["main"]
    record = store.manifest(manifest.model, manifest.version).variants["int8"]
    assert record.passed, record.reason
    assert record.method.startswith("all-float: ") and "MinMax calibration" in record.method
    assert "with all-float" in record.reason and "refused before it: minmax" in record.reason
    assert record.fidelity["main.pixel_mae"] <= error / 2
    # The kept graph is the one served: hashed into the version and loadable.
    vdir = store.version_dir(manifest.model, manifest.version)
    assert record.graphs == {"main": int8_file(manifest.graphs["main"].file)}
    assert record.graphs["main"] in manifest.files
    session = ort.InferenceSession(str(vdir / record.graphs["main"]),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["z"]


def test_every_method_refused_names_each_and_ships_no_file(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    plain = _generator(store, int8=False)
    vdir = store.version_dir(plain.model, plain.version)
    impossible = Int8Gate({"main": "images"}, at_most={"pixel_mae": -1.0})
    attempts: list[Attempt] = []
    record = build_int8_variant(vdir, "generate", plain.graphs, plain.preprocessing,
                                gate=impossible, methods=(MINMAX, ALL_FLOAT), attempts=attempts)
    assert record is not None and not record.passed and record.graphs == {}
    assert [a.method.name for a in attempts] == ["minmax", "all-float"]
    assert record.reason.startswith("outside the INT8 gate: minmax: main pixel_mae")
    assert "all-float (main pixel_mae" in record.reason
    assert "also tried: all-float" in record.method
    # The figures shown are the first method's, as before candidates existed.
    assert record.fidelity == attempts[0].figures
    assert not list(vdir.glob("*.int8.onnx"))


def test_the_search_stops_at_its_time_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    store = ModelStore(tmp_path / "store")
    plain = _generator(store, int8=False)
    vdir = store.version_dir(plain.model, plain.version)
    monkeypatch.setattr("worker.training.quantize.SEARCH_TIME_FACTOR", 0.0)
    impossible = Int8Gate({"main": "images"}, at_most={"pixel_mae": -1.0})
    attempts: list[Attempt] = []
    record = build_int8_variant(vdir, "generate", plain.graphs, plain.preprocessing,
                                gate=impossible, attempts=attempts)
    assert record is not None and not record.passed
    assert [a.method.name for a in attempts] == ["minmax"]
    rest = ", ".join(m.name for m in CANDIDATES[1:])
    assert record.reason.endswith(f"not tried (time bound): {rest}")


@pytest.mark.parametrize("task", ["matte", "autoencode", "classify"])
def test_each_candidate_makes_a_graph_the_gate_judges(task: str, tmp_path: Path) -> None:
    """Every candidate method quantizes the family's graphs into a QDQ graph that loads and
    that the gate gives figures for (the tiny hand-built graphs of the API tests)."""
    from tests.api.tiny_models import publish_tiny

    store = ModelStore(tmp_path / "store")
    name = f"{task}-tiny"
    publish_tiny(store, task, name, activate=False)
    manifest = store.manifest(name, 1)
    vdir = store.version_dir(name, 1)
    gate = get_task(task).int8_gate
    assert gate is not None
    expected = sorted(f"{role}.{m}" for role in gate.compare
                      for m in (*gate.at_most, *gate.at_least))
    for method in CANDIDATES:
        attempts: list[Attempt] = []
        record = build_int8_variant(vdir, task, manifest.graphs, manifest.preprocessing,
                                    methods=(method,), attempts=attempts)
        assert record is not None and len(attempts) == 1
        assert not attempts[0].error, attempts[0].error
        assert sorted(attempts[0].figures) == expected, method.name
        assert record.passed is attempts[0].passed
        assert record.method.startswith(f"{method.name}: ")
        if method.float_share:  # sensitivity measured on every graph (the tiniest have
            # nothing but their output layer to rank)
            roles = get_task(task).roles_held(manifest.graphs)
            assert set(attempts[0].float_layers) == set(roles)
        for file in record.graphs.values():
            ops = {node.op_type for node in onnx.load(str(vdir / file)).graph.node}
            assert "DequantizeLinear" in ops, method.name
            ort.InferenceSession(str(vdir / file), providers=["CPUExecutionProvider"])
            (vdir / file).unlink()


def test_layer_errors_find_the_layer_that_rounds_worst(tmp_path: Path) -> None:
    """Two convolutions in a row; the second's weights have one huge value per filter, so
    per-channel 7-bit rounding wipes out its other weights: it adds the most error."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 1, 1)).eval()
    with torch.no_grad():
        net[2].weight[:, 0, 0, 0] = 50.0
    source = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 16, 16),), str(source), input_names=["x"],
                      output_names=["y"], dynamo=False)
    feeds = [{"x": torch.rand(1, 3, 16, 16).numpy()} for _ in range(4)]
    prepared = prepare(source, tmp_path)
    quantized = tmp_path / "q.onnx"
    quantize_prepared(prepared, quantized, feeds)
    errors = layer_errors(prepared, quantized, feeds)
    convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
    assert set(convs) <= set(errors)
    assert errors[convs[1]] > errors[convs[0]] >= -1e-6
