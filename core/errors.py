"""One domain error base for the whole server side.

Every error a client can cause derives from :class:`DomainError`, which carries its stable
machine name (``code``), the HTTP status it maps to and optional machine-readable
``details``. The model store, the job layer, the task registry and the inference pool all
raise these; the API turns any of them into the JSON envelope in one exception handler
(``service/errors.py``), and the worker records the same ``code`` on a failed job.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every error with a stable code; the message is safe to show to a client."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class InvalidParameter(DomainError):
    """A request parameter (or field) is wrong; ``parameter`` names it."""

    code = "invalid_parameter"
    http_status = 422

    def __init__(self, parameter: str, problem: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{parameter}: {problem}", details)
        self.parameter = parameter


class UnknownTask(InvalidParameter):
    """A task name that no registered task spec has."""

    def __init__(self, name: object, known: list[str]) -> None:
        super().__init__("task", f"unknown task {name!r}; known: {', '.join(known)}")
        self.name = name


# Object reprs ("<_io.BytesIO object at 0x7f...>") and absolute paths in library messages.
_OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")
_ENUM_REPR = re.compile(r"<[A-Za-z_][\w.]*\.([A-Za-z_]\w*): ('[^']*'|-?\d+)>")
_PATH = re.compile(r"""(?<![\w.])(?:[A-Za-z]:)?(?:/[^\s/'"<>:,;()]+){2,}/?""")


def public_reason(exc: BaseException | str) -> str:
    """A library's error message made safe to show a client: object reprs, enum reprs and
    absolute file paths (a server's staging directories) are replaced by neutral words.
    Used wherever a message is built from ``str(exc)`` of Pillow, zipfile, tarfile, OS
    errors."""
    text = exc if isinstance(exc, str) else str(exc)
    text = _OBJECT_REPR.sub("the data", text)
    text = _ENUM_REPR.sub(lambda m: m.group(2).strip("'"), text)
    text = _PATH.sub("<path>", text)
    if not text.strip() and isinstance(exc, BaseException):
        return type(exc).__name__
    return text
