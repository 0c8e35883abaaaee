"""toonforge_client: the Python SDK for the toonforge HTTP API (sync and async, on httpx).

    from toonforge_client import Client
    with Client("http://127.0.0.1:8000") as tf:
        tf.cartoonize("photo.jpg").save("cartoon.png")

Client only: importing it imports nothing of the server (no torch, no FastAPI).
"""

from __future__ import annotations

__version__ = "0.1.0"

from toonforge_client.async_client import AsyncClient
from toonforge_client.client import Client
from toonforge_client.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    JobFailedError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServerError,
    ServiceUnavailableError,
    TooManyRequestsError,
    ToonforgeConnectionError,
    ToonforgeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    WaitTimeoutError,
)
from toonforge_client.types import ImageResult, JobUpdate

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequestError",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "ImageResult",
    "InvalidRequestError",
    "JobFailedError",
    "JobUpdate",
    "NotFoundError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "ServerError",
    "ServiceUnavailableError",
    "ToonforgeConnectionError",
    "ToonforgeError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "WaitTimeoutError",
    "__version__",
]
