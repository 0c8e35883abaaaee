"""One trainer per task, each registering itself (trainers/registry.py). ``get_trainer(task)``
gives the class; its ``train(ctx)`` runs a job and its ``evaluate(module, dataset_dir_or_
loader)`` scores any module (e.g. the active version) on a dataset's validation split.

Importing this package registers the built-in trainers; plugin families register their own
from their worker module (core/plugins.py).
"""

# isort: skip_file
from worker.training.trainers.registry import get_trainer, list_trainers, register_trainer
from worker.training.trainers import autoencode, cartoonize, classify, generate, matte  # noqa: F401
from worker.training.trainers.base import Trainer
from worker.training.trainers.checkpointing import ResumeMismatch
from worker.training.trainers.context import ProgressEvent, TrainContext, TrainResult

__all__ = ["ProgressEvent", "ResumeMismatch", "TrainContext", "TrainResult", "Trainer",
           "get_trainer", "list_trainers", "register_trainer"]
