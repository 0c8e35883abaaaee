"""One registry of architectures (timm-style): ``@register_arch`` builders, one module per
family, ``create_model(name)`` that fails loudly on unknown names.

Each architecture carries what travels with it: the task it serves, the serving
preprocessing written into every manifest, the ONNX graphs to export (with the example
and parity inputs), and the official checkpoint layout(s) it loads strictly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from model_store.tasks import Task


@dataclass
class ExportGraph:
    """One ONNX graph to export from a model: the module to trace and its tensors."""

    module: nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    example_inputs: tuple[torch.Tensor, ...]
    # {tensor name: {axis index: axis name}}; the batch axis is always dynamic.
    dynamic_axes: dict[str, dict[int, str]]
    # Fixed inputs for the parity check: each entry is one call of the graph.
    parity_inputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class ArchSpec:
    name: str
    task: Task
    builder: Callable[..., nn.Module]
    # Written into the manifest's "preprocessing"; the API reads it from there.
    serving: dict[str, Any]
    # graph role ("main", "decoder") -> ExportGraph, built from a model in eval mode.
    export_graphs: Callable[[nn.Module], dict[str, ExportGraph]]
    # Official checkpoint parts: part name -> key-list fixture ("" is the whole model).
    official_parts: dict[str, str] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ArchSpec] = {}


class UnknownArch(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register_arch(
    name: str,
    *,
    task: Task,
    serving: dict[str, Any],
    export_graphs: Callable[[nn.Module], dict[str, ExportGraph]],
    official_parts: dict[str, str] | None = None,
    description: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = ArchSpec(
            name=name,
            task=task,
            builder=builder,
            serving=serving,
            export_graphs=export_graphs,
            official_parts=official_parts or {},
            description=description,
        )
        return builder

    return wrap


def _ensure_loaded() -> None:
    # Importing the family modules runs their @register_arch decorators.
    from worker.nets import autoencoder, dcgan, dctnet, googlenet, u2net  # noqa: F401


def get_arch(name: str) -> ArchSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownArch(
            f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_archs(task: Task | None = None) -> list[str]:
    _ensure_loaded()
    return sorted(n for n, s in _REGISTRY.items() if task is None or s.task == task)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    return get_arch(name).builder(**kwargs)
