"""Task specs: what each task is, declared once (see tasks/registry.py).

Importing this package registers the five built-in tasks; the registry itself imports none
of them. Extra families register from plugin modules (core/plugins.py).
"""

# isort: skip_file
# Registration order is the order tasks are listed in (the API, the docs, the web page).
import tasks.cartoonize  # noqa: F401
import tasks.matte  # noqa: F401
import tasks.classify  # noqa: F401
import tasks.generate  # noqa: F401
import tasks.autoencode  # noqa: F401
from tasks.registry import (
    CommonHyperparameters,
    GateRule,
    GraphIO,
    GraphMemory,
    ImagePipeline,
    Int8Gate,
    ServingConfig,
    StarterRecipe,
    TaskName,
    TaskSpec,
    check_task,
    get_task,
    list_tasks,
    register_task,
    task_specs,
    unregister_task,
)

__all__ = [
    "CommonHyperparameters",
    "GateRule",
    "GraphIO",
    "GraphMemory",
    "ImagePipeline",
    "Int8Gate",
    "ServingConfig",
    "StarterRecipe",
    "TaskName",
    "TaskSpec",
    "check_task",
    "get_task",
    "list_tasks",
    "register_task",
    "task_specs",
    "unregister_task",
]
