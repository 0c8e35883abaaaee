"""Build a model store holding every task's default model, from test-made checkpoints.

The checkpoints are random tensors written in the official layouts (tests/fixtures/compat),
and they go through the real import path: strict load, ONNX export, parity, publish.
"""

from __future__ import annotations

from pathlib import Path

import torch

from families.autoencode.processing import fit_latent_distribution
from model_store.store import ModelStore
from tasks import get_task, list_tasks
from tests.support.checkpoints import make_official_checkpoint
from worker.importer import import_checkpoint
from worker.nets.registry import create_model

# The arch each test store serves per task; u2netp keeps matte fast on 2 cores. portrait is
# left out: its import exports U2NET at 512x512 (minutes on 2 cores, INT8 calibration too);
# tests/integration/test_portrait_reference.py proves that path on its own store.
TEST_ARCHS = {
    "cartoonize": "dctnet",
    "matte": "u2netp",
    "classify": "googlenet",
    "generate": "dcgan",
    "autoencode": "ae",
}


def make_autoencoder_weights(path: Path, seed: int = 0) -> Path:
    """A toonforge-format autoencoder file with a latent distribution fitted on its own codes."""
    torch.manual_seed(seed)
    module = create_model("ae").eval()
    with torch.no_grad():
        latents = module.encode(torch.rand(64, 3, 64, 64)).numpy()
    stats = fit_latent_distribution(latents)
    torch.save(
        {
            "arch": "ae",
            "arch_kwargs": {},
            "state_dict": module.state_dict(),
            "latent_stats": {k: torch.from_numpy(v) for k, v in stats.items()},
        },
        path,
    )
    return path


def import_test_model(
    store: ModelStore, task: str, workdir: Path, *, seed: int = 0, activate: bool = True,
    model: str | None = None,
) -> None:
    arch = TEST_ARCHS[task]
    workdir.mkdir(parents=True, exist_ok=True)
    if arch == "ae":
        parts = {"": make_autoencoder_weights(workdir / f"ae-{seed}.pt", seed)}
    else:
        parts = make_official_checkpoint(arch, workdir / f"{arch}-{seed}", seed=seed)
    import_checkpoint(store, task=task, arch=arch, parts=parts,
                      model=model or get_task(task).default_model, activate=activate)


def build_test_store(root: Path, workdir: Path, tasks: list[str] | None = None) -> ModelStore:
    """Every task's default model at version 1 (active) but portrait's; matte also has an
    inactive v2."""
    store = ModelStore(root)
    for task in tasks or [t for t in list_tasks() if t in TEST_ARCHS]:
        import_test_model(store, task, workdir)
    if tasks is None or "matte" in tasks:
        import_test_model(store, "matte", workdir, seed=1, activate=False)
    return store
