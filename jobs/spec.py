"""What a fine-tune request must satisfy before it becomes a job (torch-free: the API runs
these checks; the request and view models themselves are in core/wire.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.errors import UnknownTask
from core.wire import BASE_RE, FinetuneRequest
from jobs.errors import InvalidJobSpec
from model_store.datasets import DatasetStore
from model_store.errors import StoreError
from model_store.store import ModelStore
from tasks import get_task


def parse_base(base: str) -> tuple[str, int | None]:
    """``"model@3"`` -> ("model", 3); ``"model"`` or an arch name -> (name, None)."""
    match = BASE_RE.fullmatch(base)
    if not match:
        raise InvalidJobSpec(f"invalid base {base!r}: use 'model', 'model@n' or an arch name")
    version = match.group("version")
    return match.group("name"), int(version) if version is not None else None


def validate_hyperparameters(task: str, values: dict[str, Any]) -> dict[str, Any]:
    """Validate ``values`` for ``task``; returns them with every default filled in.

    Raises ``InvalidJobSpec`` whose ``errors`` locate each bad field as
    ``["body", "hyperparameters", <field>]`` (the shape of FastAPI's 422 details).
    """
    try:
        model = get_task(task).hyperparameters
    except UnknownTask as exc:
        raise InvalidJobSpec(str(exc), [{"loc": ["body", "task"], "msg": str(exc),
                                         "type": "value_error"}]) from None
    try:
        return model.model_validate(values).model_dump(mode="json")
    except ValidationError as exc:
        errors = [
            {"loc": ["body", "hyperparameters", *err["loc"]], "msg": err["msg"],
             "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) for e in errors)
        raise InvalidJobSpec(f"invalid hyperparameters for {task}: {fields}",
                             errors) from None


def _spec_error(field_name: str, message: str) -> InvalidJobSpec:
    return InvalidJobSpec(message, [{"loc": ["body", field_name], "msg": message,
                                     "type": "value_error"}])


def check_references(request: FinetuneRequest, store_root: Path | str) -> None:
    """What the store can tell before a job is queued: the dataset exists and is for this
    task, the base model/version exists and serves it, the target line serves it.

    An architecture name as base is checked by the worker (the registry imports torch).
    Raises ``InvalidJobSpec`` naming the field.
    """
    task = request.task
    try:
        dataset = DatasetStore(store_root).get(request.dataset_id)
    except StoreError as exc:
        raise _spec_error("dataset_id", str(exc)) from None
    if dataset.task != task:
        raise _spec_error("dataset_id", f"dataset {request.dataset_id!r} is a"
                                        f" {dataset.task} dataset, not {task}")
    store = ModelStore(store_root)
    models = set(store.model_names())
    name, version = parse_base(request.base)
    try:
        if name in models:
            if store.task_of(name) != task:
                raise _spec_error("base", f"base model {name!r} serves"
                                          f" {store.task_of(name)}, not {task}")
            if version is not None:
                store.manifest(name, version)
            elif store.active_version(name) is None:
                raise _spec_error("base", f"base model {name!r} has no active version:"
                                          f" name one as {name}@<n>")
        elif version is not None:
            raise _spec_error("base", f"base model {name!r} does not exist")
        if request.target_model in models and store.task_of(request.target_model) != task:
            raise _spec_error("target_model", f"model {request.target_model!r} serves"
                              f" {store.task_of(request.target_model)}, not {task}")
    except StoreError as exc:
        raise _spec_error("base", str(exc)) from None


def normalized_request(request: FinetuneRequest) -> FinetuneRequest:
    """The request with validated, default-filled hyper-parameters (what a job stores)."""
    hyper = validate_hyperparameters(request.task, request.hyperparameters)
    return request.model_copy(update={"hyperparameters": hyper})


def request_hash(request: FinetuneRequest) -> str:
    """A stable digest of the request, for idempotency-key conflict detection."""
    body = request.model_dump(mode="json")
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
