"""BatchNorm in eval mode and the kept epoch.

A short fine-tune used to publish a constant function: its BatchNorm running statistics
were still near their initial values (momentum 0.1 over a few dozen steps), so in eval mode
every image got the same scores. The trainer re-estimates the statistics of its trainable
BatchNorm layers over the training set before every validation; the validated module is the
one kept and exported. The kept epoch is chosen by the task's gate metric.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from families.classify.spec import ClassifyHyperparameters
from families.classify.trainer import ClassifyTrainer
from tasks.synthetic import make_dataset
from worker.training.trainers import TrainContext, get_trainer
from worker.training.trainers.batchnorm import recalibrate_batchnorm, trainable_batchnorms

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    # 2 classes x 20 images at 32 px: 32 train, 4 val, 4 test (the intake's 8:1:1).
    return make_dataset("classify", tmp_path_factory.mktemp("bn") / "data", per_class=20,
                        classes=2, size=32)


def _ctx(data: Path, work: Path, hp) -> TrainContext:
    return TrainContext(dataset_dir=data, work_dir=work, hyperparameters=hp, arch="googlenet",
                        device=CPU)


def test_recalibration_resets_trainable_layers_and_leaves_frozen_ones() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    net[:2].requires_grad_(False)  # a frozen prefix
    frozen, trainable = net[1], net[5]
    assert trainable_batchnorms(net) == [trainable]
    batches = [torch.randn(4, 3, 8, 8) * 3 + 2 for _ in range(3)]
    rng = torch.get_rng_state()
    seen = recalibrate_batchnorm(net, batches, lambda m, b: m(b))
    assert seen == 3 and not net.training and not any(m.training for m in net.modules())
    assert torch.equal(torch.get_rng_state(), rng)  # dropout stayed off: no RNG drawn
    assert trainable.momentum == 0.1  # restored after the cumulative average
    assert torch.equal(frozen.running_mean, torch.zeros(4))  # untouched
    # The cumulative average of the batch statistics, exactly.
    with torch.no_grad():
        feats = [net[:5](b) for b in batches]
    want = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    assert torch.allclose(trainable.running_mean, want, atol=1e-5)
    assert int(trainable.num_batches_tracked) == 3


def test_a_short_classify_run_is_not_a_constant_function(shapes: Path, tmp_path: Path) -> None:
    """A few steps from scratch: eval-mode scores differ between images and beat chance
    (before the re-estimation every validation image got the same scores: top1 = chance)."""
    hp = ClassifyHyperparameters(epochs=2, batch_size=8, image_size=32, lr=0.01,
                                 class_balance="none")
    res = get_trainer("classify").train(_ctx(shapes, tmp_path / "work", hp))
    module = res.module.eval()
    val = ClassifyTrainer.eval_dataset(
        ClassifyTrainer(_ctx(shapes, tmp_path / "w2", hp)).splits.val, hp, res.labels)
    with torch.no_grad():
        logits = torch.stack([module(x[None])[0] for x, _ in val])
    assert float(logits.std(0).max()) > 1e-3, "every image got the same scores"
    assert res.metrics["top1"] > 0.5 + 0.05  # chance is 1/2
    evaluated = ClassifyTrainer.evaluate(copy.deepcopy(module), shapes, hp, device=CPU,
                                         labels=res.labels)
    assert evaluated["top1"] == pytest.approx(res.metrics["top1"])  # the validated module
    assert ClassifyTrainer.trivial_metric(shapes, hp, labels=res.labels) == 0.5


def test_the_kept_epoch_follows_the_gate_metric(shapes: Path, tmp_path: Path,
                                                monkeypatch) -> None:
    """classify's gate is top-1 (max): the epoch with the best top-1 is kept, even when
    another epoch has a lower validation loss."""
    scripted = iter([{"loss": 1.0, "top1": 0.75}, {"loss": 0.2, "top1": 0.5},
                     {"loss": 0.5, "top1": 0.25},
                     {"loss": 0.9, "top1": 0.5}])  # the last: the test split (finish)
    monkeypatch.setattr(ClassifyTrainer, "measure",
                        classmethod(lambda cls, *a, **k: dict(next(scripted))))
    monkeypatch.setattr(ClassifyTrainer, "write_samples", lambda self, e, f: [])
    hp = ClassifyHyperparameters(epochs=3, batch_size=16, image_size=32, lr=0.01)
    res = get_trainer("classify").train(_ctx(shapes, tmp_path / "work", hp))
    assert res.best_epoch == res.published_epoch == 1
    assert res.metrics["top1"] == 0.75 and res.metrics["loss"] == 1.0
    best = torch.load(tmp_path / "work" / "best.pt", weights_only=True)
    assert best["epoch"] == 1
    assert all(torch.equal(v, res.module.state_dict()[k]) for k, v in best["model"].items())
