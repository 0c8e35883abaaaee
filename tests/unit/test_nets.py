"""Architectures: official layouts load strictly, errors name the damage, forward passes honour
the graph contract, and the hand-written ops (TF resize, guided filter) match references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from families.cartoonize.net import guided_filter, tf_resize_bilinear_2x
from families.classify.net import transform_input_
from tasks import get_task
from tests.support.checkpoints import (
    CORRUPTIONS,
    make_official_checkpoint,
    offending_key,
    read_layout,
)
from worker.nets.checkpoints import (
    CheckpointError,
    CheckpointMismatch,
    CheckpointUnreadable,
    ImportRefused,
    load_official,
    load_state_dict_strict,
)
from worker.nets.registry import create_model, get_arch, list_archs
from worker.training.publish import serving_config

# Architectures whose official files have a published layout (tests/fixtures/compat).
OFFICIAL = [a for a in list_archs() if get_arch(a).published_layouts]
# The corruption tests rewrite a file four times: big files (the 176 MB u2net) are left to
# the small arch of their family.
_BIG_PARAMS = 10_000_000
CORRUPTIBLE = [a for a in OFFICIAL
               if sum(p.numel() for p in create_model(a).parameters()) < _BIG_PARAMS]


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def official_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("official")
    return {a: make_official_checkpoint(a, root / a) for a in OFFICIAL}


@pytest.mark.parametrize("arch", list_archs())
def test_registry_entry_matches_graph_contract(arch: str) -> None:
    architecture = get_arch(arch)
    model = create_model(arch).eval()
    graphs = architecture.export_graphs(model)
    task = get_task(architecture.task)
    contract = task.graphs
    # every required role, and optional ones only where the arch has them
    assert set(graphs) <= set(contract) and set(task.roles_held(graphs)) == set(graphs)
    for role, graph in graphs.items():
        inputs, outputs = contract[role].inputs, contract[role].outputs
        assert graph.input_names == inputs
        assert graph.output_names == outputs
        for name in inputs + outputs:
            assert graph.dynamic_axes[name][0] == "batch"
        assert graph.example_inputs[0].shape[0] == 2
        batches = [p[0].shape[0] for p in graph.parity_inputs]
        assert 1 in batches and max(batches) >= 2
        # Parity inputs are deterministic.
        again = architecture.export_graphs(model)[role].parity_inputs
        for a, b in zip(graph.parity_inputs, again, strict=True):
            assert torch.equal(a[0], b[0])
    for fixture in architecture.published_layouts.values():
        assert read_layout(fixture)
    # The manifest's preprocessing fits the task's serving model (publish validates it too).
    config = architecture.serving_config(model, None)
    valid = get_task(architecture.task).serving.model_validate(config)
    assert serving_config(arch, model) == valid.model_dump(mode="json")
    # The task's default hyper-parameters give the same sizes as an import.
    defaults = get_task(architecture.task).hyperparameters.model_validate({})
    assert serving_config(arch, model, defaults) == valid.model_dump(mode="json")


def _forward_contract(arch: str, model: torch.nn.Module) -> None:
    """Run every graph module of ``arch`` on its smallest parity input: one output per
    contract name, each with the input's batch size, all finite."""
    for role, graph in get_arch(arch).export_graphs(model).items():
        inputs = min(graph.parity_inputs, key=lambda p: p[0].shape[0])
        with torch.no_grad():
            out = graph.module(*inputs)
        outputs = out if isinstance(out, tuple) else (out,)
        assert len(outputs) == len(graph.output_names), role
        for name, t in zip(graph.output_names, outputs, strict=True):
            assert t.shape[0] == inputs[0].shape[0], f"{role}.{name}"
            assert torch.isfinite(t).all(), f"{role}.{name}"


@pytest.mark.parametrize("arch", list_archs())
def test_forward_follows_the_graph_contract(arch: str) -> None:
    torch.manual_seed(0)
    _forward_contract(arch, create_model(arch).eval())


def test_family_forward_shapes() -> None:
    """What the generic contract test cannot know: each family's own output shapes."""
    torch.manual_seed(0)
    with torch.no_grad():
        maps = create_model("u2netp").eval()(torch.randn(1, 3, 64, 64))
        assert len(maps) == 7 and all(m.shape == (1, 1, 64, 64) for m in maps)
        assert 0 <= float(maps[0].min()) and float(maps[0].max()) <= 1
        gan = create_model("dcgan").eval()
        images, scores = get_arch("dcgan").export_graphs(gan)["main"].module(
            torch.randn(3, 100, 1, 1))
        assert images.shape == (3, 3, 96, 96) and scores.shape == (3,)
        assert float(images.abs().max()) <= 1 and 0 <= float(scores.min())
        toon = create_model("dctnet").eval()
        for h, w in ((64, 64), (32, 48)):
            out = toon(torch.rand(2, 3, h, w) * 2 - 1)
            assert out.shape == (2, 3, h, w) and float(out.abs().max()) <= 1
        assert toon.generator(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
        ae = create_model("ae").eval()
        latent, rec = ae(torch.rand(2, 3, 64, 64))
        assert latent.shape == (2, ae.latent_dim) and rec.shape == (2, 3, 64, 64)
        net = create_model("googlenet", num_classes=5).eval()
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 5)


def _sorted_floats(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().flatten().double() for t in tensors.values()
                      if t.is_floating_point()]).sort().values


def _file_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".npz":  # TF variables
        with np.load(path) as npz:
            return {k: torch.from_numpy(npz[k]) for k in npz.files}
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("arch", OFFICIAL)
def test_official_checkpoint_loads_strictly(
    arch: str, official_files: dict[str, dict[str, Path]]
) -> None:
    parts = official_files[arch]
    model = load_official(arch, parts).module
    assert not model.training
    # Every number of the files is in the model and nothing else, wherever the format puts
    # it (TF variables are HWIO): compare the sorted values, not the names.
    in_files: dict[str, torch.Tensor] = {}
    for part, path in parts.items():
        in_files.update({f"{part}/{k}": v for k, v in _file_tensors(path).items()})
    assert torch.equal(_sorted_floats(model.state_dict()), _sorted_floats(in_files))
    if arch in CORRUPTIBLE:  # a big arch's forward pass is in test_export already
        _forward_contract(arch, model)


def test_dctnet_tf_variables_are_transposed(official_files: dict[str, dict[str, Path]]) -> None:
    parts = official_files["dctnet"]
    sd = load_official("dctnet", parts).module.state_dict()
    npz = np.load(parts[""])
    w = npz["generator/Conv_9/weights"]
    assert w.shape == (7, 7, 32, 3)
    np.testing.assert_array_equal(sd["generator.conv9.weight"].numpy(), w.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(sd["generator.conv9.bias"].numpy(),
                                  npz["generator/Conv_9/biases"])


def test_dcgan_old_files_get_zero_batch_counters(
    official_files: dict[str, dict[str, Path]]
) -> None:
    # netd was written without BN counters (pre-0.4.1 files); they were filled with 0.
    sd = load_official("dcgan", official_files["dcgan"]).module.state_dict()
    assert int(sd["netd.main.3.num_batches_tracked"]) == 0


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
@pytest.mark.parametrize("arch", CORRUPTIBLE)
def test_corrupt_checkpoint_is_rejected(arch: str, corrupt: str, tmp_path: Path) -> None:
    parts = make_official_checkpoint(arch, tmp_path, corrupt=corrupt)
    damaged = next(iter(parts.values()))
    if corrupt == "truncated":
        with pytest.raises(CheckpointUnreadable, match=damaged.name):
            load_official(arch, parts)
        return
    with pytest.raises(CheckpointMismatch) as info:
        load_official(arch, parts)
    key = offending_key(arch, corrupt)
    assert key in str(info.value)
    err = info.value
    listed = {
        "missing_key": err.missing,
        "extra_key": err.unexpected,
        "bad_shape": [n for n, _, _ in err.shape_mismatch],
    }[corrupt]
    assert listed == [key]


def test_wrapped_and_dataparallel_files_load(
    official_files: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    sd = torch.load(official_files["u2netp"][""], weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, wrapped)
    model = load_official("u2netp", {"": wrapped}).module
    assert torch.equal(model.state_dict()["outconv.weight"], sd["outconv.weight"])


def test_googlenet_fine_tuned_class_count_is_inferred(tmp_path: Path) -> None:
    src = create_model("googlenet", num_classes=7, aux_logits=False)
    path = tmp_path / "ft.pth"
    torch.save(src.state_dict(), path)
    with pytest.raises(ImportRefused, match="7 classes: pass --labels"):
        load_official("googlenet", {"": path})
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(7)))
    imported = load_official("googlenet", {"": path}, labels)
    model = imported.module
    assert model.num_classes == 7 and model.fc.out_features == 7
    assert imported.labels == [f"class {i}" for i in range(7)]
    # The kwargs rebuild the same layout (no aux heads), so weights.pt loads again.
    load_state_dict_strict(create_model("googlenet", **imported.arch_kwargs), model.state_dict())


def test_googlenet_imagenet_file_gets_imagenet_labels(
    official_files: dict[str, dict[str, Path]]
) -> None:
    imported = load_official("googlenet", official_files["googlenet"])
    assert len(imported.labels) == 1000 and imported.labels[0] == "tench"


def test_unreadable_and_unsupported_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointUnreadable, match="junk.pth"):
        load_official("u2netp", {"": junk})
    pb = tmp_path / "frozen.pb"
    pb.write_bytes(b"\x00")
    with pytest.raises(CheckpointError, match=r"\.npz"):
        load_official("dctnet", {"": pb})
    with pytest.raises(CheckpointError, match="part"):
        load_official("dcgan", {"": junk})
    with pytest.raises(CheckpointError):
        load_official("ae", {"": junk})


def test_load_state_dict_strict_reports_all_problems() -> None:
    model = create_model("dcgan").netd
    sd = dict(model.state_dict())
    del sd["main.0.weight"]
    sd["main.3.weight"] = torch.zeros(5)
    sd["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatch) as info:
        load_state_dict_strict(model, sd)
    assert info.value.missing == ["main.0.weight"]
    assert info.value.unexpected == ["extra"]
    assert info.value.shape_mismatch == [("main.3.weight", (128,), (5,))]
    assert "main.0.weight" in str(info.value) and "expected 128, got 5" in str(info.value)


def test_parameter_counts() -> None:
    assert _n_params(create_model("dctnet")) == 1_467_075
    assert round(_n_params(create_model("u2net")) / 1e6, 1) == 44.0
    assert round(_n_params(create_model("u2netp")) / 1e6, 2) == 1.13
    assert _n_params(create_model("ae")) < 5_000_000
    for latent in (32, 128):
        assert create_model("ae", latent_dim=latent).latent_dim == latent
    with pytest.raises(ValueError):
        create_model("ae", latent_dim=16)


def test_googlenet_transform_input_formula() -> None:
    x = torch.randn(2, 3, 4, 4)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    want = torch.stack([x[:, c] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5 for c in range(3)], 1)
    torch.testing.assert_close(transform_input_(x), want)
    # Eval forward: logits only, no aux heads involved.
    model = create_model("googlenet").eval()
    with torch.no_grad():
        assert isinstance(model(torch.randn(1, 3, 64, 64)), torch.Tensor)
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, tuple) and len(out) == 3


def test_tf_resize_bilinear_2x_hand_example() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 5.0]]).view(1, 1, 2, 2)
    want = torch.tensor(
        [
            [1.0, 1.5, 2.0, 2.0],
            [2.0, 2.75, 3.5, 3.5],
            [3.0, 4.0, 5.0, 5.0],
            [3.0, 4.0, 5.0, 5.0],
        ]
    ).view(1, 1, 4, 4)
    torch.testing.assert_close(tf_resize_bilinear_2x(x), want)
    # Non-square, several channels: columns of a 1x3 row.
    y = torch.tensor([0.0, 4.0, 6.0]).view(1, 1, 1, 3).repeat(2, 2, 1, 1)
    out = tf_resize_bilinear_2x(y)
    assert out.shape == (2, 2, 2, 6)
    torch.testing.assert_close(out[1, 1, 0], torch.tensor([0.0, 2.0, 4.0, 5.0, 6.0, 6.0]))
    torch.testing.assert_close(out[1, 1, 1], out[1, 1, 0])


def _np_box_mean(a: np.ndarray, r: int) -> np.ndarray:
    """Zero-padded (2r+1)^2 window sum divided by the in-image count, written with loops."""
    _, _, h, w = a.shape
    out = np.zeros_like(a)
    for i in range(h):
        for j in range(w):
            win = a[:, :, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1]
            out[:, :, i, j] = win.sum(axis=(2, 3)) / (win.shape[2] * win.shape[3])
    return out


def _np_guided_filter(x: np.ndarray, y: np.ndarray, r: int, eps: float) -> np.ndarray:
    mx, my = _np_box_mean(x, r), _np_box_mean(y, r)
    cov = _np_box_mean(x * y, r) - mx * my
    var = _np_box_mean(x * x, r) - mx * mx
    a = cov / (var + eps)
    b = my - a * mx
    return _np_box_mean(a, r) * x + _np_box_mean(b, r)


def test_guided_filter_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 5, 7))
    y = rng.uniform(-1, 1, (2, 3, 5, 7))
    want = _np_guided_filter(x, y, 1, 1e-2)
    got = guided_filter(torch.from_numpy(x), torch.from_numpy(y), 1, 1e-2).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_dctnet_forward_is_filtered_and_clipped() -> None:
    torch.manual_seed(0)
    model = create_model("dctnet").eval()
    x = torch.rand(1, 3, 16, 20) * 2 - 1
    with torch.no_grad():
        raw = model.generator(x)
        want = guided_filter(x, raw, 1, 1e-2).clamp(-1, 1)
        torch.testing.assert_close(model(x), want)
