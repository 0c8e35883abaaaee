"""The wire contract: every generic HTTP request and response model of the API.

Pure pydantic: no ORM, no store or network I/O. The API validates with these, the OpenAPI
document is generated from them, the worker reads ``FinetuneRequest`` and ``JobStatus``,
and the SDK's types are checked field by field against the generated document
(tests/sdk/test_wire_contract.py). Per-task hyper-parameters are a union keyed on ``task``
in the document (service/openapi_docs.py builds it from the task registry); a family's own
request and response models live in its folder.

One module per concern, all importable from here: ``inference`` (the parameters every
inference endpoint shares), ``models`` (the model catalogue, a version's manifest,
activation), ``datasets`` (a dataset and its intake report), ``jobs`` (fine-tune jobs and
the status every process shares), ``sweeps``, ``keys`` and ``health``. The store's own
models (model_store) are its file formats; routes answer these, mapped by service/views.py.
"""

from core.wire.datasets import DatasetMeta, IngestResult, IntakeReport, SizeStats, SkippedFile
from core.wire.health import Health, ModelReadiness, Readiness, ReloadStatus
from core.wire.inference import SEED_MAX, GeneratedImage, ImagesResponse, ModelChoice
from core.wire.jobs import (
    ACTIVE,
    BASE_RE,
    MAX_OFFSET,
    NAME_PATTERN,
    TERMINAL,
    FinetuneRequest,
    JobEvent,
    JobMetrics,
    JobPage,
    JobStatus,
    JobTracking,
    JobView,
    MetricPoint,
    SampleInfo,
)
from core.wire.keys import (
    KEY_NAME_PATTERN,
    ApiScope,
    KeyCreated,
    KeyCreateRequest,
    KeyLimitsBody,
    KeyView,
)
from core.wire.models import (
    ActivateRequest,
    ActivateResponse,
    FileEntry,
    GraphSpec,
    Lineage,
    Manifest,
    ModelDetail,
    ModelInfo,
    OutputParity,
    ParityReport,
    TensorSpec,
    VariantRecord,
    VersionSummary,
)
from core.wire.sweeps import (
    SweepEpoch,
    SweepPage,
    SweepPoint,
    SweepRequest,
    SweepSummary,
    SweepView,
)

__all__ = [
    "ACTIVE", "BASE_RE", "KEY_NAME_PATTERN", "MAX_OFFSET", "NAME_PATTERN", "SEED_MAX",
    "TERMINAL", "ActivateRequest", "ActivateResponse", "ApiScope", "DatasetMeta", "FileEntry",
    "FinetuneRequest", "GeneratedImage", "GraphSpec", "Health", "ImagesResponse",
    "IngestResult", "IntakeReport", "JobEvent", "JobMetrics", "JobPage", "JobStatus",
    "JobTracking", "JobView", "KeyCreateRequest", "KeyCreated", "KeyLimitsBody", "KeyView",
    "Lineage", "Manifest", "MetricPoint", "ModelChoice", "ModelDetail", "ModelInfo",
    "ModelReadiness", "OutputParity", "ParityReport", "Readiness", "ReloadStatus",
    "SampleInfo", "SizeStats", "SkippedFile", "SweepEpoch", "SweepPage", "SweepPoint",
    "SweepRequest", "SweepSummary", "SweepView", "TensorSpec", "VariantRecord",
    "VersionSummary",
]
