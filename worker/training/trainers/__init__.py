"""One trainer per task, each registering itself (trainers/registry.py). ``get_trainer(task)``
gives the class; its ``train(ctx)`` runs a job and its ``evaluate(module, dataset_dir_or_
loader)`` scores any module (e.g. the active version) on a dataset's validation split.

Each family's trainer lives in its folder and registers on the registry's first lookup
(worker/families.py); plugin families register theirs from their worker module.
"""

from worker.training.trainers.base import Trainer
from worker.training.trainers.checkpointing import ResumeMismatch
from worker.training.trainers.context import ProgressEvent, TrainContext, TrainResult
from worker.training.trainers.registry import get_trainer, list_trainers, register_trainer

__all__ = ["ProgressEvent", "ResumeMismatch", "TrainContext", "TrainResult", "Trainer",
           "get_trainer", "list_trainers", "register_trainer"]
