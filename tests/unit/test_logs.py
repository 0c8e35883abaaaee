"""Structured logging: the JSON and text formats, request ids, context across threads."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    log_context,
    request_id_from,
)


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.getLogger("toonforge.test").makeRecord(
        "toonforge.test", logging.WARNING, __file__, 1, message, args or ("world",), None,
        extra=extra or None)
    ContextFilter().filter(rec)
    return rec


def test_json_line_has_the_fields_context_and_extras() -> None:
    with log_context(request_id="req-1", job_id="job-9"):
        line = json.loads(JsonFormatter().format(record(epoch=3)))
    assert line["level"] == "WARNING" and line["logger"] == "toonforge.test"
    assert line["message"] == "hello world" and line["ts"].endswith("+00:00")
    assert (line["request_id"], line["job_id"], line["epoch"]) == ("req-1", "job-9", 3)
    outside = json.loads(JsonFormatter().format(record()))
    assert "request_id" not in outside and "job_id" not in outside


def test_json_line_holds_the_traceback_on_one_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        rec = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "failed",
                                                (), sys.exc_info())
    text = JsonFormatter().format(rec)
    assert "\n" not in text and "ValueError: broken" in json.loads(text)["exc"]


def test_text_format_names_the_job() -> None:
    with log_context(job_id="abc"):
        text = TextFormatter().format(record())
    assert "toonforge.test [job_id=abc]: hello world" in text


@pytest.mark.parametrize(("given", "kept"), [
    ("abc-123", True), ("a.b:c_d", True), ("x" * 128, True), ("x" * 129, False),
    ("has space", False), ("-dash-first", False), ("", False), (None, False),
    ('{"a":1}', False),
])
def test_request_id_from_header(given: str | None, kept: bool) -> None:
    result = request_id_from(given)
    assert (result == given) is kept
    if not kept:
        assert len(result) == 32 and int(result, 16) >= 0


def test_context_crosses_to_a_thread_only_when_copied() -> None:
    def seen() -> str | None:
        return getattr(record(), "request_id", None)

    with ThreadPoolExecutor(1) as pool, log_context(request_id="r-7"):
        assert pool.submit(seen).result() is None
        assert pool.submit(contextvars.copy_context().run, seen).result() == "r-7"
