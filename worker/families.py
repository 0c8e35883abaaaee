"""The worker side of every registered family: its nets, trainer and official loaders.

A task spec names the modules that register them (``TaskSpec.worker``); the architecture and
trainer registries import them on their first lookup, so the worker needs no list of its
own and importing a registry never runs into a family half-imported. A plugin family whose
spec names no worker modules registers through ``TOONFORGE_WORKER_PLUGINS`` instead.
"""

from __future__ import annotations

import importlib

from tasks import task_specs

_loading = False


def load_family_workers() -> None:
    """Import the worker modules every registered spec names (cheap once imported)."""
    global _loading
    if _loading:  # a family module being imported looked something up: it registers itself
        return
    _loading = True
    try:
        for spec in task_specs():
            for module in spec.worker:
                importlib.import_module(module)
    finally:
        _loading = False
