"""What a fine-tune request must satisfy before it becomes a job (torch-free: the API runs
these checks; the request and view models themselves are in core/wire/jobs.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from core.errors import UnknownTask
from core.wire import BASE_RE, FinetuneRequest
from jobs.errors import InvalidJobRequest
from model_store.errors import StoreError
from tasks import get_task, task_specs

if TYPE_CHECKING:
    from core.settings import Settings
    from model_store.datasets import DatasetStore
    from model_store.store import ModelStore


@dataclass(frozen=True)
class Stores:
    """The model and dataset stores a request's references are checked against.

    A process opens them once (``Stores.open``: the backend TOONFORGE_STORE_URL chooses,
    model_store/factory.py) and passes them down, so an S3 store's client and cache are
    made once, not per request."""

    models: ModelStore
    datasets: DatasetStore

    @classmethod
    def open(cls, settings: Settings) -> Stores:
        from model_store.factory import open_dataset_store, open_model_store

        return cls(open_model_store(settings), open_dataset_store(settings))


def parse_base(base: str) -> tuple[str, int | None]:
    """``"model@3"`` -> ("model", 3); ``"model"`` or an arch name -> (name, None)."""
    match = BASE_RE.fullmatch(base)
    if not match:
        raise InvalidJobRequest(f"invalid base {base!r}: use 'model', 'model@n' or an arch name")
    version = match.group("version")
    return match.group("name"), int(version) if version is not None else None


def validate_hyperparameters(task: str, values: dict[str, Any]) -> dict[str, Any]:
    """Validate ``values`` for ``task``; returns them with every default filled in.

    Raises ``InvalidJobRequest`` whose ``errors`` locate each bad field as
    ``["body", "hyperparameters", <field>]`` (the shape of FastAPI's 422 details).
    """
    try:
        model = get_task(task).hyperparameters
    except UnknownTask as exc:
        raise InvalidJobRequest(str(exc), [{"loc": ["body", "task"], "msg": str(exc),
                                         "type": "value_error"}]) from None
    try:
        # Strict JSON types, as for every request field (core/wire): true is not 1
        # epoch, "3" is not 3; validated as the JSON they arrive as (arrays for tuples).
        try:
            text = json.dumps(values)
        except (TypeError, ValueError):  # not JSON at all (a caller's own Python values)
            return model.model_validate(values).model_dump(mode="json")
        return model.model_validate_json(text, strict=True).model_dump(mode="json")
    except ValidationError as exc:
        errors = [
            {"loc": ["body", "hyperparameters", *err["loc"]], "msg": err["msg"],
             "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) for e in errors)
        raise InvalidJobRequest(f"invalid hyperparameters for {task}: {fields}",
                             errors) from None


def _field_error(field_name: str, message: str) -> InvalidJobRequest:
    return InvalidJobRequest(message, [{"loc": ["body", field_name], "msg": message,
                                     "type": "value_error"}])


def check_dataset(request: FinetuneRequest, stores: Stores) -> None:
    """The dataset exists and is for the request's task, else ``InvalidJobRequest``."""
    try:
        dataset = stores.datasets.get(request.dataset_id)
    except StoreError as exc:
        raise _field_error("dataset_id", str(exc)) from None
    if dataset.task != request.task:
        raise _field_error("dataset_id", f"dataset {request.dataset_id!r} is a"
                                        f" {dataset.task} dataset, not {request.task}")


def check_references(request: FinetuneRequest, stores: Stores) -> FinetuneRequest:
    """What can be told before a job is queued: the dataset exists and is for this task,
    the base model/version exists and serves it (or the base is one of the task's
    architectures), the target line serves it, and the hyper-parameters agree with what
    the base version fixes (``TaskSpec.fixed_by_base``).

    Returns the request with the base's fixed hyper-parameters filled in where the client
    sent none. Raises ``InvalidJobRequest`` naming the field.
    """
    task = request.task
    spec = get_task(task)
    check_dataset(request, stores)
    store = stores.models
    models = set(store.model_names())
    name, version = parse_base(request.base)
    try:
        if name in models:
            if store.task_of(name) != task:
                raise _field_error("base", f"base model {name!r} serves"
                                          f" {store.task_of(name)}, not {task}")
            if version is None:
                version = store.active_version(name)
                if version is None:
                    raise _field_error("base", f"base model {name!r} has no active version:"
                                              f" name one as {name}@<n>")
            manifest = store.manifest(name, version)
            if spec.fixed_by_base is not None:
                request = _inherit(request, spec.fixed_by_base(manifest.preprocessing),
                                   manifest.ref)
        elif version is not None:
            raise _field_error("base", f"base model {name!r} does not exist")
        elif name not in spec.archs:
            raise _field_error("base", _unknown_base(name, task))
        if request.target_model in models and store.task_of(request.target_model) != task:
            raise _field_error("target_model", f"model {request.target_model!r} serves"
                              f" {store.task_of(request.target_model)}, not {task}")
    except StoreError as exc:
        raise _field_error("base", str(exc)) from None
    return request


def _unknown_base(name: str, task: str) -> str:
    owner = next((s.name for s in task_specs() if name in s.archs), None)
    if owner is not None:
        return f"architecture {name!r} serves {owner}, not {task}"
    return (f"base {name!r} is neither a model nor an architecture of {task}"
            f" (architectures: {', '.join(get_task(task).archs) or 'none'})")


def _inherit(request: FinetuneRequest, fixed: dict[str, Any], base_ref: str
             ) -> FinetuneRequest:
    """The request with the base's fixed values; a conflicting value is refused."""
    given = dict(request.hyperparameters)
    for key, value in fixed.items():
        if key in given and given[key] != value:
            message = (f"base {base_ref} has {key}={value}; a job on it cannot change it"
                       " (leave it out to inherit it)")
            raise InvalidJobRequest(message, [{"loc": ["body", "hyperparameters", key],
                                            "msg": message, "type": "value_error"}])
        given[key] = value
    return request.model_copy(update={"hyperparameters": given})


def normalized_request(request: FinetuneRequest) -> FinetuneRequest:
    """The request with validated, default-filled hyper-parameters (what a job stores)."""
    hyper = validate_hyperparameters(request.task, request.hyperparameters)
    return request.model_copy(update={"hyperparameters": hyper})


def request_hash(request: FinetuneRequest) -> str:
    """A stable digest of the request, for idempotency-key conflict detection."""
    body = request.model_dump(mode="json")
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
