"""Structured logs for the API and the worker: one JSON object per line, with context.

Both processes call ``configure_logging`` once. Every record then passes ``ContextFilter``,
which copies the request id (API) and the job id (worker) of the code that emitted it from
context variables, so a line needs no explicit ``extra=`` to say which request or job it
belongs to. Context variables follow the code into ``asyncio`` tasks; thread pools and
threads need ``contextvars.copy_context().run`` (the inference pool and the job heartbeat do).

Torch-free; imports nothing of the service but the standard library.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                        default=None)
JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
_CONTEXT = {"request_id": REQUEST_ID, "job_id": JOB_ID}

# A client's X-Request-ID is kept only when it is short and cannot forge log structure.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# Attributes every LogRecord has; anything else on a record came from ``extra=`` (but
# uvicorn's ANSI-coloured copy of its message, which only a terminal wants).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message", *_CONTEXT}
# Loggers with handlers of their own (uvicorn's dictConfig) that should go through ours.
_ADOPTED = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery")


def request_id_from(header: str | None) -> str:
    """The client's request id when it is safe to log, else a new one (uuid4 hex)."""
    if header is not None and _SAFE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


@contextlib.contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Tag every line logged inside the block (``request_id=`` / ``job_id=``)."""
    tokens = [(_CONTEXT[name], _CONTEXT[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``job_id`` (None when unset) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", request_id?, job_id?, extras..., exc?}``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with the request or job id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{n}={getattr(record, n)}" for n in _CONTEXT if getattr(record, n, None)]
        record.context = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


class _StructuredHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler ``configure_logging`` installed, so a second call replaces it."""


def configure_logging(fmt: LogFormat = "json", level: str | int = "INFO") -> None:
    """One handler on the root logger (stderr) for every logger of the process.

    Idempotent. uvicorn's and Celery's loggers lose their own handlers and propagate to it,
    so their lines are formatted (and tagged) like ours; Python warnings are logged too.
    """
    handler = _StructuredHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StructuredHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in _ADOPTED:
        adopted = logging.getLogger(name)
        adopted.handlers.clear()
        adopted.propagate = True
    logging.captureWarnings(True)
