"""Turn a PyTorch module into a published store version: export, parity, manifest, publish.

Import of official checkpoints and (later) fine-tune jobs both end here, so every version in
the store went through the same export and the same parity proof.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from model_store.files import WEIGHTS_FILE
from model_store.manifest import Lineage, Manifest, VariantRecord
from model_store.store import ModelStore
from tasks import CommonHyperparameters, TaskSpec, get_task
from worker.nets.registry import Architecture, get_arch
from worker.training.datasets import DatasetSource
from worker.training.export import ExportFailed, ParityFailed, export_and_verify
from worker.training.quantize import build_int8_variant, variants_enabled

log = logging.getLogger(__name__)


def serving_config(arch_name: str, module: nn.Module,
                   hyperparameters: CommonHyperparameters | None = None,
                   task: str | None = None) -> dict[str, Any]:
    """The manifest's ``preprocessing`` for ``module`` built as ``arch_name`` and trained
    with ``hyperparameters`` (None: an imported checkpoint, the arch's defaults): the arch's
    ``serving_config`` hook, validated against its task's serving model. A config that does
    not fit raises ``ExportFailed`` (a version the API could not serve is never written)."""
    arch = get_arch(arch_name, task)
    return _serving_config(arch, get_task(arch.task), module, hyperparameters)


def _serving_config(arch: Architecture, spec: TaskSpec, module: nn.Module,
                    hyperparameters: CommonHyperparameters | None) -> dict[str, Any]:
    config = arch.serving_config(module, hyperparameters)
    try:
        valid = spec.serving.model_validate(config)
    except ValidationError as exc:
        raise ExportFailed(f"{arch.name}'s serving config {config} does not fit task"
                           f" {spec.name}: {exc}") from exc
    return valid.model_dump(mode="json")


def publish_version(
    store: ModelStore,
    *,
    model_name: str,
    arch_name: str,
    module: nn.Module,
    lineage: Lineage,
    arch_kwargs: dict[str, Any] | None = None,
    labels: list[str] | None = None,
    metrics: dict[str, Any] | None = None,
    artifacts: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    description: str = "",
    activate: bool = False,
    tolerance: float | None = None,
    hyperparameters: CommonHyperparameters | None = None,
    calibration_dataset: DatasetSource | None = None,
    int8: bool | None = None,
    extra: Mapping[str, Any] | None = None,
    task: str | None = None,
) -> Manifest:
    """Export ``module`` and publish it as the next version of ``model_name``.

    ``hyperparameters`` are the ones the weights were trained with (a fine-tune job's):
    the preprocessing travels with the version, so it is served at the size it was trained
    at. None (an import): the arch's defaults.

    ``int8`` (None: ``Settings.int8_variants``) also builds the INT8 variant
    (worker/training/quantize.py), calibrated on ``calibration_dataset``'s validation images
    (a fine-tune's dataset) or the shipped photos (an import), and records it in the
    manifest, kept or refused with the reason; it never fails the publish.

    ``extra`` goes into the manifest's ``extra`` as given (e.g. the style a version is).

    Raises ``ParityFailed`` (and writes nothing) when onnxruntime and PyTorch disagree.
    """
    arch = get_arch(arch_name, task)  # the arch and its task, resolved once for the publish
    spec = get_task(arch.task)
    module.eval()
    preprocessing = _serving_config(arch, spec, module, hyperparameters)
    with store.staging(model_name) as staged:
        result = export_and_verify(module, arch, staged, tolerance, preprocessing)
        if not result.parity.passed:
            raise ParityFailed(result.parity)
        payload = {"arch": arch_name, "arch_kwargs": arch_kwargs or {},
                   "state_dict": module.state_dict()}
        torch.save(payload, staged / WEIGHTS_FILE)
        notes: dict[str, Any] = dict(extra or {})
        if spec.preview is not None:
            notes["preview"] = _preview(spec.preview, staged, result.graphs, preprocessing)
        declared = spec.artifacts
        for name, arrays in (artifacts or {}).items():
            if name not in declared:
                raise ValueError(f"task {arch.task!r} declares no artifact {name!r}")
            # numpy's stub also matches **kwds against allow_pickle: bool.
            np.savez(staged / declared[name].file, **arrays)  # type: ignore[arg-type]
            notes.update(declared[name].manifest_extra)
        variants: dict[str, VariantRecord] = {}
        build_int8 = variants_enabled() if int8 is None else int8
        if build_int8:
            record = build_int8_variant(staged, arch.task, result.graphs, preprocessing,
                                        dataset_dir=calibration_dataset)
            if record is not None:
                variants[record.precision] = record
        manifest = Manifest(
            model=model_name,
            version=0,  # assigned by the store
            task=arch.task,
            arch=arch_name,
            description=description or arch.description,
            graphs=result.graphs,
            preprocessing=preprocessing,
            labels=labels,
            parity=result.parity,
            metrics=metrics or {},
            lineage=lineage,
            extra=notes,
            variants=variants,
        )
        published = store.publish(model_name, staged, manifest)
    log.info("published %s (parity max err %s)", published.ref, result.parity.max_abs_error)
    if activate:
        store.activate(model_name, published.version)
    return published


def _preview(make: Callable[[Path, Mapping[str, Any], Mapping[str, Any]], bytes],
             staged: Path, graphs: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
    """The task's preview of the staged version as a data URL; None (logged) on failure."""
    try:
        data = make(staged, graphs, config)
    except Exception as exc:  # a preview is decoration: it never fails a publish
        log.warning("no preview for this version: %s: %s", type(exc).__name__, exc)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
