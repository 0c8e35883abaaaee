"""The parity gate is relative to each output's scale: max |ORT - torch| <= atol + rtol *
max |torch|. A large-logit graph whose error is float32-sized (2e-4 on logits near 20, what
the old absolute 1e-4 refused for a real GoogLeNet) passes; a graph that computes something
else still fails; the manifest records the rule and each output's figures; manifests written
before the rule load as the absolute rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from model_store.manifest import Lineage, Manifest, ParityReport
from worker.nets.registry import ExportGraph
from worker.training.export import DEFAULT_RTOL, DEFAULT_TOLERANCE, check_parity, export_graph

CLASSES = 1000


class _Logits(nn.Module):
    """A classify-shaped graph (image -> logits) whose logits span about -20..+20."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, CLASSES)
        with torch.no_grad():
            self.fc.weight.normal_(0.0, 1.0)
            self.fc.bias.zero_()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(image.flatten(1))
        return out


def _graph(module: nn.Module) -> ExportGraph:
    gen = torch.Generator().manual_seed(0)
    inputs = [(torch.rand(n, 3, 8, 8, generator=gen),) for n in (1, 3)]
    return ExportGraph(module=module.eval(), input_names=("image",), output_names=("logits",),
                       example_inputs=inputs[1], dynamic_axes={"image": {0: "batch"},
                                                               "logits": {0: "batch"}},
                       parity_inputs=inputs)


@pytest.fixture()
def exported(tmp_path: Path) -> tuple[nn.Module, ExportGraph]:
    torch.manual_seed(0)
    module = _Logits()
    graph = _graph(module)
    export_graph(graph, tmp_path / "model.onnx")
    return module, graph


def _shift_after_export(module: nn.Module, delta: float) -> None:
    """Make torch differ from the exported graph by exactly ``delta`` on every logit."""
    with torch.no_grad():
        module.fc.bias.add_(delta)


def test_float32_sized_error_on_large_logits_passes(exported, tmp_path: Path) -> None:
    module, graph = exported
    _shift_after_export(module, 2e-4)
    report = check_parity({"main": graph}, tmp_path, "classify")
    out = report.outputs["main.logits"]
    assert 10 < out.scale < 40, out.scale  # logits like GoogLeNet's -19..+16
    assert 1.9e-4 < out.max_abs_error < 2.2e-4
    assert out.bound == pytest.approx(DEFAULT_TOLERANCE + DEFAULT_RTOL * out.scale)
    assert report.passed and out.passed, report.detail
    # The same graph under the earlier rule (absolute 1e-4) is refused.
    old = check_parity({"main": graph}, tmp_path, "classify", tolerance=1e-4, rtol=0.0)
    assert not old.passed
    assert "main.logits" in old.detail


@pytest.mark.parametrize("wrong", ["one_logit_off", "all_weights_off"])
def test_a_graph_that_computes_something_else_fails(exported, tmp_path: Path,
                                                    wrong: str) -> None:
    module, graph = exported
    with torch.no_grad():
        if wrong == "one_logit_off":  # a 1% error on one class's weights
            module.fc.weight[7].mul_(1.01)
        else:  # a 0.1% drift everywhere: ~10x the bound at this scale
            module.fc.weight.mul_(1.001)
    report = check_parity({"main": graph}, tmp_path, "classify")
    assert not report.passed
    assert not report.outputs["main.logits"].passed
    assert "main.logits" in report.detail and "max |onnxruntime - torch|" in report.detail


def test_small_outputs_stay_as_strict_as_before(tmp_path: Path) -> None:
    """Outputs in [0, 1] get (almost) nothing from the relative term."""
    torch.manual_seed(0)
    module = nn.Sequential(_Logits(), nn.Sigmoid())
    graph = _graph(module)
    export_graph(graph, tmp_path / "model.onnx")
    with torch.no_grad():
        module[0].fc.bias.add_(3e-3)  # ~5e-4 after the sigmoid's slope near 0.5 or less
    report = check_parity({"main": graph}, tmp_path, "classify")
    out = report.outputs["main.logits"]
    assert out.scale <= 1.0 and out.bound <= 2e-4
    assert out.max_abs_error > out.bound and not report.passed


def test_nan_never_passes(exported, tmp_path: Path) -> None:
    module, graph = exported
    with torch.no_grad():
        module.fc.bias[0] = float("nan")
    assert not check_parity({"main": graph}, tmp_path, "classify").passed


def test_the_manifest_records_the_rule(exported, tmp_path: Path) -> None:
    module, graph = exported
    report = check_parity({"main": graph}, tmp_path, "classify")
    assert report.rule == "relative"
    assert (report.tolerance, report.rtol) == (DEFAULT_TOLERANCE, DEFAULT_RTOL)
    out = report.outputs["main.logits"]
    assert (out.atol, out.rtol) == (DEFAULT_TOLERANCE, DEFAULT_RTOL)
    assert out.max_abs_error == report.max_abs_error["main.logits"]
    manifest = Manifest(model="m", version=1, task="classify", arch="googlenet", graphs={},
                        parity=report, lineage=Lineage(source="import"))
    back = Manifest.model_validate_json(manifest.model_dump_json())
    assert back.parity == report
    assert back.parity.outputs["main.logits"].scale == pytest.approx(out.scale)


def test_manifests_from_before_the_rule_still_load() -> None:
    old = ParityReport.model_validate({"passed": True, "tolerance": 1e-4,
                                       "max_abs_error": {"main.mask": 2.1e-7}, "inputs": "",
                                       "torch_version": "2.5", "onnxruntime_version": "1.20",
                                       "detail": ""})
    assert old.rule == "absolute" and old.rtol == 0.0 and old.outputs == {}
    assert old.passed
