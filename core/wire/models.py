"""The model catalogue on the wire: models, their versions (with each version's manifest,
as GET /models/{name}/versions/{version} shows it) and activation.

The manifest models mirror the store's (model_store/manifest.py) field for field today; they
are the contract, the store's are its file format, and service/views.py maps one onto the
other, so the file format can change without changing what clients see."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from core.task_names import TaskName


class ModelInfo(BaseModel):
    name: str
    task: TaskName
    versions: list[int]
    active: int | None
    is_default: bool


class VersionSummary(BaseModel):
    version: int
    arch: str
    created_at: str
    description: str
    parity_passed: bool
    source: str
    parent: str | None
    metrics: dict[str, Any]


class ModelDetail(ModelInfo):
    loaded_version: int | None
    version_summaries: list[VersionSummary] = Field(
        description="one per version whose manifest reads")
    corrupt_versions: list[int] = Field(
        description="versions whose manifest.json cannot be read: they cannot serve or"
        " become active (409 version_corrupt)")
    rollback_target: int | None = Field(
        None, description="the version POST /models/{name}/rollback would activate (the"
        " activation history replayed); null: there is nothing to roll back to (it answers"
        " 409)")


class ActivateRequest(BaseModel):
    # Strict: a JSON body's true is not version 1 (lax pydantic would coerce it).
    version: StrictInt = Field(ge=1)


class ActivateResponse(BaseModel):
    name: str
    active: int
    previous: int | None


# ---------------------------------------------------------------------------- a version
class TensorSpec(BaseModel):
    name: str
    shape: list[int | str]
    dtype: str = "float32"


class GraphSpec(BaseModel):
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class OutputParity(BaseModel):
    """One graph output's parity figures under the relative rule (``ParityReport.rule``)."""

    max_abs_error: float = Field(description="Worst |ORT - torch| over the parity inputs.")
    scale: float = Field(description="max |torch output| over the parity inputs.")
    atol: float
    rtol: float
    bound: float = Field(description="atol + rtol * scale: the most max_abs_error may be.")
    passed: bool


class ParityReport(BaseModel):
    """Evidence that the ONNX graphs compute what the PyTorch module computes.

    ``rule`` "relative" (versions published since the rule changed): every output passes when
    max |ORT - torch| <= atol + rtol * max |torch|, with atol = ``tolerance`` and ``rtol``;
    ``outputs`` holds each output's figures. "absolute" (older manifests, which lack the
    field): max |ORT - torch| <= ``tolerance``. docs/ARCHITECTURE.md says why float32 needs
    the relative term."""

    passed: bool
    tolerance: float = Field(description="The absolute term (atol) of the bound.")
    rule: Literal["absolute", "relative"] = "absolute"
    rtol: float = Field(0.0, description="The relative term: times max |torch output|.")
    max_abs_error: dict[str, float] = Field(
        default_factory=dict, description="Worst |ORT - torch| per graph output."
    )
    outputs: dict[str, OutputParity] = Field(
        default_factory=dict, description="Per graph output: error, scale and bound."
    )
    inputs: str = Field("", description="How the fixed parity inputs were made.")
    torch_version: str = ""
    onnxruntime_version: str = ""
    detail: str = ""


class VariantRecord(BaseModel):
    """A reduced-precision variant of a version's graphs (``Manifest.variants["int8"]``):
    how it was made, how close it stayed to fp32 on held-out inputs, and whether it serves.

    A refused variant ships no graph file: the fp32 graphs serve and ``reason`` says why.
    The graph files, when kept, are hashed in ``Manifest.files`` like every other file."""

    precision: str = Field(description="'int8'.")
    passed: bool
    reason: str = Field("", description="Why it was kept or refused (a failure's error).")
    graphs: dict[str, str] = Field(
        default_factory=dict, description="Graph role -> file of this variant (kept only)."
    )
    fidelity: dict[str, float] = Field(
        default_factory=dict, description="'role.metric' -> value measured against fp32."
    )
    limits: dict[str, str] = Field(
        default_factory=dict, description="metric -> the bound it had to meet, e.g. '<= 0.0039'."
    )
    speedup: float | None = Field(
        None, description="fp32 / int8 time of the main graph, batch 1, on the publishing host."
    )
    fp32_ms: float | None = None
    int8_ms: float | None = None
    calibration: str = Field("", description="What the calibration and held-out inputs were.")
    calibration_inputs: int = 0
    held_out_inputs: int = 0
    method: str = ""
    onnxruntime_version: str = ""
    seconds: float = Field(0.0, description="Time the variant took to build and gate.")


class Lineage(BaseModel):
    source: str = Field(description="'import', 'finetune' or 'scratch'.")
    checkpoint: dict[str, str] = Field(
        default_factory=dict, description="Imported files: name -> sha256."
    )
    dataset: str | None = None
    parent: str | None = Field(None, description="'model@n' the weights started from.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = None
    synthetic_data: bool = False


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    model: str
    version: int
    task: TaskName
    arch: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    description: str = ""
    graphs: dict[str, GraphSpec]
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    labels: list[str] | None = None
    parity: ParityReport
    metrics: dict[str, Any] = Field(default_factory=dict)
    lineage: Lineage
    extra: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(default_factory=dict)
    # precision -> variant ("int8"); empty for versions published before variants existed.
    variants: dict[str, VariantRecord] = Field(default_factory=dict)
