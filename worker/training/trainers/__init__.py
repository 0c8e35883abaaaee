"""One trainer per task. ``get_trainer(task)`` gives the class; its ``train(ctx)`` runs a job
and its ``evaluate(module, dataset_dir_or_loader)`` scores any module (e.g. the active
version) on a dataset's validation split."""

from __future__ import annotations

from model_store.tasks import Task
from worker.training.trainers.autoencode import AutoencodeTrainer
from worker.training.trainers.base import (
    ProgressEvent,
    ResumeMismatch,
    TrainContext,
    Trainer,
    TrainResult,
)
from worker.training.trainers.cartoonize import CartoonizeTrainer
from worker.training.trainers.classify import ClassifyTrainer
from worker.training.trainers.generate import GenerateTrainer
from worker.training.trainers.matte import MatteTrainer

TRAINERS: dict[Task, type[Trainer]] = {
    Task.CARTOONIZE: CartoonizeTrainer,
    Task.MATTE: MatteTrainer,
    Task.CLASSIFY: ClassifyTrainer,
    Task.GENERATE: GenerateTrainer,
    Task.AUTOENCODE: AutoencodeTrainer,
}


def get_trainer(task: Task | str) -> type[Trainer]:
    try:
        return TRAINERS[Task(task)]
    except ValueError:
        raise ValueError(
            f"unknown task {task!r}; known: {', '.join(t.value for t in Task)}"
        ) from None


__all__ = ["TRAINERS", "ProgressEvent", "ResumeMismatch", "TrainContext", "TrainResult",
           "Trainer", "get_trainer"]
