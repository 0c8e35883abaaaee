"""The activation gate: the new version must beat the trivial predictor (even as the first
version of its line) and be at least as good as the active one on the same validation
split, each evaluated at its own serving preprocessing."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from families.autoencode.trainer import AutoencodeTrainer
from families.classify.spec import ClassifyHyperparameters
from families.classify.trainer import ClassifyTrainer
from jobs.records import JobRecord
from jobs.request_checks import validate_hyperparameters
from model_store.datasets import DatasetStore
from model_store.manifest import Lineage
from model_store.store import ModelStore
from tests.support.store import import_test_model
from worker.finetune import gate, load_version, plan_job
from worker.nets.registry import create_model
from worker.starter import publish_synthetic_dataset
from worker.training.publish import publish_version


def test_gate_compares_with_the_active_version(tmp_path: Path, monkeypatch) -> None:
    # The random test weights do not beat the mean image; this test is about the comparison
    # with the active version, so the trivial bar is set out of the way.
    monkeypatch.setattr(AutoencodeTrainer, "trivial_metrics",
                        classmethod(lambda cls, *a: {"loss": 1e9}))
    store, datasets = ModelStore(tmp_path), DatasetStore(tmp_path)
    import_test_model(store, "autoencode", tmp_path / "ckpt", model="faces-ae")
    publish_synthetic_dataset(datasets, "autoencode", "faces", n=12)
    active, manifest = load_version(store, "faces-ae", 1)
    job = JobRecord(id="job1", task="autoencode", dataset_id="faces", target_model="faces-ae",
                    auto_activate=True,
                    hyperparameters=validate_hyperparameters("autoencode", {"batch_size": 4}))

    tie = gate(store, datasets, job, plan_job(job), manifest, copy.deepcopy(active))
    assert tie.activate and tie.metric == "loss" and tie.new == tie.active  # ties activate

    worse = copy.deepcopy(active)
    with torch.no_grad():
        for p in worse.parameters():
            p.mul_(4.0)  # saturates the decoder: reconstructions get far worse
    refused = gate(store, datasets, job, plan_job(job), manifest, worse)
    assert not refused.activate and refused.new > refused.active
    assert "worse than active faces-ae@1" in refused.reason

    fresh = JobRecord(**{**{c: getattr(job, c) for c in ("id", "task", "dataset_id",
                                                          "auto_activate", "hyperparameters")},
                         "target_model": "new-line"})
    first = gate(store, datasets, fresh, plan_job(fresh), manifest, worse)
    assert first.activate and "new-line had no active version" in first.reason


def test_a_version_no_better_than_the_trivial_predictor_stays_inactive(tmp_path: Path) -> None:
    """Even the first version of a line: random autoencoder weights reconstruct worse than
    the mean training image, and the reason names both numbers."""
    store, datasets = ModelStore(tmp_path), DatasetStore(tmp_path)
    import_test_model(store, "autoencode", tmp_path / "ckpt", model="faces-ae", activate=False)
    publish_synthetic_dataset(datasets, "autoencode", "faces", n=12)
    module, manifest = load_version(store, "faces-ae", 1)
    job = JobRecord(id="job4", task="autoencode", dataset_id="faces", target_model="faces-ae",
                    auto_activate=True,
                    hyperparameters=validate_hyperparameters("autoencode", {"batch_size": 4}))
    decision = gate(store, datasets, job, plan_job(job), manifest, module)
    assert not decision.activate
    trivial = decision.details["trivial"]
    assert decision.new > trivial
    assert f"loss={decision.new:.6g}" in decision.reason
    assert f"loss={trivial:.6g}" in decision.reason and "mean training image" in decision.reason


def test_an_untrained_classifier_is_not_activated_as_the_first_of_its_line(
        tmp_path: Path, monkeypatch) -> None:
    """top1 must beat chance (1/K) by 0.05; and the version is evaluated at its own serving
    crop (32, what it was published with), not the job's image_size."""
    store, datasets = ModelStore(tmp_path), DatasetStore(tmp_path)
    publish_synthetic_dataset(datasets, "classify", "shapes", per_class=10, classes=2, size=32)
    torch.manual_seed(0)
    net = create_model("googlenet", num_classes=2, aux_logits=False).eval()
    labels = ["class_circle", "class_square"]
    manifest = publish_version(store, model_name="shapes", arch_name="googlenet", module=net,
                               labels=labels, lineage=Lineage(source="scratch"),
                               hyperparameters=ClassifyHyperparameters(image_size=32))
    assert manifest.preprocessing["crop"] == 32
    sizes: list[int] = []
    evaluate = ClassifyTrainer.evaluate.__func__  # type: ignore[attr-defined]

    def spy(cls, module, data, hp=None, **kw):
        sizes.append(hp.image_size)
        return evaluate(cls, module, data, hp, **kw)

    monkeypatch.setattr(ClassifyTrainer, "evaluate", classmethod(spy))
    job = JobRecord(id="job5", task="classify", dataset_id="shapes", target_model="shapes",
                    auto_activate=True, hyperparameters=validate_hyperparameters(
                        "classify", {"batch_size": 4, "image_size": 64}))
    decision = gate(store, datasets, job, plan_job(job), manifest, net)
    assert sizes == [32]
    assert decision.details["trivial"] == 0.5
    if decision.new <= 0.55:  # an untrained net: chance or worse
        assert not decision.activate
        assert f"top1={decision.new:.6g}" in decision.reason
        assert "top1=0.5 + margin 0.05 (chance: 1/K)" in decision.reason
    # Whatever the random weights score, a constant prediction never goes live.
    monkeypatch.setattr(ClassifyTrainer, "evaluate",
                        classmethod(lambda cls, *a, **k: {"top1": 0.55, "loss": 0.7}))
    constant = gate(store, datasets, job, plan_job(job), manifest, net)
    assert not constant.activate and "not higher than" in constant.reason
    monkeypatch.setattr(ClassifyTrainer, "evaluate",
                        classmethod(lambda cls, *a, **k: {"top1": 0.6, "loss": 0.7}))
    assert gate(store, datasets, job, plan_job(job), manifest, net).activate
