"""Task specs: what each task is, declared once (see tasks/registry.py).

Importing this package registers the built-in families (the ``families`` package lists
them); the registry itself imports none of them. Extra families register from plugin modules
(core/plugins.py).
"""

# isort: skip_file
from tasks.registry import (
    Batching,
    CommonHyperparameters,
    ExtraArtifact,
    GateRule,
    GraphIO,
    GraphMemory,
    ImagePipeline,
    Int8Gate,
    ServingConfig,
    StarterRecipe,
    TaskSpec,
    check_task,
    default_model,
    get_task,
    list_tasks,
    register_task,
    task_specs,
    unregister_task,
)

__all__ = [
    "Batching",
    "CommonHyperparameters",
    "ExtraArtifact",
    "GateRule",
    "GraphIO",
    "GraphMemory",
    "ImagePipeline",
    "Int8Gate",
    "ServingConfig",
    "StarterRecipe",
    "TaskSpec",
    "check_task",
    "default_model",
    "get_task",
    "list_tasks",
    "register_task",
    "task_specs",
    "unregister_task",
]

# Last: a family's spec imports the names above.
import families  # noqa: E402,F401
