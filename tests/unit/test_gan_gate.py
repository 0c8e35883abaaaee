"""The generate gate: a GAN version goes live only if the samples its served ONNX graph
draws are closer to held-out training images than an untrained generator's (kernel
inception distance on a fixed random conv net's features) and are not collapsed (their
feature spread against the real images'); the reason names both numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from families.generate import gan_gate
from families.generate.net import DCGAN
from families.generate.spec import GenerateHyperparameters
from jobs.records import JobRecord
from jobs.request_checks import validate_hyperparameters
from model_store.datasets import DatasetStore
from model_store.manifest import Lineage, Manifest
from model_store.store import ModelStore
from tasks.synthetic import face
from worker.finetune import gate, plan_job
from worker.starter import publish_synthetic_dataset
from worker.training.publish import publish_version

NZ = 100


class _BankGenerator(nn.Module):
    """Draws one image of a fixed bank per latent, picked by the latent's largest entry
    among the first len(bank): a generator whose samples follow the bank's distribution
    (and, with a bank of one, a perfectly collapsed one). Exports to ONNX like NetG."""

    def __init__(self, bank: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("bank", bank.flatten(1))
        self.k, self.shape = len(bank), tuple(bank.shape[1:])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        head = z.flatten(1)[:, :self.k]
        onehot = (head == head.max(1, keepdim=True).values).float()
        return (onehot @ self.bank).view(-1, *self.shape)


def _faces(n: int, seed: int) -> torch.Tensor:
    """n drawn faces (another seed than the dataset's: new faces of the same kind), [-1, 1]."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(face(rng, 96), np.float32) / 127.5 - 1.0 for _ in range(n)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _gan(bank: torch.Tensor) -> DCGAN:
    gan = DCGAN(NZ, ngf=8, ndf=8)
    gan.netg = _BankGenerator(bank)  # type: ignore[assignment]
    return gan.eval()


@pytest.fixture
def stores(tmp_path: Path) -> tuple[ModelStore, DatasetStore]:
    store, datasets = ModelStore(tmp_path), DatasetStore(tmp_path)
    # 64 faces: a validation split of 6 held-out images
    publish_synthetic_dataset(datasets, "generate", "faces", n=64)
    return store, datasets


def _publish(store: ModelStore, gan: DCGAN, model: str = "faces-gan") -> Manifest:
    return publish_version(store, model_name=model, arch_name="dcgan", module=gan,
                           lineage=Lineage(source="scratch"), int8=False,
                           hyperparameters=GenerateHyperparameters(epochs=1, batch_size=4))


def _job(model: str = "faces-gan") -> JobRecord:
    # The untrained bar is a generator of the job's widths.
    return JobRecord(id="job-gan", task="generate", dataset_id="faces", target_model=model,
                     auto_activate=True, hyperparameters=validate_hyperparameters(
                         "generate", {"batch_size": 4, "ngf": 16, "ndf": 16}))


def test_a_generator_that_draws_the_data_goes_live(stores) -> None:
    store, datasets = stores
    gan = _gan(_faces(48, seed=101))
    manifest = _publish(store, gan)
    decision = gate(store, datasets, _job(), plan_job(_job()), manifest, gan)
    assert decision.activate, decision.reason
    assert decision.metric == "kid" and decision.new is not None
    trivial = decision.details["trivial"]
    assert decision.new < trivial
    ratio = decision.details["new"]["diversity_ratio"]
    assert ratio >= gan_gate.MIN_DIVERSITY_RATIO
    assert f"kid={decision.new:.6g}" in decision.reason and f"kid={trivial:.6g}" in decision.reason
    assert f"diversity_ratio={ratio:.3g}" in decision.reason
    assert "untrained generator" in decision.reason

    # A second version is compared with the active one on the same held-out images.
    store.activate("faces-gan", manifest.version)
    collapsed = _gan(_faces(1, seed=101))
    second = gate(store, datasets, _job(), plan_job(_job()), _publish(store, collapsed), collapsed)
    assert not second.activate and "collapsed" in second.reason


def test_a_collapsed_generator_is_refused_with_both_numbers(stores) -> None:
    """Every latent gives the same (good-looking) face."""
    store, datasets = stores
    gan = _gan(_faces(1, seed=7))
    manifest = _publish(store, gan)
    decision = gate(store, datasets, _job(), plan_job(_job()), manifest, gan)
    assert not decision.activate
    ratio = decision.details["new"]["diversity_ratio"]
    assert ratio < 0.05  # only the 8-bit rounding of one picture, nothing else, differs
    assert f"kid={decision.new:.6g}" in decision.reason
    assert f"diversity_ratio={ratio:.3g}" in decision.reason and "collapsed" in decision.reason
    assert "activate by hand" in decision.reason


def test_an_untrained_generator_is_refused(stores) -> None:
    store, datasets = stores
    torch.manual_seed(3)
    gan = DCGAN(NZ, ngf=16, ndf=16).eval()
    manifest = _publish(store, gan)
    decision = gate(store, datasets, _job(), plan_job(_job()), manifest, gan)
    assert not decision.activate
    assert "kid=" in decision.reason and "diversity_ratio=" in decision.reason


def test_the_gate_scores_the_served_graph(stores) -> None:
    """The numbers come from the ONNX graph's 8-bit output, not the PyTorch module: a module
    handed in that differs from the published graph does not change them."""
    store, datasets = stores
    gan = _gan(_faces(48, seed=101))
    manifest = _publish(store, gan)
    served = gate(store, datasets, _job(), plan_job(_job()), manifest, gan)
    other = gate(store, datasets, _job(), plan_job(_job()), manifest, _gan(_faces(1, seed=5)))
    assert served.new == other.new and served.activate and other.activate


def test_kid_is_near_zero_for_one_distribution_and_large_for_noise() -> None:
    real = (_faces(24, seed=1) + 1) / 2
    same = (_faces(48, seed=2) + 1) / 2
    noise = torch.rand(48, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    near, far = gan_gate.sample_quality(real, same), gan_gate.sample_quality(real, noise)
    assert near["kid"] < 0.1 * far["kid"]
    assert near["diversity_ratio"] > 0.8
