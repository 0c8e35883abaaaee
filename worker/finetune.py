"""One fine-tune job's work, from its row to a published version: resolve the base weights and
the dataset, train, export + parity + publish, and the activation gate.

The lifecycle around it (claim, heartbeat, states, errors) is in worker/runner.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import DomainError
from core.settings import get_settings
from jobs.records import JobRecord
from jobs.request_checks import parse_base
from model_store.datasets import DatasetStore
from model_store.errors import ModelNotFound, NoActiveVersion
from model_store.files import WEIGHTS_FILE
from model_store.manifest import Lineage, Manifest
from model_store.store import ModelStore
from tasks import CommonHyperparameters, TaskSpec, get_task
from worker.nets.checkpoints import load_state_dict_strict
from worker.nets.registry import create_model, get_arch
from worker.training import distributed, tracking
from worker.training.datasets import Splits, load_splits
from worker.training.publish import publish_version
from worker.training.trainers import TrainContext, Trainer, TrainResult, get_trainer

log = logging.getLogger(__name__)

class JobFailed(DomainError):
    """A job that cannot go on (its base or target serves another task), with a message
    for the user."""

    code = "job_invalid"
    http_status = 422


@dataclass(frozen=True)
class JobPlan:
    """What a job resolves to, once per job: its task's spec, its trainer, its validated
    hyper-parameters and (``read_dataset``) its dataset's splits. Every step of the job is
    handed this instead of the task's name or the dataset's path."""

    spec: TaskSpec
    trainer: type[Trainer]
    hp: CommonHyperparameters
    splits: Splits | None = None  # None until read_dataset: a step then reads the dataset


def plan_job(job: JobRecord) -> JobPlan:
    """Resolve the job's task (``UnknownTask``), trainer and hyper-parameters (a
    ``ValidationError`` names a bad one)."""
    spec = get_task(job.task)
    return JobPlan(spec, get_trainer(spec.name),
                   spec.hyperparameters.model_validate(job.hyperparameters or {}))


def read_dataset(datasets: DatasetStore, job: JobRecord, plan: JobPlan) -> JobPlan:
    """``plan`` with the job's dataset read: its index.json is read here, once per job, and
    training, the INT8 calibration and the gate all use this reading."""
    return replace(plan, splits=load_splits(datasets.data_dir(job.dataset_id), plan.spec.name))


def _dataset(datasets: DatasetStore, job: JobRecord, plan: JobPlan) -> Splits | Path:
    return plan.splits if plan.splits is not None else datasets.data_dir(job.dataset_id)


@dataclass
class BaseWeights:
    arch: str
    module: nn.Module | None  # None: train from scratch
    parent: str | None  # "model@n"
    labels: list[str] | None = None


@dataclass
class GateDecision:
    activate: bool
    reason: str
    metric: str | None = None
    new: float | None = None
    active: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def load_version(store: ModelStore, name: str, version: int) -> tuple[nn.Module, Manifest]:
    """The version's PyTorch module (from its weights.pt) and manifest. The weights are read
    from ``local_version_dir``: the version itself in a directory store, this worker's
    verified cache of the blobs with an S3 store."""
    manifest = store.manifest(name, version)
    payload = torch.load(store.local_version_dir(name, version) / WEIGHTS_FILE,
                         map_location="cpu", weights_only=True)
    module = create_model(payload["arch"], manifest.task, **(payload.get("arch_kwargs") or {}))
    load_state_dict_strict(module, payload["state_dict"], source=f"{name}@{version}")
    return module.eval(), manifest


def resolve_base(store: ModelStore, job: JobRecord, plan: JobPlan) -> BaseWeights:
    """``model`` -> its active version, ``model@n`` -> that version, else an arch name."""
    name, version = parse_base(job.base)
    task = plan.spec.name
    if version is None and name in store.model_names():
        version = store.active_version(name)
        if version is None:
            raise NoActiveVersion(f"base model {name!r} has no active version: name one as"
                                  f" {name}@<n>")
    if version is not None:
        module, manifest = load_version(store, name, version)
        if manifest.task != task:
            raise JobFailed(f"base {name}@{version} serves {manifest.task}, not {task}")
        return BaseWeights(manifest.arch, module, manifest.ref, manifest.labels)
    architecture = get_arch(name, task)  # UnknownArch names the known ones
    if architecture.task != task:
        raise JobFailed(f"architecture {name!r} serves {architecture.task}, not {task}")
    return BaseWeights(name, None, None)


def check_target(store: ModelStore, job: JobRecord) -> None:
    """Fail before training, not after, when the target line serves another task."""
    try:
        task = store.task_of(job.target_model)
    except ModelNotFound:
        return
    if task != job.task:
        raise JobFailed(f"target model {job.target_model!r} serves {task}, not {job.task}")


def train(
    datasets: DatasetStore,
    job: JobRecord,
    plan: JobPlan,
    base: BaseWeights,
    *,
    work_dir: Path,
    on_progress: Callable[[Any], None],
    should_cancel: Callable[[], bool],
) -> TrainResult:
    """Train on the job's dataset (``datasets.data_dir``: a local directory, fetched into
    this worker's cache with an S3 store) with checkpoints and samples in ``work_dir``."""
    hp = plan.hp
    # The job's tracker (worker/training/tracking.py) hears every event the row does.
    on_progress = tracking.listen(on_progress)
    data = _dataset(datasets, job, plan)
    ctx = TrainContext(
        dataset_dir=data.data_root if isinstance(data, Splits) else data,
        splits=data if isinstance(data, Splits) else None,
        work_dir=work_dir,
        hyperparameters=hp,
        arch=base.arch,
        base_module=base.module,
        on_progress=on_progress,
        should_cancel=should_cancel,
        base_labels=base.labels,
    )
    trainer = plan.trainer
    if hp.devices == 1:
        return trainer.train(ctx)
    # More than one device: N torch.distributed ranks (distributed.py); this process relays
    # rank 0's progress and the cancel request. Checked here, not at submission: the API
    # cannot see the worker's devices.
    distributed.check_devices(hp.devices, ctx.device.type == "cuda",
                              get_settings().max_train_processes)
    return distributed.launch(trainer, ctx, hp.devices)


def already_published(store: ModelStore, model: str, job_id: str) -> Manifest | None:
    """The version this job published before its worker was lost, if any (so a resumed job
    does not publish twice)."""
    try:
        versions = store.versions(model)
    except ModelNotFound:
        return None
    for version in reversed(versions):
        manifest = store.manifest(model, version)
        if manifest.lineage.job_id == job_id:
            return manifest
    return None


def publish(store: ModelStore, datasets: DatasetStore, job: JobRecord, plan: JobPlan,
            base: BaseWeights, result: TrainResult) -> Manifest:
    """Export, prove parity, publish (never activates). Raises ParityFailed.

    The version's preprocessing comes from the job's hyper-parameters (it is served at the
    size it was trained at, whatever its base was served at; lineage names the base), and
    its metrics are those of the published epoch's weights."""
    previous = already_published(store, job.target_model, job.id)
    if previous is not None:
        log.warning("job %s already published %s; reusing it", job.id, previous.ref)
        return previous
    synthetic = datasets.get(job.dataset_id).synthetic
    lineage = Lineage(
        source="finetune" if base.parent else "scratch",
        dataset=job.dataset_id,
        parent=base.parent,
        hyperparameters=dict(job.hyperparameters or {}),
        job_id=job.id,
        synthetic_data=synthetic,
    )
    metrics: dict[str, Any] = {**result.metrics, "epochs_completed": result.epochs_completed,
                               "published_epoch": result.published_epoch}
    if result.best_epoch is not None:
        metrics["best_epoch"] = result.best_epoch
    return publish_version(
        store, model_name=job.target_model, arch_name=result.arch, module=result.module,
        arch_kwargs=result.arch_kwargs, labels=result.labels, metrics=metrics,
        artifacts=result.artifacts, lineage=lineage,
        description=f"fine-tuned by job {job.id} on dataset {job.dataset_id}",
        hyperparameters=plan.hp,
        # The INT8 variant calibrates on the dataset's own validation images.
        calibration_dataset=_dataset(datasets, job, plan),
        task=plan.spec.name,
    )


def _version_file(store: ModelStore, name: str, version: int) -> Callable[[str], Path]:
    # Fetched only when a trainer asks (a remote store downloads just that file).
    return lambda file: store.local_version_dir(name, version, files=[file]) / file


def gate(store: ModelStore, datasets: DatasetStore, job: JobRecord, plan: JobPlan,
         new: Manifest, module: nn.Module) -> GateDecision:
    """Should the new version become active?

    A task with a gate: the new version's gate metric must be strictly better than the
    trivial predictor's (chance, an all-background mask, the identity map, the mean image,
    an untrained generator; classify also by the trainer's ``gate_margin``), and it must
    meet the trainer's ``gate_check`` (generate: samples not collapsed), even as the first
    version of its line; then at least as good as the active version's. Every version is
    evaluated on the same validation split, each at its own serving preprocessing (the sizes
    in its manifest), so the evaluated model sees the tensors the served one will. Without a
    gate only the first version of a line goes live by itself."""
    spec = plan.spec
    try:
        active = store.active_version(job.target_model)
    except ModelNotFound:
        active = None
    rule = spec.gate
    if rule is None:
        if active is None:
            return GateDecision(True, f"{job.target_model} had no active version")
        # No validation number says one version is better: a person decides; only the
        # first version of a line (nothing to regress from) goes live by itself.
        return GateDecision(False, f"{spec.name} versions are never activated automatically"
                                   f" while {job.target_model}@{active} is active: look at"
                                   " the outputs and activate by hand")
    metric = rule.metric
    better = "lower" if rule.direction == "min" else "higher"
    trainer, hp = plan.trainer, plan.hp
    data = _dataset(datasets, job, plan)
    new_hp = trainer.eval_hyperparameters(hp, dict(new.preprocessing))
    new_metrics = trainer.served_metrics(_version_file(store, new.model, new.version),
                                         dict(new.preprocessing), module, data, new_hp,
                                         new.labels)
    new_value = float(new_metrics[metric])
    details: dict[str, Any] = {"new": new_metrics}
    checked, check_text = trainer.gate_check(new_metrics)
    also = f"; {check_text}" if check_text else ""
    refused = " not activated; activate by hand if it is wanted anyway"

    trivial = trainer.trivial_metric(data, new_hp, labels=new.labels)
    if trivial is None:
        sanity = f"(no trivial baseline known for {spec.name})"
    else:
        margin = trainer.gate_margin
        bar = trivial + margin if rule.direction == "max" else trivial - margin
        details["trivial"] = trivial
        plus = f" {'+' if rule.direction == 'max' else '-'} margin {margin:g}" if margin else ""
        if not rule.better(new_value, bar):
            return GateDecision(
                False,
                f"{new.ref} {metric}={new_value:.6g} is not {better} than the trivial"
                f" predictor's {metric}={trivial:.6g}{plus} ({trainer.trivial_predictor})"
                f"{also}:{refused}",
                metric=metric, new=new_value, active=None, details=details)
        sanity = (f"beats the trivial predictor's {metric}={trivial:.6g}{plus}"
                  f" ({trainer.trivial_predictor})")
    if not checked:
        return GateDecision(False, f"{new.ref} {metric}={new_value:.6g} {sanity}, but"
                                   f" {check_text}:{refused}",
                            metric=metric, new=new_value, details=details)
    if active is None:
        return GateDecision(True, f"{job.target_model} had no active version; {new.ref}"
                                  f" {metric}={new_value:.6g} {sanity}{also}",
                            metric=metric, new=new_value, details=details)

    old_module, old_manifest = load_version(store, job.target_model, active)
    if old_manifest.labels != new.labels:
        # Outputs that mean other classes: one dataset cannot score both fairly.
        return GateDecision(False, f"active {old_manifest.ref} has other labels; the two"
                                   " cannot be compared on this dataset: activate by hand",
                            metric=metric, new=new_value, details=details)
    old_hp = trainer.eval_hyperparameters(hp, dict(old_manifest.preprocessing))
    old_metrics = trainer.served_metrics(_version_file(store, job.target_model, active),
                                         dict(old_manifest.preprocessing), old_module, data,
                                         old_hp, old_manifest.labels)
    old_value = float(old_metrics[metric])
    details["active"] = old_metrics
    better_or_equal = rule.at_least_as_good(new_value, old_value)
    verdict = "at least as good as" if better_or_equal else "worse than"
    return GateDecision(
        better_or_equal,
        f"{new.ref} {metric}={new_value:.6g} is {verdict} active {old_manifest.ref}"
        f" {metric}={old_value:.6g} ({better} is better); it {sanity}{also}",
        metric=metric, new=new_value, active=old_value, details=details,
    )
