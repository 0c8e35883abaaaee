"""The worker's logs: our handler instead of Celery's, and the job id on every line a job
emits (Celery's own "Task ... succeeded" included).

Imported by worker/celery_app.py, which is what connects the receivers below.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

from celery import signals

from core.logs import JOB_ID, configure_logging
from core.settings import get_settings
from jobs.queue import FINETUNE_TASK

# Celery task id -> the token that restores the job id of before the task (none).
_running: dict[str, Token[str | None]] = {}


@signals.setup_logging.connect  # type: ignore[untyped-decorator]  # Celery's connect is unannotated
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # With a receiver connected, Celery neither replaces the root handlers nor redirects
    # stdout/stderr into its loggers: ours is the one handler.
    settings = get_settings()
    configure_logging(settings.log_format, loglevel or settings.log_level)


@signals.task_prerun.connect  # type: ignore[untyped-decorator]  # Celery's connect is unannotated
def _job_started(task_id: str, task: Any, args: tuple[Any, ...] = (), **_: Any) -> None:
    if task.name == FINETUNE_TASK and args:
        _running[task_id] = JOB_ID.set(str(args[0]))


@signals.task_postrun.connect  # type: ignore[untyped-decorator]  # Celery's connect is unannotated
def _job_finished(task_id: str, **_: Any) -> None:
    token = _running.pop(task_id, None)
    if token is not None:
        JOB_ID.reset(token)
