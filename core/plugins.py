"""Extra model families: modules named by a setting (or an entry point) imported at start.

A family outside this repository is one torch-free task-spec module (imported by every
process: API, worker, CLI) and, for training, one worker module holding its net and trainer
(imported by the worker only). Importing a module runs its ``register_*`` calls.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points

TASK_ENTRY_POINTS = "toonforge.tasks"
WORKER_ENTRY_POINTS = "toonforge.worker"


def import_modules(names: Iterable[str], group: str | None = None) -> list[str]:
    """Import each module of ``names`` and of the entry-point ``group``; returns their names.

    A module that cannot be imported raises ``ImportError`` naming it: a family that was
    asked for and is missing must stop the process, not vanish from the registry.
    """
    wanted = [n for n in names if n]
    if group is not None:
        wanted += [ep.value for ep in entry_points(group=group)]
    for name in wanted:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"plugin module {name!r} cannot be imported: {exc}") from exc
    return wanted
