"""The activation gate: the new version must be at least as good as the active one on the
same validation split."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from jobs.records import JobRecord
from jobs.spec import validate_hyperparameters
from model_store.store import ModelStore
from tests.support.store import import_test_model
from worker.finetune import gate, load_version
from worker.starter import publish_synthetic_dataset


def test_gate_compares_with_the_active_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    import_test_model(store, "autoencode", tmp_path / "ckpt", model="faces-ae")
    publish_synthetic_dataset(tmp_path, "autoencode", "faces", n=12)
    active, manifest = load_version(store, "faces-ae", 1)
    job = JobRecord(id="job1", task="autoencode", dataset_id="faces", target_model="faces-ae",
                    auto_activate=True,
                    hyperparameters=validate_hyperparameters("autoencode", {"batch_size": 4}))

    tie = gate(store, job, manifest, copy.deepcopy(active))
    assert tie.activate and tie.metric == "loss" and tie.new == tie.active  # ties activate

    worse = copy.deepcopy(active)
    with torch.no_grad():
        for p in worse.parameters():
            p.mul_(4.0)  # saturates the decoder: reconstructions get far worse
    refused = gate(store, job, manifest, worse)
    assert not refused.activate and refused.new > refused.active
    assert "worse than active faces-ae@1" in refused.reason

    fresh = JobRecord(**{**{c: getattr(job, c) for c in ("id", "task", "dataset_id",
                                                          "auto_activate", "hyperparameters")},
                         "target_model": "new-line"})
    assert gate(store, fresh, manifest, worse).activate  # nothing active to beat


def test_generate_is_never_activated_over_an_active_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    import_test_model(store, "generate", tmp_path / "ckpt", model="anime-faces")
    module, manifest = load_version(store, "anime-faces", 1)
    job = JobRecord(id="job2", task="generate", dataset_id="unused", target_model="anime-faces",
                    auto_activate=True, hyperparameters={})
    decision = gate(store, job, manifest, module)
    assert not decision.activate
    assert "never activated automatically" in decision.reason
    first = JobRecord(id="job3", task="generate", dataset_id="unused", target_model="fresh",
                      auto_activate=True, hyperparameters={})
    assert gate(store, first, manifest, module).activate  # the first of a line may go live
