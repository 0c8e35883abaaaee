"""The names of the registered tasks: the one part of the task registry the wire contract
needs, kept here so that ``core`` (imported by every process) imports nothing above it.

``tasks.registry.register_task`` records each name; ``TaskName`` validates a field against
them at parse time and lists them as an enum in JSON schema / OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

_NAMES: dict[str, None] = {}  # insertion-ordered: registration order


def record(name: str) -> None:
    _NAMES[name] = None


def forget(name: str) -> None:
    _NAMES.pop(name, None)


def known() -> list[str]:
    """Registered task names, in registration order (built-ins first)."""
    return list(_NAMES)


def _task_name(value: object) -> str:
    if str(value) not in _NAMES:
        raise ValueError(f"unknown task {value!r}; known: {', '.join(known())}")
    return str(value)


def _task_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = known()  # evaluated when the document is built


# A task name in a pydantic model: validated against the registry at parse time, and an enum
# of the registered tasks in JSON schema / OpenAPI.
TaskName = Annotated[str, AfterValidator(_task_name), Field(json_schema_extra=_task_enum)]
