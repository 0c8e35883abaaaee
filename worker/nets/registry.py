"""One registry of architectures (timm-style): ``@register_arch`` builders, one module per
family, ``create_model(name)`` that fails loudly on unknown names.

Each architecture carries what travels with it, so nothing outside its family module needs to
know its name: the task it serves, the serving config written into every manifest (from the
built module), the ONNX graphs to export (with the example and parity inputs), and how its
official (published) checkpoint file(s) load. This module imports no family: a family's
nets register when its worker modules are imported, on the first lookup here
(worker/families.py); plugin families may also register from their own modules.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from tasks import CommonHyperparameters, get_task
from worker.families import load_family_workers


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


@dataclass
class ImportedWeights:
    """What an official checkpoint import yields: the model (eval mode), the keyword
    arguments that rebuild it, and the labels and extra artifacts (``TaskSpec.artifacts``:
    name -> arrays) the version carries."""

    module: nn.Module
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    artifacts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class ServingConfigHook(Protocol):
    """(built module, the hyper-parameters it was trained with) -> the manifest's
    "preprocessing", validated against the task's serving model. ``hp`` is None for an
    imported checkpoint: the arch's defaults (the official recipe's sizes)."""

    def __call__(self, module: nn.Module, hp: CommonHyperparameters | None = None, /
                 ) -> dict[str, Any]: ...


class ExportGraphsHook(Protocol):
    """(model in eval mode, the version's validated serving config) -> graph role ->
    ExportGraph. Fixed input sizes come from ``config`` (what the API will feed); None: the
    sizes of ``serving_config(module, None)``."""

    def __call__(self, module: nn.Module, config: Mapping[str, Any] | None = None, /
                 ) -> dict[str, ExportGraph]: ...


# A registered builder keeps its own signature (and return type) through the decorator.
BuilderT = TypeVar("BuilderT", bound=Callable[..., nn.Module])
# (part name -> file, labels file or None) -> the imported weights. Raises CheckpointError.
OfficialLoader = Callable[[Mapping[str, Path], Path | None], ImportedWeights]


@dataclass(frozen=True)
class Architecture:
    name: str
    task: str
    builder: Callable[..., nn.Module]
    serving_config: ServingConfigHook
    # graph role ("main", "decoder") -> ExportGraph, built from a model in eval mode.
    export_graphs: ExportGraphsHook
    # Official checkpoint parts, in command-line order (the first is ``--weights``): part
    # name -> the published layout's key-list fixture (tests/fixtures/compat), or None for a
    # format of our own (no published layout to check against).
    official_parts: Mapping[str, str | None] = field(default_factory=dict)
    loader: OfficialLoader | None = None
    description: str = ""
    # Official part -> the file names it has in a published release folder, tried in order
    # (``toonforge import --weights FOLDER``); empty: the parts are given one by one.
    release_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def published_layouts(self) -> dict[str, str]:
        """The parts that have a published key layout: part name -> key-list fixture."""
        return {part: fixture for part, fixture in self.official_parts.items() if fixture}

    def release_parts(self, folder: Path) -> dict[str, Path]:
        """Each official part's file in a release ``folder``; ``ImportRefused`` naming
        the files looked for when one is absent or the arch has no release layout."""
        from worker.nets.checkpoints import ImportRefused

        if not self.release_files:
            raise ImportRefused(f"{self.name} has no release folder layout: give its"
                                f" checkpoint file(s), not the folder {folder}")
        parts, missing = {}, []
        for part in self.official_parts:
            found = [folder / n for n in self.release_files[part] if (folder / n).is_file()]
            if found:
                parts[part] = found[0]
            else:
                missing.append(" or ".join(self.release_files[part]))
        if missing:
            raise ImportRefused(f"{folder} is not a {self.name} release folder: it lacks"
                                f" {', '.join(missing)}")
        return parts


# name -> task -> Architecture: one architecture (``u2net``) may serve several tasks, each with its
# own serving config and graphs; the first task registered answers a lookup without a task.
_REGISTRY: dict[str, dict[str, Architecture]] = {}


def _positional_arity(hook: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume the new form
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _with_second_argument(hook: Callable[..., Any]) -> Any:
    """A hook written before the second argument existed (``hook(module)``: a plugin
    family's fixed sizes) keeps working: the extra argument is dropped for it."""
    if _positional_arity(hook) >= 2:
        return hook

    def adapted(module: nn.Module, extra: Any = None, /) -> Any:
        return hook(module)

    return adapted


class UnknownArch(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register_arch(
    name: str,
    *,
    task: str,
    serving_config: ServingConfigHook | Callable[[nn.Module], dict[str, Any]],
    export_graphs: ExportGraphsHook | Callable[[nn.Module], dict[str, ExportGraph]],
    official_parts: Mapping[str, str | None] | None = None,
    load_official: OfficialLoader | None = None,
    description: str = "",
    release_files: Mapping[str, tuple[str, ...]] | None = None,
) -> Callable[[BuilderT], BuilderT]:
    """Register the decorated builder as architecture ``name`` serving ``task`` (a
    registered task: ``UnknownTask`` otherwise)."""
    spec = get_task(task)
    task_name = spec.name
    if name not in spec.archs:
        raise ValueError(f"architecture {name!r} is not in task {task_name!r}'s archs"
                         f" {list(spec.archs)}: declare it in the task spec")
    if bool(official_parts) != (load_official is not None):
        raise ValueError(f"architecture {name!r}: official_parts and load_official go together")
    if release_files and set(release_files) != set(official_parts or {}):
        raise ValueError(f"architecture {name!r}: release_files must name every official part")

    def wrap(builder: BuilderT) -> BuilderT:
        if task_name in _REGISTRY.get(name, {}):
            raise ValueError(f"architecture {name!r} registered twice for task {task_name!r}")
        _REGISTRY.setdefault(name, {})[task_name] = Architecture(
            name=name,
            task=task_name,
            builder=builder,
            serving_config=_with_second_argument(serving_config),
            export_graphs=_with_second_argument(export_graphs),
            official_parts=dict(official_parts or {}),
            loader=load_official,
            description=description,
            release_files=dict(release_files or {}),
        )
        return builder

    return wrap


def get_arch(name: str, task: str | None = None) -> Architecture:
    """``name`` as it serves ``task`` (None: as the first task that registered it)."""
    load_family_workers()
    by_task = _REGISTRY.get(name)
    if not by_task:
        raise UnknownArch(
            f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        )
    if task is None:
        return next(iter(by_task.values()))
    if task not in by_task:
        raise UnknownArch(f"architecture {name!r} does not serve task {task!r}; it serves"
                          f" {', '.join(by_task)}")
    return by_task[task]


def list_archs(task: str | None = None) -> list[str]:
    load_family_workers()
    return sorted(n for n, by_task in _REGISTRY.items() if task is None or task in by_task)


def create_model(name: str, task: str | None = None, **kwargs: Any) -> nn.Module:
    return get_arch(name, task).builder(**kwargs)
