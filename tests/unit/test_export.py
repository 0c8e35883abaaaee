"""Every registered architecture: strict load of an official-layout checkpoint, ONNX export,
onnx.checker, and onnxruntime-vs-PyTorch parity on fixed inputs (the registry test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tasks import get_task
from tests.support.checkpoints import make_official_checkpoint
from worker.nets.checkpoints import load_official
from worker.nets.registry import create_model, get_arch, list_archs
from worker.training.export import DEFAULT_TOLERANCE, export_and_verify


def _build(arch: str, tmp_path: Path) -> torch.nn.Module:
    if get_arch(arch).published_layouts:
        return load_official(arch, make_official_checkpoint(arch, tmp_path / "ckpt")).module
    torch.manual_seed(0)
    return create_model(arch)


@pytest.mark.parametrize("arch", list_archs())
def test_export_and_parity(arch: str, tmp_path: Path) -> None:
    architecture = get_arch(arch)
    module = _build(arch, tmp_path)
    result = export_and_verify(module, architecture, tmp_path)

    assert result.parity.passed, result.parity.detail
    assert result.parity.tolerance == DEFAULT_TOLERANCE
    assert all(0 <= err <= DEFAULT_TOLERANCE for err in result.parity.max_abs_error.values())
    task = get_task(architecture.task)
    contract = task.graphs
    assert set(result.graphs) == set(task.roles_held(result.graphs))
    for role in result.graphs:
        io, graph = contract[role], result.graphs[role]
        assert [t.name for t in graph.inputs] == list(io.inputs)
        assert [t.name for t in graph.outputs] == list(io.outputs)
        assert isinstance(graph.inputs[0].shape[0], str), "batch axis must be dynamic"
        assert graph.opset >= 17

    # The exported graph accepts a batch size it was not traced with.
    graphs = architecture.export_graphs(module)
    for role, graph in graphs.items():
        session = ort.InferenceSession(str(tmp_path / contract[role].file))
        sample = graph.example_inputs[0]
        batch = torch.cat([sample[:1]] * 3)
        with torch.no_grad():
            expected = graph.module(batch)
        expected = expected[0] if isinstance(expected, tuple) else expected
        got = session.run(None, {graph.input_names[0]: batch.numpy()})[0]
        assert got.shape[0] == 3
        np.testing.assert_allclose(got, expected.numpy(), atol=DEFAULT_TOLERANCE)


def test_parity_detects_a_graph_that_disagrees(tmp_path: Path) -> None:
    """The check is not vacuous: perturb the module after export and it must fail."""
    from worker.training.export import check_parity

    architecture = get_arch("ae")
    torch.manual_seed(0)
    module = create_model("ae").eval()
    export_and_verify(module, architecture, tmp_path)
    with torch.no_grad():
        next(module.parameters()).add_(0.05)
    report = check_parity(architecture.export_graphs(module), tmp_path, architecture.task)
    assert not report.passed
    assert "max |onnxruntime - torch|" in report.detail


def test_dctnet_graph_has_dynamic_height_and_width(tmp_path: Path) -> None:
    architecture = get_arch("dctnet")
    module = _build("dctnet", tmp_path)
    export_and_verify(module, architecture, tmp_path)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    x = torch.rand(1, 3, 72, 44) * 2 - 1
    with torch.no_grad():
        expected = module(x).numpy()
    got = session.run(None, {"image": x.numpy()})[0]
    assert got.shape == (1, 3, 72, 44)
    np.testing.assert_allclose(got, expected, atol=DEFAULT_TOLERANCE)


def test_manifest_preprocessing_follows_the_built_module() -> None:
    from worker.training.publish import serving_config

    assert serving_config("dcgan", create_model("dcgan", nz=64))["nz"] == 64
    assert serving_config("ae", create_model("ae", latent_dim=32))["latent_dim"] == 32


def test_a_serving_config_that_does_not_fit_its_task_is_refused(monkeypatch) -> None:
    import dataclasses

    from worker.nets import registry
    from worker.training.export import ExportFailed
    from worker.training.publish import serving_config

    architecture = get_arch("u2netp")
    broken = dataclasses.replace(architecture, serving_config=lambda m, hp=None: {"size": 320})
    monkeypatch.setitem(registry._REGISTRY, "u2netp", {"matte": broken})
    with pytest.raises(ExportFailed, match="does not fit task matte"):
        serving_config("u2netp", create_model("u2netp"))


def test_the_serving_config_records_the_training_size(tmp_path: Path) -> None:
    """A fine-tune is served at the size it trained at: matte's ``resize``, classify's
    ``image_size`` (resize-shorter keeps the 256/224 ratio); an import gets the defaults.
    The exported graph's fixed input side follows the serving config."""
    from families.classify.spec import ClassifyHyperparameters
    from families.matte.spec import MatteHyperparameters
    from model_store.manifest import Lineage
    from model_store.store import ModelStore
    from worker.training.publish import publish_version, serving_config

    matte = create_model("u2netp")
    assert serving_config("u2netp", matte)["size"] == 320
    assert serving_config("u2netp", matte, MatteHyperparameters(resize=96, crop=80))["size"] == 96
    net = create_model("googlenet", num_classes=3, aux_logits=False)
    assert (serving_config("googlenet", net)["crop"],
            serving_config("googlenet", net)["resize_shorter"]) == (224, 256)
    small = serving_config("googlenet", net, ClassifyHyperparameters(image_size=64))
    assert (small["crop"], small["resize_shorter"]) == (64, 73)

    store = ModelStore(tmp_path / "store")
    torch.manual_seed(0)
    manifest = publish_version(store, model_name="m", arch_name="u2netp", module=matte,
                               lineage=Lineage(source="scratch"),
                               hyperparameters=MatteHyperparameters(resize=96, crop=80))
    assert manifest.preprocessing["size"] == 96
    assert manifest.graphs["main"].inputs[0].shape[1:] == [3, 96, 96]
    assert manifest.parity.passed
