"""Error types of the API and their HTTP mapping, in one place.

Domain code raises the types below (or the model store's own); nothing else in the service
knows a status code. Every error leaves as ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobs import artifacts as job_artifacts
from jobs import errors as job_errors
from model_store import errors as store_errors
from service.logs import REQUEST_ID

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Base of the errors the API answers with; ``code`` is the stable machine name."""

    code = "error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Undecodable(ApiError):
    code = "undecodable"


class TooLarge(ApiError):
    code = "too_large"


class UnsupportedMediaType(ApiError):
    code = "unsupported_media_type"


class InvalidParameter(ApiError):
    code = "invalid_parameter"

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


class TooManyPixels(ApiError):
    code = "too_many_pixels"


class ModelNotFound(ApiError):
    code = "model_not_found"


class VersionNotFound(ApiError):
    code = "version_not_found"


class ActivationRefused(ApiError):
    code = "activation_refused"


class NoActiveVersion(ApiError):
    code = "no_active_version"


class ModelNotReady(ApiError):
    code = "model_not_ready"


class DatasetNotFound(ApiError):
    code = "dataset_not_found"


class DatasetConflict(ApiError):
    code = "dataset_conflict"


class DatasetRefused(ApiError):
    """The upload cannot become a dataset; ``details`` holds the intake report or the rule."""

    code = "dataset_invalid"

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.code = code


class InvalidJobSpec(ApiError):
    """A fine-tune request naming a field that is wrong; ``details.errors`` locates each."""

    code = InvalidParameter.code


class JobNotFound(ApiError):
    code = "job_not_found"


class SampleNotFound(ApiError):
    code = "sample_not_found"


class JobConflict(ApiError):
    """The job is not in a state the request may change (e.g. cancelling a finished job)."""

    code = "job_conflict"


class IdempotencyConflict(ApiError):
    code = "idempotency_conflict"


class BrokerUnavailable(ApiError):
    code = "broker_unavailable"


STATUS: dict[type[ApiError], int] = {
    Undecodable: 400,
    TooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidParameter: 422,
    TooManyPixels: 422,
    ModelNotFound: 404,
    VersionNotFound: 404,
    ActivationRefused: 409,
    NoActiveVersion: 503,
    ModelNotReady: 503,
    DatasetNotFound: 404,
    DatasetConflict: 409,
    DatasetRefused: 422,
    InvalidJobSpec: 422,
    JobNotFound: 404,
    SampleNotFound: 404,
    JobConflict: 409,
    IdempotencyConflict: 409,
    BrokerUnavailable: 503,
}

# The model store raises its own types; they translate one to one.
_FROM_STORE: dict[type[Exception], type[ApiError]] = {
    store_errors.ModelNotFound: ModelNotFound,
    # An invalid name cannot exist in the store: answer as for any unknown model.
    store_errors.InvalidName: ModelNotFound,
    store_errors.VersionNotFound: VersionNotFound,
    store_errors.NoActiveVersion: NoActiveVersion,
    store_errors.ActivationRefused: ActivationRefused,
    store_errors.ManifestInvalid: ModelNotReady,
    store_errors.DatasetNotFound: DatasetNotFound,
    store_errors.DatasetExists: DatasetConflict,
    store_errors.DatasetInUse: DatasetConflict,
    store_errors.UploadTooLarge: TooLarge,
    store_errors.NotAnArchive: UnsupportedMediaType,
}

# The job layer's types (jobs/errors.py, jobs/artifacts.py), likewise.
_FROM_JOBS: dict[type[Exception], type[ApiError]] = {
    job_errors.JobNotFound: JobNotFound,
    job_errors.IdempotencyConflict: IdempotencyConflict,
    job_errors.InvalidTransition: JobConflict,
    job_errors.BrokerUnavailable: BrokerUnavailable,
    job_artifacts.SampleNotFound: SampleNotFound,
}


def _job_spec_refusal(exc: Exception) -> ApiError | None:
    """A fine-tune request that cannot become a job: 422 naming each offending field."""
    if isinstance(exc, job_errors.InvalidJobSpec):
        fields = [".".join(str(p) for p in e["loc"][1:]) or "body" for e in exc.errors]
        message = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, exc.errors, strict=True))
        return InvalidJobSpec(message or str(exc), {"errors": exc.errors})
    if isinstance(exc, job_artifacts.InvalidSampleName):
        return InvalidParameter("name", str(exc))
    return None


def _dataset_refusal(exc: Exception) -> ApiError | None:
    """Uploads that are archives but cannot become datasets: 422 with what the client needs."""
    if isinstance(exc, store_errors.DatasetInvalid):
        report = exc.report.model_dump(mode="json") if isinstance(exc.report, BaseModel) else {}
        return DatasetRefused("dataset_invalid", str(exc), {"report": report})
    if isinstance(exc, store_errors.ArchiveUnsafe):
        return DatasetRefused("archive_unsafe", str(exc), {"entry": exc.entry, "rule": exc.rule})
    if isinstance(exc, store_errors.ArchiveTooLarge):
        return DatasetRefused("archive_too_large", str(exc))
    return None

IMPORT_HINT = (
    "import one with `toonforge import --task {task} --arch <arch> --weights <file>"
    " --model {model} --activate` (e.g. `toonforge import --task matte --arch u2netp"
    " --weights u2netp.pth --model matte --activate`) or fine-tune one with"
    " POST /jobs/finetune"
)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = Field(
        None, description="Machine-readable context, e.g. a dataset's intake report."
    )


class ErrorEnvelope(BaseModel):
    """What every non-2xx answer carries."""

    error: ErrorBody


_DESCRIPTIONS = {
    400: "The image could not be decoded (`undecodable`).",
    404: "Unknown model or version (`model_not_found`, `version_not_found`).",
    409: "The version may not become active (`activation_refused`).",
    413: "The upload is larger than the byte limit (`too_large`).",
    415: "The body is not an image (`unsupported_media_type`).",
    422: "A parameter is invalid (`invalid_parameter`) or the image has too many pixels"
    " (`too_many_pixels`).",
    500: "A bug on our side (`internal`).",
    503: "No servable version (`no_active_version`, `model_not_ready`).",
}


# Example messages for the OpenAPI document, by error code; a route's example uses the first
# code its description names, so custom descriptions get matching examples.
_EXAMPLE_MESSAGES: dict[str, str] = {
    "undecodable": "the image could not be decoded: image file is truncated",
    "model_not_found": "model 'nope' does not exist",
    "version_not_found": "model 'matte' has no version 9",
    "activation_refused": "matte@3 failed its ONNX parity check and can never be active",
    "too_large": "the body has 31457280 bytes; the limit is 20971520",
    "unsupported_media_type": "text/plain is not an image: send image/* or the multipart"
    " field 'image'",
    "invalid_parameter": "top_k (query): Input should be greater than or equal to 1",
    "internal": "internal error; the server log has the details",
    "no_active_version": "model 'matte' has no active version: import one with `toonforge"
    " import ...` or fine-tune one with POST /jobs/finetune",
    "dataset_not_found": "dataset 'faces' does not exist",
    "dataset_conflict": "dataset 'faces' is used by an unfinished job",
    "job_not_found": "job 0f1e2d3c4b5a69788796a5b4c3d2e1f0 does not exist",
    "job_conflict": "job 0f1e2d3c4b5a69788796a5b4c3d2e1f0 has finished (succeeded)",
    "idempotency_conflict": "Idempotency-Key 'faces-1' was used with another request body",
    "broker_unavailable": "the job broker is unreachable; nothing was recorded",
    "dataset_invalid": "dataset cannot train: found 1 class(es) with at least 1 readable"
    " train image; at least 2 are needed",
    "archive_unsafe": "archive entry '../evil.png' refused: the path leaves the archive",
    "archive_too_large": "archive inflates past 4294967296 bytes",
    "sample_not_found": "job 0f1e2d3c4b5a69788796a5b4c3d2e1f0 has no sample 'epoch_009.png'",
    "model_not_ready": "matte@2 failed to load: model.onnx does not match its sha256",
}


def _example(status: int, description: str) -> dict[str, Any]:
    codes = re.findall(r"`([a-z_]+)`", description) + ["internal"]
    code = next(c for c in codes if c in _EXAMPLE_MESSAGES)
    return {"error": {"code": code, "message": _EXAMPLE_MESSAGES[code]}}


def error_responses(
    *statuses: int, descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status documented with the error envelope and an
    example answer."""
    text = {**_DESCRIPTIONS, **(descriptions or {})}
    return {
        status: {
            "model": ErrorEnvelope,
            "description": text[status],
            "content": {"application/json": {"example": _example(status, text[status])}},
        }
        for status in statuses
    }


def envelope(status: int, code: str, message: str,
             details: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(status_code=status, content={"error": body})


def to_api_error(exc: Exception) -> ApiError | None:
    if isinstance(exc, ApiError):
        return exc
    refusal = _dataset_refusal(exc) or _job_spec_refusal(exc)
    if refusal is not None:
        return refusal
    for store_type, api_type in (*_FROM_STORE.items(), *_FROM_JOBS.items()):
        if isinstance(exc, store_type):
            return api_type(str(exc))
    return None


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "request"
        name = ".".join(loc[1:]) or where
        parts.append(f"{name} ({where}): {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        error = to_api_error(exc)
        assert error is not None  # only registered for types to_api_error knows
        status = next((STATUS[t] for t in type(error).__mro__ if t in STATUS), 500)
        return envelope(status, error.code, error.message, error.details)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return envelope(422, InvalidParameter.code, _describe_validation(exc))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed", 413: TooLarge.code}
        response = envelope(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
        )
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path,
                      exc_info=exc)
        response = envelope(500, "internal", "internal error; the server log has the details")
        # Starlette answers this one outside every middleware: add the request id here.
        request_id = REQUEST_ID.get()
        if request_id is not None:
            response.headers["X-Request-ID"] = request_id
        return response

    app.add_exception_handler(ApiError, api_error)
    for store_type in (*_FROM_STORE, store_errors.DatasetInvalid, store_errors.ArchiveUnsafe,
                       store_errors.ArchiveTooLarge, *_FROM_JOBS, job_errors.InvalidJobSpec,
                       job_artifacts.InvalidSampleName):
        app.add_exception_handler(store_type, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
