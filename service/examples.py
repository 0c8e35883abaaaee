"""What the generic examples of the OpenAPI document name: a task this server serves.

The examples of the generic operations (models, datasets, jobs, sweeps) and of the error
messages show one real task, so they are values the server accepts (a ``task`` field is an
enum of the registered tasks). That task is the first one registered: the built-in families
register in the fixed order of their list, before any plugin, so the document is the same on
every build. Its default model, architectures, graphs and gate come from its spec; nothing
here names a family. With no task registered at all, neutral placeholders stand in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from tasks import task_specs

_PLACEHOLDER = "my-task"


@dataclass(frozen=True)
class ExampleTask:
    """The task the generic examples show, as its spec describes it."""

    name: str
    model: str  # its default model line
    archs: tuple[str, ...]
    arch: str  # the architecture a version of the example was trained with
    graphs: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]  # role -> file, ins, outs
    metric: str | None  # the gate metric (None: the task has no gate)
    direction: Literal["min", "max"] | None
    hyperparameters: dict[str, Any]  # the task's defaults for a 10-epoch job (a few of them)
    known: tuple[str, ...]  # every registered task, in order

    def metric_value(self, rank: int) -> float:
        """An example value of the gate metric: ``rank`` 0 is the best of a few, each
        further rank a little worse in the gate's direction."""
        return round(0.064 + 0.007 * rank if self.direction != "max" else 0.905 - 0.02 * rank,
                     4)


def _hyperparameters(model: Any) -> dict[str, Any]:
    try:
        values = model.model_validate({"epochs": 10}).model_dump(mode="json")
    except ValidationError:  # a field without a default: the one every task has
        return {"epochs": 10}
    return {key: values[key] for key in ("epochs", "batch_size", "lr") if key in values}


def example_task() -> ExampleTask:
    """The first registered task (a placeholder when none is)."""
    specs = task_specs()
    if not specs:
        return ExampleTask(name=_PLACEHOLDER, model="my-model", archs=(), arch="my-arch",
                           graphs={"main": ("model.onnx", ("image",), ("output",))},
                           metric=None, direction=None, hyperparameters={"epochs": 10},
                           known=())
    spec = specs[0]
    arch = spec.starter.arch if spec.starter else (spec.archs[0] if spec.archs else "net")
    return ExampleTask(
        name=spec.name, model=spec.default_model, archs=tuple(spec.archs), arch=arch,
        graphs={role: (io.file, tuple(io.inputs), tuple(io.outputs))
                for role, io in spec.graphs.items() if not io.optional},
        metric=spec.gate.metric if spec.gate else None,
        direction=spec.gate.direction if spec.gate else None,
        hyperparameters=_hyperparameters(spec.hyperparameters),
        known=tuple(s.name for s in specs))
