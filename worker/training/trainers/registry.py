"""One trainer per task, each registering itself: ``@register_trainer("matte")`` on the
class, ``get_trainer(task)`` to find it (unknown tasks fail loudly, naming the known ones).

This module imports no trainer: a family's trainer registers when the family's worker
modules are imported, on the first lookup here (worker/families.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from tasks import get_task
from worker.families import load_family_workers

if TYPE_CHECKING:
    from worker.training.trainers.base import Trainer

T = TypeVar("T", bound="type[Trainer]")

_REGISTRY: dict[str, type[Trainer]] = {}


class UnknownTrainer(LookupError):
    """No trainer is registered for the task (a task plugin without its worker module)."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_trainer(task: str) -> Callable[[T], T]:
    """Class decorator: the trainer of ``task`` (a registered task). Sets the class's
    ``task`` and, unless it names its own, ``hyperparams`` (the task spec's model)."""
    spec = get_task(task)

    def wrap(cls: T) -> T:
        if spec.name in _REGISTRY and _REGISTRY[spec.name] is not cls:
            raise ValueError(f"a trainer for task {spec.name!r} is registered twice")
        cls.spec = spec
        cls.task = spec.name
        if "hyperparams" not in vars(cls):
            cls.hyperparams = spec.hyperparameters
        _REGISTRY[spec.name] = cls
        return cls

    return wrap


def get_trainer(task: str) -> type[Trainer]:
    load_family_workers()
    try:
        return _REGISTRY[str(task)]
    except KeyError:
        raise UnknownTrainer(f"no trainer for task {task!r}; known: "
                             f"{', '.join(sorted(_REGISTRY))}") from None


def list_trainers() -> list[str]:
    load_family_workers()
    return sorted(_REGISTRY)
