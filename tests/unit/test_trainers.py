"""Trainers end to end on small synthetic datasets: each must really learn (validation
metrics after training beat the untrained weights), checkpoints resume exactly, cancel stops
at a step boundary, and the hyper-parameter schemas hold the recipe defaults."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from families.autoencode.spec import AutoencodeHyperparameters
from families.autoencode.trainer import AutoencodeTrainer
from families.cartoonize.spec import CartoonizeHyperparameters
from families.classify.spec import ClassifyHyperparameters
from families.generate.spec import GenerateHyperparameters
from families.matte.spec import MatteHyperparameters
from tasks import get_task, list_tasks
from tasks.synthetic import make_dataset
from tests.unit.test_datasets import store_dataset
from worker.nets.registry import create_model
from worker.training.datasets import load_index, load_splits
from worker.training.losses import ssim
from worker.training.metrics import SaliencyMetrics, classification_metrics
from worker.training.trainers import (
    ResumeMismatch,
    TrainContext,
    get_trainer,
    list_trainers,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small convs gain little from 2 threads and lose a lot when the cores are shared.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ctx(data: Path, work: Path, hp, arch: str, **kw) -> TrainContext:
    return TrainContext(dataset_dir=data, work_dir=work, hyperparameters=hp, arch=arch,
                        device=CPU, **kw)


def _fresh(arch: str, seed: int, **kw) -> torch.nn.Module:
    # The trainer seeds before building the model: the same seed gives the same init.
    torch.manual_seed(seed)
    return create_model(arch, **kw)


# -- hyper-parameter schemas -------------------------------------------------------------------


@pytest.mark.parametrize("task", list_tasks())
def test_every_task_has_a_trainer_and_a_schema(task):
    trainer = get_trainer(task)
    assert trainer.task == task and trainer.hyperparams is get_task(task).hyperparameters
    assert task in list_trainers()


def test_an_unknown_task_has_no_trainer():
    with pytest.raises(LookupError, match="no trainer for task 'paint'; known: .*matte"):
        get_trainer("paint")


@pytest.mark.parametrize("task", list_tasks())
def test_unknown_hyperparameter_is_named(task):
    with pytest.raises(ValidationError) as err:
        get_task(task).hyperparameters(learning_rate=0.1)
    assert err.value.errors()[0]["loc"] == ("learning_rate",)
    assert err.value.errors()[0]["type"] == "extra_forbidden"


def test_recipe_defaults():
    c = CartoonizeHyperparameters()
    assert (c.lr, c.lr_step_epochs, c.lr_gamma, c.ssim_weight) == (1e-4, 10, 0.9, 0.5)
    assert (c.epochs, c.batch_size, c.image_size, c.save_every, c.early_stop_patience) == (
        20, 4, 256, 5, 5)
    # freeze None: the recipe's two convs on a compound fine-tune, none otherwise
    assert (c.hflip_prob, c.color_jitter, c.scale_range, c.freeze_encoder_up_to) == (
        0.5, 0.1, (0.9, 1.1), None)
    assert (c.parts, c.short_side) == (None, None)
    m = MatteHyperparameters()
    assert (m.lr, m.betas, m.eps, m.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    assert (m.resize, m.crop, m.epochs, m.batch_size) == (320, 288, 10, 4)
    k = ClassifyHyperparameters()
    assert (k.lr, k.optimizer, k.momentum, k.label_smoothing, k.dropout) == (
        1e-3, "sgd", 0.9, 0.1, 0.2)
    assert (k.class_balance, k.image_size, k.epochs, k.batch_size, k.freeze_layers) == (
        "weighted_sampler", 224, 10, 16, 0)
    g = GenerateHyperparameters()
    assert (g.lr_g, g.lr_d, g.beta1, g.beta2, g.d_every, g.g_every) == (
        2e-4, 2e-4, 0.5, 0.999, 1, 1)
    assert (g.lr_halve_every, g.epochs, g.batch_size, g.nz) == (20, 20, 16, 100)
    a = AutoencodeHyperparameters()
    assert (a.lr, a.ssim_weight, a.early_stop_patience, a.latent_dim) == (1e-3, 0.5, 5, 64)
    assert (a.epochs, a.batch_size) == (30, 32)


def test_hyperparameter_constraints():
    with pytest.raises(ValidationError, match="multiple of 4"):
        CartoonizeHyperparameters(image_size=66)
    with pytest.raises(ValidationError, match="crop"):
        MatteHyperparameters(resize=64, crop=96)
    with pytest.raises(ValidationError):
        AutoencodeHyperparameters(latent_dim=16)
    with pytest.raises(ValidationError):
        ClassifyHyperparameters(class_balance="oversample")


# -- losses and metrics ------------------------------------------------------------------------


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 48, generator=g)
    y = (x + 0.2 * torch.randn(1, 3, 40, 48, generator=g)).clamp(0, 1)
    ours = float(ssim(x, y, data_range=1.0))
    ref = structural_similarity(x[0].numpy(), y[0].numpy(), channel_axis=0, data_range=1.0,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours == pytest.approx(ref, abs=1e-4)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)


def test_saliency_and_classification_metrics():
    gt = torch.zeros(2, 1, 8, 8)
    gt[:, :, 2:6, 2:6] = 1
    perfect = SaliencyMetrics()
    perfect.add(gt, gt)
    assert perfect.compute() == {"mae": 0.0, "max_fbeta": pytest.approx(1.0)}
    inverted = SaliencyMetrics()
    inverted.add(1 - gt, gt)
    assert inverted.compute()["mae"] == 1.0
    logits = torch.tensor([[3.0, 1, 0], [0, 3, 1], [3, 0, 1], [0, 1, 3]])
    m = classification_metrics(logits, torch.tensor([0, 1, 1, 2]), ["a", "b", "c"])
    assert m["top1"] == 0.75 and m["top5"] == 1.0  # k = min(5, K) = 3
    assert (m["class_acc/a"], m["class_acc/b"], m["class_acc/c"]) == (1.0, 0.5, 1.0)


# -- the five trainers learn -------------------------------------------------------------------


def test_cartoonize_learns_with_frozen_layers_and_snapshots(tmp_path):
    data = make_dataset("cartoonize", tmp_path / "data", n=20, size=64)
    hp = CartoonizeHyperparameters(epochs=3, batch_size=4, image_size=64, lr=1e-3,
                                   save_every=2, freeze_encoder_up_to=2)
    trainer = get_trainer("cartoonize")
    before = trainer.evaluate(_fresh("dctnet", hp.seed), data, hp, device=CPU)
    events = []
    res = trainer.train(_ctx(data, tmp_path / "work", hp, "dctnet", on_progress=events.append))
    after = trainer.evaluate(res.module, data, hp, device=CPU)
    assert after["l1"] < 0.8 * before["l1"] and after["ssim"] > before["ssim"]
    assert after["psnr"] > before["psnr"] + 1.0
    assert after == pytest.approx(res.metrics)
    # conv0, conv1 frozen; conv2 learned.
    init = _fresh("dctnet", hp.seed).generator
    gen = res.module.generator
    assert torch.equal(gen.conv0.weight, init.conv0.weight)
    assert torch.equal(gen.conv1.weight, init.conv1.weight)
    assert not torch.equal(gen.conv2.weight, init.conv2.weight)
    assert (tmp_path / "work" / "snapshots" / "epoch_002.pt").is_file()
    assert not (tmp_path / "work" / "snapshots" / "epoch_003.pt").exists()
    epoch_events = [e for e in events if e.kind == "epoch"]
    assert [e.epoch for e in epoch_events] == [1, 2, 3]
    assert all(p.is_file() and p.suffix == ".png" for e in epoch_events for p in e.samples)
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == steps[-1].total_steps == steps[-1].step
    assert res.epochs_completed == 3 and not res.cancelled and len(res.history) == 3


def test_matte_learns(tmp_path):
    # An explicit val split of 8: min-max-normalised MAE on 2 images is too noisy to judge.
    data = make_dataset("matte", tmp_path / "data", n=32, size=64, n_val=8)
    hp = MatteHyperparameters(epochs=4, batch_size=4, resize=64, crop=56)
    trainer = get_trainer("matte")
    before = trainer.evaluate(_fresh("u2netp", hp.seed), data, hp, device=CPU)
    res = trainer.train(_ctx(data, tmp_path / "work", hp, "u2netp"))
    after = trainer.evaluate(res.module, data, hp, device=CPU)
    assert after["loss"] < before["loss"]
    assert after["mae"] < before["mae"]
    assert after["max_fbeta"] > before["max_fbeta"]
    assert len(list((tmp_path / "work" / "samples").glob("matte_epoch_*.png"))) == 4


def test_classify_learns(tmp_path):
    # 30 a class: the intake's 8:1:1 split leaves 9 val images (6 made top1 a coin toss).
    data = make_dataset("classify", tmp_path / "data", per_class=30, classes=3, size=64)
    hp = ClassifyHyperparameters(epochs=8, batch_size=8, image_size=64, lr=0.01,
                                 freeze_layers=1)
    trainer = get_trainer("classify")
    init = _fresh("googlenet", hp.seed, num_classes=3, aux_logits=False)
    before = trainer.evaluate(copy.deepcopy(init), data, hp, device=CPU)
    res = trainer.train(_ctx(data, tmp_path / "work", hp, "googlenet"))
    after = trainer.evaluate(res.module, data, hp, device=CPU)
    assert res.labels == ["class_circle", "class_square", "class_triangle"]
    assert res.arch_kwargs == {"num_classes": 3, "aux_logits": False, "dropout": 0.2}
    # The kept epoch is the best by top-1 (the gate metric), not by loss.
    assert res.best_epoch == max(range(1, 9), key=lambda e: (res.history[e - 1]["val"]["top1"],
                                                             -e))
    assert after["top1"] > before["top1"]
    assert after["top1"] >= 2 / 3
    assert after == pytest.approx({k: v for k, v in res.metrics.items()
                                   if not k.startswith("test_")})
    assert "test_top1" in res.metrics and "class_acc/class_square" in res.metrics
    # The frozen first stage kept its weights and BatchNorm statistics.
    assert torch.equal(res.module.conv1.conv.weight, init.conv1.conv.weight)
    assert torch.equal(res.module.conv1.bn.running_mean, init.conv1.bn.running_mean)
    assert len(list((tmp_path / "work" / "samples").glob("confusion_epoch_*.png"))) == 8


def test_classify_fine_tunes_a_base_with_other_classes(tmp_path):
    data = make_dataset("classify", tmp_path / "data", per_class=6, classes=2, size=64)
    base = create_model("googlenet", num_classes=5)  # with aux heads, like the official file
    hp = ClassifyHyperparameters(epochs=1, batch_size=4, image_size=64, freeze_layers=3,
                                 class_balance="loss_weights")
    res = get_trainer("classify").train(
        _ctx(data, tmp_path / "work", hp, "googlenet", base_module=base))
    assert res.module.fc.out_features == 2 and res.module.aux1 is None
    assert base.fc.out_features == 5 and base.aux1 is not None  # the caller's module untouched
    rebuilt = create_model("googlenet", **res.arch_kwargs)
    rebuilt.load_state_dict(res.module.state_dict())  # arch_kwargs rebuild the same layout


def test_generate_discriminator_separates_and_generator_moves(tmp_path):
    """No ground truth for a GAN: we require that D learns to tell real validation images
    from generated ones (score gap grows), that G's samples move toward the data's colour
    statistics, and that the samples are not constant."""
    data = make_dataset("generate", tmp_path / "data", n=32)
    hp = GenerateHyperparameters(epochs=4, batch_size=8, ngf=16, ndf=16, num_samples=16)
    trainer = get_trainer("generate")
    init = _fresh("dcgan", hp.seed, ngf=16, ndf=16)
    before = trainer.evaluate(copy.deepcopy(init), data, hp, device=CPU)
    res = trainer.train(_ctx(data, tmp_path / "work", hp, "dcgan"))
    after = trainer.evaluate(res.module, data, hp, device=CPU)
    assert after["d_gap"] > before["d_gap"] + 0.1
    assert after["moment_distance"] < before["moment_distance"]
    assert after["diversity"] > 1e-3
    assert not torch.equal(res.module.netg.main[0].weight, init.netg.main[0].weight)
    assert res.arch_kwargs == {"nz": 100, "ngf": 16, "ndf": 16}
    losses_g = [h["train"]["loss_g"] for h in res.history]
    assert len(set(losses_g)) == len(losses_g)
    assert len(list((tmp_path / "work" / "samples").glob("generate_epoch_*.png"))) == 4


def _run(task: str, arch: str, data: Path, work: Path, hp, cancel_after: int | None = None):
    steps = {"n": 0}

    def on_progress(event):
        steps["n"] += event.kind == "step"

    def should_cancel():
        return cancel_after is not None and steps["n"] >= cancel_after

    return get_trainer(task).train(
        _ctx(data, work, hp, arch, on_progress=on_progress, should_cancel=should_cancel))


def _ae_run(data: Path, work: Path, hp, cancel_after: int | None = None):
    return _run("autoencode", "ae", data, work, hp, cancel_after)


@pytest.fixture(scope="module")
def ae_data(tmp_path_factory) -> Path:
    return make_dataset("autoencode", tmp_path_factory.mktemp("ae") / "data", n=32)


def test_autoencode_learns_and_fits_latents(ae_data, tmp_path):
    hp = AutoencodeHyperparameters(epochs=10, batch_size=8, latent_dim=32)
    trainer = get_trainer("autoencode")
    before = trainer.evaluate(_fresh("ae", hp.seed, latent_dim=32), ae_data, hp, device=CPU)
    res = _ae_run(ae_data, tmp_path / "work", hp)
    after = trainer.evaluate(res.module, ae_data, hp, device=CPU)
    assert after["mse"] < 0.85 * before["mse"] and after["ssim"] > before["ssim"]
    assert after["loss"] < before["loss"]
    stats = res.artifacts.get("latent_stats")
    assert stats["mean"].shape == (32,) and stats["cholesky"].shape == (32, 32)
    assert np.allclose(np.triu(stats["cholesky"], 1), 0)
    assert res.arch_kwargs == {"latent_dim": 32}


def test_stored_dataset_trains_and_evaluates_on_its_index_val_split(tmp_path, monkeypatch):
    """The gate compares versions on the intake's validation split: evaluate (and the
    trainer's own validation) must use exactly index.json's val samples, not a re-split."""
    raw = make_dataset("autoencode", tmp_path / "raw", n=24)
    stored = store_dataset(raw, "autoencode", tmp_path / "store")
    # Move train samples to val, so that a re-scan of data/ would give another split.
    index_file = stored / "index.json"
    data = json.loads(index_file.read_text())
    data["splits"]["val"] += data["splits"]["train"][:5]
    data["splits"]["train"] = data["splits"]["train"][5:]
    index_file.write_text(json.dumps(data))
    index, root = load_index(stored)
    want_val = [root / str(s["path"]) for s in index.splits["val"]]
    want_train = [root / str(s["path"]) for s in index.splits["train"]]
    assert len(want_val) == 2 + 5 and len(want_train) == 24 - 7

    seen: list[list[Path]] = []
    measure = AutoencodeTrainer.measure.__func__

    def spy(cls, module, loader, device, hp, labels):
        seen.append(list(loader.dataset.paths))
        return measure(cls, module, loader, device, hp, labels)

    monkeypatch.setattr(AutoencodeTrainer, "measure", classmethod(spy))
    hp = AutoencodeHyperparameters(epochs=1, batch_size=8, latent_dim=32)
    trainer = get_trainer("autoencode")
    # The stored dataset, and its data/ (what DatasetStore.data_dir hands the worker).
    for where in (stored, stored / "data"):
        trainer.evaluate(_fresh("ae", hp.seed, latent_dim=32), where, hp, device=CPU)
        assert seen.pop() == want_val
    res = trainer.train(_ctx(stored / "data", tmp_path / "work", hp, "ae"))
    assert seen[0] == want_val  # the end-of-epoch validation
    assert (res.dataset["train"], res.dataset["val"]) == (len(want_train), len(want_val))
    assert res.dataset["split_source"] == "auto" and res.dataset["skipped"] == []
    t = AutoencodeTrainer(_ctx(stored, tmp_path / "work2", hp, "ae"))
    assert ([s["path"] for s in t.splits.train], [s["path"] for s in t.splits.val]) == (
        want_train, want_val)


# -- checkpoints: resume and cancel ------------------------------------------------------------


def _same_run(a, b) -> None:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    def strip(h):
        return [{k: v for k, v in e.items() if k != "samples"} for e in h]

    assert strip(a.history) == strip(b.history)
    assert a.metrics == b.metrics
    if "latent_stats" in a.artifacts:
        assert np.array_equal(a.artifacts["latent_stats"]["cholesky"],
                              b.artifacts["latent_stats"]["cholesky"])


@pytest.mark.parametrize("cancel_after", [8, 6], ids=["epoch-boundary", "mid-epoch"])
def test_resume_equals_straight_run(ae_data, tmp_path, cancel_after):
    # 29 train images / batch 8 -> 4 steps an epoch: 8 steps = 2 epochs, 6 = mid epoch 2.
    hp = AutoencodeHyperparameters(epochs=3, batch_size=8, latent_dim=32, seed=3)
    assert len(load_splits(ae_data, "autoencode").train) == 29
    straight = _ae_run(ae_data, tmp_path / "straight", hp)
    first = _ae_run(ae_data, tmp_path / "resumed", hp, cancel_after=cancel_after)
    assert first.cancelled and not first.artifacts
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert ckpt["global_step"] == cancel_after
    resumed = _ae_run(ae_data, tmp_path / "resumed", hp)
    assert not resumed.cancelled and resumed.epochs_completed == 3
    _same_run(straight, resumed)


def test_cancel_stops_at_step_boundary_and_keeps_checkpoint(ae_data, tmp_path):
    hp = AutoencodeHyperparameters(epochs=3, batch_size=8, latent_dim=32)
    res = _ae_run(ae_data, tmp_path / "work", hp, cancel_after=2)
    assert res.cancelled and res.epochs_completed == 0 and res.history == []
    ckpt = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=False)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (0, 2, 2)
    assert not list((tmp_path / "work").glob(".*.tmp"))  # atomic writes leave no temp file
    # A job redelivered with other settings must not silently mix two runs.
    with pytest.raises(ResumeMismatch, match="lr"):
        _ae_run(ae_data, tmp_path / "work", hp.model_copy(update={"lr": 1e-2}))


def test_gan_resume_restores_the_noise_stream(tmp_path):
    # The GAN draws its noise from the global RNG: only a restored RNG state replays it.
    data = make_dataset("generate", tmp_path / "data", n=20)
    hp = GenerateHyperparameters(epochs=2, batch_size=8, ngf=8, ndf=8, num_samples=4,
                                 g_every=2)
    straight = _run("generate", "dcgan", data, tmp_path / "straight", hp)
    first = _run("generate", "dcgan", data, tmp_path / "resumed", hp, cancel_after=4)
    assert first.cancelled  # 18 train images / 8 -> 3 steps an epoch: 4 = mid epoch 2
    resumed = _run("generate", "dcgan", data, tmp_path / "resumed", hp)
    _same_run(straight, resumed)
