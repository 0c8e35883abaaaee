"""Checkpoints of a training run: atomic writes, RNG state, exact resume.

checkpoint.pt holds everything the loop needs to continue a job from the very step it
stopped at (model, optimizers, schedulers, scaler, loop counters, history, best-so-far, every
RNG); best.pt holds the best validated weights. Both live in the job's work dir.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tasks import CommonHyperparameters

if TYPE_CHECKING:
    from worker.training.trainers.base import Trainer

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
_CKPT_VERSION = 1
# Settings that do not change the numbers a run produces; they may differ on resume.
# devices: N ranks step through the same global batches (BatchNorm batch statistics aside),
# and a checkpoint written before the field existed lacks it.
_RESUME_FREE = {"num_workers", "devices"}


class ResumeMismatch(ValueError):
    """checkpoint.pt was written by a job with other hyper-parameters or another arch."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then os.replace: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def hp_fingerprint(hp: CommonHyperparameters) -> dict[str, Any]:
    """The hyper-parameters a resumed run must share with the one that wrote the checkpoint."""
    return {k: v for k, v in hp.model_dump(mode="json").items() if k not in _RESUME_FREE}


def save_checkpoint(trainer: Trainer, path: Path) -> None:
    """The whole loop state of ``trainer``: a redelivered job resumes from this very step."""
    atomic_save({
        "version": _CKPT_VERSION,
        "task": trainer.task,
        "arch": trainer.ctx.arch,
        "hyperparameters": hp_fingerprint(trainer.hp),
        "model": trainer.model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in trainer.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in trainer.schedulers.items()},
        "scaler": trainer.scaler.state_dict(),
        "epoch": trainer.epoch,
        "step_in_epoch": trainer.step_in_epoch,
        "global_step": trainer.global_step,
        "accum": dict(trainer.accum),
        "history": trainer.history,
        "best": trainer.best,
        "best_epoch": trainer.best_epoch,
        "best_metrics": trainer.best_metrics,
        "bad_epochs": trainer.bad_epochs,
        "finished": trainer.finished,
        "rng": _rng_state(),
    }, path)


def load_checkpoint(trainer: Trainer, path: Path) -> None:
    """Restore ``trainer`` from its job's checkpoint.pt; ``ResumeMismatch`` when another
    arch, task or hyper-parameters wrote it."""
    # Our own file in the job's work dir (it holds numpy/python RNG state, which the
    # weights-only unpickler refuses).
    ckpt = torch.load(path, map_location=trainer.device, weights_only=False)
    if ckpt.get("task") != trainer.task or ckpt.get("arch") != trainer.ctx.arch:
        raise ResumeMismatch(
            f"{path} belongs to {ckpt.get('task')}/{ckpt.get('arch')}, "
            f"not {trainer.task}/{trainer.ctx.arch}"
        )
    mine, theirs = hp_fingerprint(trainer.hp), ckpt["hyperparameters"]
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if differ:
        raise ResumeMismatch(f"{path} was written with other hyper-parameters: {differ}")
    trainer.model.load_state_dict(ckpt["model"])
    for k, opt in trainer.optimizers.items():
        opt.load_state_dict(ckpt["optimizers"][k])
    for k, sched in trainer.schedulers.items():
        sched.load_state_dict(ckpt["schedulers"][k])
    if ckpt["scaler"]:
        trainer.scaler.load_state_dict(ckpt["scaler"])
    for k in ("epoch", "step_in_epoch", "global_step", "accum", "history", "best",
              "best_epoch", "best_metrics", "bad_epochs", "finished"):
        setattr(trainer, k, ckpt[k])
    _set_rng_state(ckpt["rng"])
