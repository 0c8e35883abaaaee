"""The errors only the API raises, and the one place errors become HTTP answers.

Every error a client can cause is a ``core.errors.DomainError`` (the store's, the job
layer's, the task registry's, the inference pool's and the ones below); it carries its code,
status and details, so one handler renders them all as
``{"error": {"code": ..., "message": ..., "details": ...}}``. Request validation, Starlette's
HTTP errors and unhandled exceptions get the same envelope. The OpenAPI helpers
(``error_responses``) document that envelope on every route.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Mount

from core.errors import DomainError, InvalidParameter, public_reason
from core.logs import REQUEST_ID

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_S = 5
# The status a request gets when its client went away before the server answered (nginx's
# "client closed request"): nobody receives it, but metrics and logs tell it from a 5xx.
CLIENT_CLOSED_REQUEST = 499


# ---------------------------------------------------------------- errors of the API itself
class Undecodable(DomainError):
    """The bytes are not a decodable image (or the multipart body cannot be parsed)."""

    code = "undecodable"
    http_status = 400


class TooLarge(DomainError):
    code = "too_large"
    http_status = 413


class MalformedJson(DomainError):
    """A JSON body that does not parse. 422 like every other invalid body, so each route
    that takes JSON already documents it; the code tells it apart from a wrong field."""

    code = "malformed_json"
    http_status = 422


class MalformedMultipart(DomainError):
    """Multipart framing that cannot be parsed (no boundary, broken part headers)."""

    code = "malformed_multipart"
    http_status = 400


class TooManyParts(DomainError):
    """More multipart fields or files than the route reads: refused, not parsed further."""

    code = "too_many_parts"
    http_status = 413


def multipart_error(exc: Exception) -> DomainError:
    """The domain error for a failure of Starlette's form parser (which raises a plain 400
    ``HTTPException``, or ``MultiPartException`` outside an app)."""
    detail = str(getattr(exc, "detail", None) or getattr(exc, "message", None) or exc)
    if detail.startswith(("Too many fields", "Too many files")):
        return TooManyParts(f"the multipart body has too many parts: {detail}")
    if detail.startswith("Part exceeded maximum size"):
        return TooLarge(f"a multipart field is too large: {detail}")
    return MalformedMultipart(f"the multipart body could not be parsed: {public_reason(detail)}")


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"
    http_status = 415


class TooManyPixels(DomainError):
    """Refused from the image header, before any pixel is decoded."""

    code = "too_many_pixels"
    http_status = 422


class ModelNotReady(DomainError):
    """The version a request needs exists but could not be loaded (/readyz says why)."""

    code = "model_not_ready"
    http_status = 503


class WrongTask(InvalidParameter):
    """The model a request names serves another task."""

    def __init__(self, model: str, serves: str, wanted: str) -> None:
        super().__init__("model", f"{model!r} serves {serves!r}, not {wanted!r}")


class NoImagePipeline(InvalidParameter):
    """``POST /infer/{task}`` for a task that declares no image pipeline; ``endpoints`` are
    the task's own routes when the caller knows them (``"POST /matte"``)."""

    def __init__(self, task: str, endpoints: Sequence[str] = ()) -> None:
        where = (" or ".join(endpoints) if len(endpoints) < 3 else
                 ", ".join(endpoints[:-1]) + " or " + endpoints[-1])
        use = f"use {where}" if endpoints else "use its own endpoint"
        super().__init__("task", f"{task!r} is served by its own endpoint, not by /infer"
                                 f" (it has no image pipeline): {use}")
        self.task = task


class TaskNotFound(DomainError):
    """``POST /infer/{task}`` for a task no spec registers (a field naming an unknown task is
    ``core.errors.UnknownTask``, a 422; a path naming one names nothing: 404)."""

    code = "task_not_found"
    http_status = 404

    def __init__(self, task: str, known: list[str]) -> None:
        super().__init__(f"no task {task!r} is registered; known: {', '.join(known)}")


# ---------------------------------------------------------------- the envelope in OpenAPI
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
    400: "The image could not be decoded (`undecodable`), or the multipart framing is"
    " broken (`malformed_multipart`).",
    404: "Unknown model or version (`model_not_found`, `version_not_found`).",
    408: "The body arrived too slowly (`request_timeout`: below TOONFORGE_HTTP_BODY_MIN_RATE"
    " bytes/s after TOONFORGE_HTTP_BODY_TIMEOUT_S); the connection is closed.",
    409: "The version may not become active (`activation_refused`), or its files do not"
    " match their sha256 (`version_corrupt`, details.file names the file).",
    413: "The upload is larger than the byte limit (`too_large`), or a multipart body has"
    " more parts than the route reads (`too_many_parts`).",
    415: "The body is not an image (`unsupported_media_type`).",
    422: "A parameter is invalid (`invalid_parameter`) or the image has too many pixels"
    " (`too_many_pixels`); a JSON body that does not parse is `malformed_json`.",
    500: "A bug on our side (`internal`).",
    503: "No servable version (`no_active_version`, `model_not_ready`).",
}


# Example messages for the OpenAPI document, by error code; a route's example uses the first
# code its description names, so custom descriptions get matching examples. The model and
# task they name are service/examples.py's (a task this server serves), read when a route
# documents its errors.
def _example_messages() -> dict[str, str]:
    from service.examples import example_task
    from service.unserved import import_hint  # imports this module: read at call time

    subject = example_task()
    model, job = subject.model, "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    return {
        "undecodable": "the image could not be decoded: image file is truncated",
        "model_not_found": "model 'nope' does not exist",
        "version_not_found": f"model {model!r} has no version 9",
        "activation_refused": f"{model}@3 failed its ONNX parity check and can never be"
        " active",
        "too_large": "the body has 31457280 bytes; the limit is 20971520",
        "request_timeout": "the request body arrived too slowly (120 bytes in 10 s; at least"
        " 16384 bytes/s after the first 10 s are needed)",
        "unsupported_media_type": "text/plain is not an image: send image/* or the multipart"
        " field 'image'",
        "invalid_parameter": "top_k (query): Input should be greater than or equal to 1",
        "internal": "internal error; the server log has the details",
        "no_active_version": f"model {model!r} has no active version; the starter job {job}"
        f" is running and will publish it (epoch 2/4, ETA 95 s; follow it: GET /jobs/{job});"
        " meanwhile, or instead: " + (import_hint(subject.name, model) if subject.known
                                      else "import weights or fine-tune one"),
        "dataset_not_found": "dataset 'faces' does not exist",
        "dataset_conflict": "dataset 'faces' is used by an unfinished job",
        "job_not_found": f"job {job} does not exist",
        "sweep_not_found": "sweep 5e1f0a2b3c4d5e6f708192a3b4c5d6e7 does not exist",
        "job_conflict": f"job {job} has finished (succeeded)",
        "idempotency_conflict": "Idempotency-Key 'faces-1' was used with another request body",
        "broker_unavailable": "the job broker is unreachable; nothing was recorded",
        "dataset_invalid": "dataset cannot train: found 1 class(es) with at least 1 readable"
        " train image; at least 2 are needed",
        "archive_unsafe": "archive entry '../evil.png' refused: the path leaves the archive",
        "archive_too_large": "archive inflates past 4294967296 bytes",
        "sample_not_found": f"job {job} has no sample 'epoch_009.png'",
        "model_not_ready": f"{model}@2 failed to load: model.onnx does not match its sha256",
        "version_corrupt": f"{model}@2 is corrupt: model.onnx does not match its sha256 in the"
        " manifest",
        "overloaded": "the server is at capacity (48 requests running or waiting); retry in"
        " 1 s",
        "malformed_json": "the body is not valid JSON: Expecting value (at byte 9)",
        "malformed_multipart": "the multipart body could not be parsed: Missing boundary in"
        " multipart.",
        "too_many_parts": "the multipart body has too many parts: Too many fields. Maximum"
        " number of fields is 8.",
        "task_not_found": "no task 'sketch' is registered; known: "
        + (", ".join(subject.known) or "none"),
    }


def _example(status: int, description: str) -> dict[str, Any]:
    messages = _example_messages()
    codes = re.findall(r"`([a-z_]+)`", description) + ["internal"]
    code = next(c for c in codes if c in messages)
    return {"error": {"code": code, "message": messages[code]}}


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


# ---------------------------------------------------------------- handlers
def envelope(status: int, code: str, message: str,
             details: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(status_code=status, content={"error": body})


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "request"
        name = ".".join(loc[1:]) or where
        parts.append(f"{name} ({where}): {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


_FASTAPI_BODY_ERROR = "There was an error parsing the body"


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (Starlette's 405 names only
    the methods of the first route that matched the path). Each top-level route (FastAPI
    includes routers as routes of their own) is asked whether it would take the request
    with each method; mounts (static files) answer their own 405s and are left out. A path
    the OpenAPI document lists literally answers with that entry's methods."""
    # A literal path of the document names its own resource: /jobs/finetune is not the
    # job "finetune" that GET /jobs/{job_id} would look up, so only its own methods count.
    literal = request.app.openapi().get("paths", {}).get(request.url.path)
    if literal:
        allowed = [m for m in _METHODS if m.lower() in literal]
    else:
        allowed = []
        for method in _METHODS:
            probe = {**request.scope, "method": method}
            if any(not isinstance(route, Mount) and route.matches(probe)[0] == Match.FULL
                   for route in request.app.router.routes):
                allowed.append(method)
    if "GET" in allowed and "HEAD" not in allowed:  # Starlette answers HEAD for every GET
        allowed.insert(allowed.index("GET") + 1, "HEAD")
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    async def domain_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        response = envelope(exc.http_status, exc.code, exc.message, exc.details)
        response.headers.update(getattr(exc, "headers", None) or {})  # e.g. Retry-After
        return response

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        broken = [e for e in exc.errors() if e.get("type") == "json_invalid"]
        if broken:
            reason = (broken[0].get("ctx") or {}).get("error", "invalid JSON")
            position = broken[0].get("loc", ("body", None))[-1]
            where = f" (at byte {position})" if isinstance(position, int) else ""
            return envelope(MalformedJson.http_status, MalformedJson.code,
                            f"the body is not valid JSON: {reason}{where}")
        return envelope(422, InvalidParameter.code, _describe_validation(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
            # FastAPI's answer for a JSON body that does not even decode (bad UTF-16,
            # nesting too deep): the same malformed_json as any unparsable JSON.
            return envelope(MalformedJson.http_status, MalformedJson.code,
                            "the body is not valid JSON: it could not be decoded")
        codes = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
                 413: TooLarge.code}
        response = envelope(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
        )
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405 and (methods := allowed_methods(request)):
            response.headers["Allow"] = ", ".join(methods)
        return response

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        # The jobs database is down or unreachable (or its schema is not created yet,
        # because it was down at start): the job routes say so; inference is unaffected.
        log.warning("jobs database error on %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        response = envelope(503, "database_unavailable",
                            "the jobs database does not answer; try again shortly")
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
        return response

    async def client_disconnect(request: Request, exc: Exception) -> Response:
        # Raised while reading the body (an upload cut off): not a server error. The
        # answer goes nowhere (the server drops it); the middleware counts its status.
        log.info("client closed the connection during %s %s (counted as %d)",
                 request.method, request.url.path, CLIENT_CLOSED_REQUEST)
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path,
                      exc_info=exc)
        response = envelope(500, "internal", "internal error; the server log has the details")
        # Starlette answers this one outside every middleware: add the request id here.
        request_id = REQUEST_ID.get()
        if request_id is not None:
            response.headers["X-Request-ID"] = request_id
        return response

    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(OperationalError, database_error)
    app.add_exception_handler(InterfaceError, database_error)
    app.add_exception_handler(ClientDisconnect, client_disconnect)
    app.add_exception_handler(Exception, internal_error)
