"""What a training run is given and what it gives back (the trainer loop is in base.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tasks import CommonHyperparameters
from worker.training.datasets import Splits


@dataclass
class ProgressEvent:
    kind: Literal["step", "epoch"]
    epoch: int  # 1-based epoch in progress ("step") or just finished ("epoch")
    epochs: int
    step: int  # global steps done
    total_steps: int
    losses: dict[str, float]  # this step's ("step") or the epoch's mean ("epoch") train losses
    val_metrics: dict[str, float] = field(default_factory=dict)
    samples: list[Path] = field(default_factory=list)
    # "epoch": the learning rate each optimizer trained the epoch at (experiment tracking)
    lr: dict[str, float] = field(default_factory=dict)


def _no_progress(event: ProgressEvent) -> None:
    return None


def _never() -> bool:
    return False


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TrainContext:
    # A stored dataset (``<store>/datasets/<id>/`` or its ``data/``: its index.json decides
    # the splits) or a raw folder in the task's upload layout (scanned like an upload).
    dataset_dir: Path
    work_dir: Path  # checkpoint.pt, best.pt, samples/ (and snapshots/ for cartoonize)
    hyperparameters: CommonHyperparameters  # the task spec's model
    arch: str
    base_module: nn.Module | None = None  # fine-tune from these weights; None: fresh model
    device: torch.device = field(default_factory=default_device)
    on_progress: Callable[[ProgressEvent], None] = _no_progress
    should_cancel: Callable[[], bool] = _never
    # Labels of base_module (classify): its fc is kept when they equal the dataset's classes.
    base_labels: list[str] | None = None
    # The splits of ``dataset_dir`` when the caller already read them (a job reads its
    # index.json once and hands the reading to every step); None: the trainer reads them.
    splits: Splits | None = None


@dataclass
class TrainResult:
    module: nn.Module  # eval mode, on CPU
    arch: str
    arch_kwargs: dict[str, Any]
    labels: list[str] | None
    metrics: dict[str, float]  # validation metrics of the returned weights (published_epoch)
    history: list[dict[str, Any]]
    cancelled: bool
    epochs_completed: int
    best_epoch: int | None = None
    # The epoch whose weights ``module`` holds (the best by the gate metric, or the last for
    # a task without a gate); ``metrics`` are that epoch's validation metrics.
    published_epoch: int | None = None
    dataset: dict[str, Any] = field(default_factory=dict)  # split sizes, intake's skipped files
    # Extra files to publish beside the graphs (TaskSpec.artifacts): name -> arrays.
    artifacts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
