"""What the client raises.

    ToonforgeError
    ├── ApiError                 the server answered non-2xx: .status_code .code .message .details
    │   │                            .retry_after (seconds, from Retry-After; else None)
    │   ├── BadRequestError          400 (undecodable)
    │   ├── UnauthorizedError        401 (unauthorized: no key, or an invalid or revoked one)
    │   ├── ForbiddenError           403 (forbidden: the key lacks the operation's scope)
    │   ├── NotFoundError            404 (model_not_found, version_not_found, job_not_found, ...)
    │   ├── ConflictError            409 (activation_refused, dataset_conflict, job_conflict, ...)
    │   ├── PayloadTooLargeError     413 (too_large)
    │   ├── UnsupportedMediaTypeError 415
    │   ├── InvalidRequestError      422 (invalid_parameter, too_many_pixels, dataset_invalid, ...)
    │   ├── TooManyRequestsError     429 (rate_limited, quota_exceeded): .retry_after
    │   ├── ServiceUnavailableError  503 (no_active_version, model_not_ready, broker_unavailable)
    │   └── ServerError              any other 5xx (internal)
    ├── ToonforgeConnectionError the server could not be reached, or the connection broke
    │   └── RequestTimeoutError      no answer in time
    ├── JobFailedError           wait_for_job: the job ended failed or cancelled (.job)
    └── WaitTimeoutError         wait_for_job: still not finished after ``timeout`` seconds
"""

from __future__ import annotations

from typing import Any

import httpx


class ToonforgeError(Exception):
    """Base of every error the client raises."""


class ApiError(ToonforgeError):
    """The server refused the request; ``code`` is its stable machine name."""

    def __init__(self, status_code: int, code: str, message: str,
                 details: dict[str, Any] | None = None, *, request_id: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id
        # Seconds the server asked to wait (Retry-After: 429, an overloaded 503), else None.
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_code}, {self.code!r}, {self.message!r})"


class BadRequestError(ApiError):
    pass


class UnauthorizedError(ApiError):
    """401: no API key where one is needed, or an invalid or revoked key (pass ``api_key=``
    or set ``TOONFORGE_API_KEY``)."""


class ForbiddenError(ApiError):
    """403: the API key lacks the scope the operation needs."""


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    pass


class PayloadTooLargeError(ApiError):
    pass


class UnsupportedMediaTypeError(ApiError):
    pass


class InvalidRequestError(ApiError):
    pass


class TooManyRequestsError(ApiError):
    """429: over the key's request rate (``rate_limited``) or a quota (``quota_exceeded``);
    ``retry_after`` says how many seconds to wait."""


class ServiceUnavailableError(ApiError):
    pass


class ServerError(ApiError):
    pass


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: InvalidRequestError,
    429: TooManyRequestsError,
    503: ServiceUnavailableError,
}


class ToonforgeConnectionError(ToonforgeError):
    """No HTTP answer: refused, unreachable, reset, or a broken stream."""

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class RequestTimeoutError(ToonforgeConnectionError):
    """The server did not answer within the client's timeout."""


class JobFailedError(ToonforgeError):
    """``wait_for_job``: the job finished, but not successfully (``job["status"]`` says how)."""

    def __init__(self, job: dict[str, Any]) -> None:
        status = job.get("status")
        reason = job.get("error") or ("" if status == "cancelled" else "no reason given")
        super().__init__(f"job {job.get('id')} {status}" + (f": {reason}" if reason else ""))
        self.job = job
        self.status: str = str(status)


class WaitTimeoutError(ToonforgeError, TimeoutError):
    """``wait_for_job`` gave up waiting; the job goes on (``job`` is the last state seen)."""

    def __init__(self, job: dict[str, Any], timeout: float) -> None:
        super().__init__(f"job {job.get('id')} still {job.get('status')} after {timeout:g}s")
        self.job = job


def error_from_response(response: httpx.Response) -> ApiError:
    """The server's ``{"error": {"code", "message", "details"?}}`` as an exception; a body
    that is not that envelope (a proxy's HTML page, say) still gives code ``http_<status>``."""
    status = response.status_code
    code, message, details = f"http_{status}", "", None
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        error = None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = error["code"]
        message = str(error.get("message", ""))
        details = error.get("details") if isinstance(error.get("details"), dict) else None
    else:
        text = response.text.strip().replace("\n", " ")
        message = text[:300] or response.reason_phrase or "no message"
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return kind(status, code, message, details, request_id=response.headers.get("x-request-id"),
                retry_after=_retry_after(response.headers.get("retry-after")))


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the server sends an integer; an HTTP date is not used)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def transport_error(exc: httpx.TransportError, base_url: str) -> ToonforgeConnectionError:
    """httpx's transport failures, in words a user can act on."""
    if isinstance(exc, httpx.TimeoutException):
        what = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "waiting for"
        return RequestTimeoutError(f"timed out {what} {base_url}", base_url)
    if isinstance(exc, httpx.ConnectError):
        return ToonforgeConnectionError(f"cannot connect to {base_url}: {exc}", base_url)
    return ToonforgeConnectionError(f"connection to {base_url} failed: {exc!r}", base_url)
