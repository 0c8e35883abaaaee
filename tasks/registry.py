"""The task registry: what each task *is*, declared once, looked up by name.

A task spec (one module per task in this package, or a plugin module: core/plugins.py)
holds everything the torch-free side needs to know about a task: its dataset layout, its
hyper-parameter model, the metric its activation gate compares and which way is better,
its default model name, the ONNX graphs it serves with their tensor names, its typed
serving config, and the starter recipe for the first start. ``get_task(name)`` fails
loudly on unknown names (timm's ``create_model`` style). This module imports no family:
``tasks/__init__.py`` does, so importing ``tasks`` registers the built-in five.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core import task_names
from core.errors import UnknownTask
from tasks.catalogue import CatalogueEntry
from tasks.layouts import DatasetLayout


class CommonHyperparameters(BaseModel):
    """Fields every task's hyper-parameter model has. Unknown fields are refused, so a typo
    (``learning_rate`` for ``lr``) is a 422 naming the field instead of a silent no-op."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=1024)
    seed: int = Field(default=0, ge=0, description="seeds init, splits, shuffles, augmentation")
    mixed_precision: bool = Field(
        default=False, description="torch.autocast + GradScaler; used on CUDA only"
    )
    num_workers: int = Field(default=0, ge=0, le=32, description="DataLoader worker processes")
    devices: int = Field(
        default=1, ge=1, le=64,
        description="devices (CUDA GPUs, or CPU processes) to train on with"
                    " torch.distributed DDP; batch_size is the global batch, split across them",
    )

    @model_validator(mode="after")
    def _batch_covers_devices(self) -> CommonHyperparameters:
        # Every rank needs at least one image of every global batch.
        if self.devices > self.batch_size:
            raise ValueError(f"batch_size={self.batch_size} is smaller than"
                             f" devices={self.devices}: every device needs a share of a batch")
        return self


class ServingConfig(BaseModel):
    """Base of a task's serving config: the manifest's ``preprocessing``, validated when a
    version loads. Every field a task declares without a default must be in the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Range = tuple[float, float]
RGB = tuple[float, float, float]  # per-channel mean / std of a normalisation


@dataclass(frozen=True)
class GraphIO:
    """One ONNX graph a task's versions hold: its file and tensor names (batch axis first).

    Requests share a run (dynamic batching) when every input has fixed non-batch axes in the
    manifest, unless ``per_request_batch``: a request that already is a batch of its own
    (generate's latents, a decoder fed a whole interpolation path) is run alone.
    """

    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    per_request_batch: bool = False


@dataclass(frozen=True)
class GateRule:
    """The validation metric that decides both which checkpoint a job keeps and whether a
    new version may replace the active one, and which way is better."""

    metric: str
    direction: Literal["min", "max"]

    def at_least_as_good(self, new: float, old: float) -> bool:
        return new <= old if self.direction == "min" else new >= old

    def better(self, new: float, old: float) -> bool:
        return new < old if self.direction == "min" else new > old


@dataclass(frozen=True)
class Int8Gate:
    """How close a version's INT8 variant must stay to its fp32 graphs, on held-out inputs
    the calibration did not see, to be kept (worker/training/quantize.py measures it).

    ``compare``: graph role -> the output compared (every role is quantized; the variant is
    kept only when every role passes). ``at_most`` / ``at_least``: metric -> bound. Metrics:
    ``mask_mae`` and ``mask_iou`` (the served, min-max normalised mask; IoU at 0.5),
    ``top1_agreement`` and ``top5_overlap`` (logits), ``psnr_db`` and ``pixel_mae`` (images
    scaled to [0, 1] by the serving config's ``output_range``)."""

    compare: Mapping[str, str]
    at_most: Mapping[str, float] = field(default_factory=dict)
    at_least: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtraArtifact:
    """A file a family publishes beside a version's graphs for its serving to read: a bundle
    of named numpy arrays (``.npz``). A trainer (``TrainResult.artifacts``) or an official
    import (``ImportedWeights.artifacts``) hands the arrays over under the artifact's name;
    loading a version calls ``read(arrays)`` and keeps what it returns in
    ``LoadedVersion.artifacts`` (absent file: absent key). ``read`` raises ``KeyError`` for a
    missing array and ``ValueError`` saying what is wrong; numpy only (the API reads it).
    ``manifest_extra`` is recorded in the manifest's ``extra`` when the file is published."""

    file: str
    read: Callable[[Mapping[str, Any]], Any]
    manifest_extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StarterRecipe:
    """The first start with an empty store trains the task's default model like this: the
    architecture to start from scratch, the synthetic dataset's sizes (keyword arguments of
    the spec's ``synthetic`` maker) and the hyper-parameters."""

    arch: str
    dataset: Mapping[str, int]
    hyperparameters: Mapping[str, Any]


@dataclass(frozen=True)
class Batching:
    """How a family's batchable graphs group concurrent requests, where the server-wide
    defaults (Settings.batch_max_size, batch_max_delay_ms) do not suit it: ``None`` keeps
    the default. A large graph may want fewer rows per run, a cheap one a longer wait."""

    max_size: int | None = None
    max_delay_ms: float | None = None

    def size(self, default: int) -> int:
        return self.max_size if self.max_size is not None else default

    def delay_s(self, default_ms: float) -> float:
        return (self.max_delay_ms if self.max_delay_ms is not None else default_ms) / 1000.0


@dataclass(frozen=True)
class GraphMemory:
    """What one run of a graph holds beyond its input and output arrays (onnxruntime's
    arena: activations and convolution buffers), per value of its input tensor, at each
    precision, plus a fixed part; measured on the family's real architecture at its
    largest served input (bench/memory.py). The API reserves it before a request runs
    (service/inference/budget.py)."""

    per_input_value: Mapping[str, float]
    fixed_bytes: int = 0

    def run_bytes(self, values: int, precision: str) -> int:
        per_value = self.per_input_value.get(precision, max(self.per_input_value.values()))
        return int(self.fixed_bytes + per_value * values)


# A synthetic dataset maker: (root, seed, **sizes) -> root, drawing files in the task's
# upload layout. Torch-free (Pillow + numpy), so tests and demos need no worker.
SyntheticMaker = Callable[..., Path]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    default_model: str
    graphs: Mapping[str, GraphIO]
    serving: type[ServingConfig]
    hyperparameters: type[CommonHyperparameters]
    layout: DatasetLayout
    # None: no validation number says one version is better; a person activates (only the
    # first version of an empty line goes live by itself).
    gate: GateRule | None
    starter: StarterRecipe | None = None
    synthetic: SyntheticMaker | None = None
    # Architecture names that serve the task (their nets register in the worker; the API
    # checks a job's base against this list without importing torch).
    archs: tuple[str, ...] = ()
    # Hyper-parameters a base version fixes, from its manifest's serving config: a job on
    # that base inherits them, and asking for another value is refused at submit.
    fixed_by_base: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    # Optional torch-free hooks that let the generic ``POST /infer/{task}`` endpoint serve
    # the task: see ImagePipeline. Built-in tasks have dedicated endpoints instead.
    image_pipeline: ImagePipeline | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # None: versions of the task get no INT8 variant (the fp32 graphs serve alone).
    int8_gate: Int8Gate | None = None
    # The main graph's inputs made from one uploaded RGB image exactly as the API serves
    # them: image_inputs(image, serving_config) -> {input name: array}. INT8 calibration
    # feeds these, so calibration and serving cannot drift. (Falls back to image_pipeline's
    # prepare.)
    image_inputs: Callable[[Any, Any], dict[str, Any]] | None = None
    # For a main graph fed no image (latents): one batch-1 request's inputs drawn from a
    # numpy Generator as the API draws them: drawn_inputs(serving_config, rng) -> feeds.
    drawn_inputs: Callable[[Any, Any], dict[str, Any]] | None = None
    # Module (API process only) whose ``router`` holds the family's named endpoints.
    api: str | None = None
    # Dynamic batching of the task's batchable graphs (None: the server's defaults).
    batching: Batching = field(default_factory=Batching)
    # Extra files versions of the task may carry beside their graphs, by name.
    artifacts: Mapping[str, ExtraArtifact] = field(default_factory=dict)
    # Official-weights entries ``toonforge pull`` offers for the task (tasks/catalogue.py).
    catalogue: tuple[CatalogueEntry, ...] = ()
    # Modules (worker process only) that register the family's nets and trainer.
    worker: tuple[str, ...] = ()
    # Graph role -> its memory model (service/inference/budget.py; a role not listed gets
    # the generic default there).
    memory: Mapping[str, GraphMemory] = field(default_factory=dict)

    @property
    def main_graph(self) -> GraphIO:
        return self.graphs["main"]

    @property
    def image_prepare(self) -> Callable[[Any, Any], dict[str, Any]] | None:
        """How one image becomes the main graph's inputs (None: the graph takes none)."""
        if self.image_inputs is not None:
            return self.image_inputs
        return self.image_pipeline.prepare if self.image_pipeline is not None else None


@dataclass(frozen=True)
class ImagePipeline:
    """Image in, image out through the main graph, for tasks served by ``/infer/{task}``.

    ``prepare(rgb_image, config) -> {input name: array}`` and
    ``finish(outputs, rgb_image, config) -> PIL image``; numpy and Pillow only.
    """

    prepare: Callable[..., dict[str, Any]]
    finish: Callable[..., Any]


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the registry; a second spec with the same name is a bug."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"task {spec.name!r} registered twice")
    if "main" not in spec.graphs:
        raise ValueError(f"task {spec.name!r} declares no 'main' graph")
    _REGISTRY[spec.name] = spec
    task_names.record(spec.name)
    return spec


def unregister_task(name: str) -> None:
    """Remove a task (tests that register a toy family clean up with this)."""
    _REGISTRY.pop(name, None)
    task_names.forget(name)


def get_task(name: object) -> TaskSpec:
    """The spec of ``name``; ``UnknownTask`` (a 422 naming the known tasks) otherwise."""
    try:
        return _REGISTRY[str(name)]
    except KeyError:
        raise UnknownTask(name, list_tasks()) from None


def default_model(task: str, chosen: Mapping[str, str]) -> str:
    """The model ``task`` serves when a request names none: ``chosen``'s
    (Settings.default_models), else the spec's ``default_model``."""
    return chosen[task] if task in chosen else get_task(task).default_model


def list_tasks() -> list[str]:
    """Registered task names, in registration order (built-ins first)."""
    return list(_REGISTRY)


def task_specs() -> list[TaskSpec]:
    return list(_REGISTRY.values())


def check_task(name: object) -> str:
    """``name`` if it is a registered task (pydantic validator for task fields)."""
    return get_task(name).name


