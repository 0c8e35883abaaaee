"""Examples in the OpenAPI document: a curl line for every operation (``x-codeSamples``) and
an example answer for every JSON response. The JSON examples are built from the response
models themselves, so they cannot drift from the contract (tests/api/test_openapi.py).

The task, model and architecture the generic examples name are the first registered task's
(service/examples.py), so no family is named here and every example is a value the server
accepts. It also documents what the models cannot say themselves:
``FinetuneRequest.hyperparameters`` is a union keyed on ``task`` (one hyper-parameter model
per registered task spec)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from core.wire import (
    ActivateResponse,
    DatasetMeta,
    GraphSpec,
    Health,
    IngestResult,
    IntakeReport,
    JobMetrics,
    JobPage,
    JobStatus,
    JobTracking,
    JobView,
    KeyCreated,
    KeyLimitsBody,
    KeyView,
    Lineage,
    Manifest,
    MetricPoint,
    ModelDetail,
    ModelInfo,
    ModelReadiness,
    ParityReport,
    Readiness,
    ReloadStatus,
    SampleInfo,
    SizeStats,
    SkippedFile,
    TensorSpec,
    VersionSummary,
)
from service.errors import error_responses
from service.examples import ExampleTask, example_task
from tasks import task_specs

URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class OperationExamples:
    """Examples a family's ``api`` module gives for its own operations (by operation id):
    a curl line, an example JSON answer, an example JSON request body."""

    curl: Mapping[str, str] = field(default_factory=dict)
    answers: Mapping[str, Any] = field(default_factory=dict)
    requests: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


JOB = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
RESUMED_JOB = "5b4c3d2e1f00f1e2d3c4b5a697887960"
_AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _curls(subject: ExampleTask) -> dict[str, str]:
    model = subject.model
    return {
        "list_models": f"curl {URL}/models",
        "get_model": f"curl {URL}/models/{model}",
        "get_model_version": f"curl {URL}/models/{model}/versions/2",
        "activate_model_version": f"curl -X POST {URL}/models/{model}/activate"
                                  " -H 'content-type: application/json' -d '{\"version\": 2}'",
        "rollback_model": f"curl -X POST {URL}/models/{model}/rollback",
        "create_dataset": f"curl --data-binary @faces.zip -H 'content-type: application/zip'"
                          f" '{URL}/datasets?task={subject.name}&id=faces'",
        "list_datasets": f"curl '{URL}/datasets?task={subject.name}'",
        "get_dataset": f"curl {URL}/datasets/faces",
        "delete_dataset": f"curl -X DELETE {URL}/datasets/faces",
        "create_finetune_job": f"curl {URL}/jobs/finetune -H 'content-type: application/json'"
                               " -H 'Idempotency-Key: faces-1'"
                               f" -d '{json.dumps(_finetune(subject))}'",
        "list_jobs": f"curl '{URL}/jobs?status=running&limit=20'",
        "get_job": f"curl {URL}/jobs/{JOB}",
        "cancel_job": f"curl -X POST {URL}/jobs/{JOB}/cancel",
        "resume_job": f"curl -X POST {URL}/jobs/{JOB}/resume",
        "stream_job_events": f"curl -N {URL}/jobs/{JOB}/events",
        "get_job_metrics": f"curl {URL}/jobs/{JOB}/metrics",
        "list_job_samples": f"curl {URL}/jobs/{JOB}/samples",
        "get_job_sample": f"curl {URL}/jobs/{JOB}/samples/epoch_002.png -o epoch_002.png",
        "infer": f"curl -F image=@photo.jpg '{URL}/infer/sketch' -o sketch.png",
        "create_key": f"curl {URL}/keys -H 'content-type: application/json'"
                      " -d '{\"name\": \"ci\", \"scopes\": [\"infer\", \"train\"],"
                      " \"limits\": {\"rps\": 5}}'",
        "list_keys": f"curl '{URL}/keys?include_revoked=false'",
        "revoke_key": f"curl -X DELETE {URL}/keys/0f1e2d3c4b5a",
        "healthz": f"curl {URL}/healthz",
        "readyz": f"curl {URL}/readyz",
        "metrics": f"curl {URL}/metrics",
    }


def _finetune(subject: ExampleTask) -> dict[str, Any]:
    """The example body of POST /jobs/finetune (also each sweep's base)."""
    return {"task": subject.name, "dataset_id": "faces", "base": subject.model,
            "target_model": subject.model, "hyperparameters": {"epochs": 10},
            "auto_activate": True}


def _job(subject: ExampleTask, status: JobStatus = JobStatus.RUNNING,
         resumed_from: str | None = None) -> JobView:
    done = status == JobStatus.SUCCEEDED
    model, metric = subject.model, subject.metric or "loss"
    better = "higher" if subject.direction == "max" else "lower"
    return JobView(
        id=RESUMED_JOB if resumed_from else JOB, task=subject.name, status=status,
        dataset_id="faces", base=model, target_model=model,
        hyperparameters=subject.hyperparameters,
        auto_activate=True, epoch=10 if done else 4, total_epochs=10,
        step=80 if done else 32, total_steps=80, losses={"loss": 0.061},
        val_metrics={"loss": 0.066, metric: subject.metric_value(1)},
        eta_seconds=None if done else 41.5, result_version=f"{model}@2" if done else None,
        published_epoch=9 if done else None,
        published_metrics={"loss": 0.064, metric: subject.metric_value(0)} if done else None,
        activation_reason=f"{model}@2 {metric}={subject.metric_value(0)} is at least as good"
        f" as active {model}@1 {metric}={subject.metric_value(1)} ({better} is better)"
        if done and subject.metric else None,
        resumed_from=resumed_from,
        activated=done, error=None, cancel_requested=False, attempts=1, created_at=_AT,
        started_at=_AT, finished_at=_AT if done else None, updated_at=_AT,
        tracking=None if resumed_from else JobTracking(
            mlflow_run_id=_RUN, mlflow_experiment_id="1",
            mlflow_run_url=f"http://mlflow.example:5000/#/experiments/1/runs/{_RUN}"))


_RUN = "8c1b2f7e5d3a4c6b9e0f1a2b3c4d5e6f"  # an MLflow run id (docs/JOBS.md "Tracking")
_SHAPE: list[int | str] = ["batch", 3, 256, 256]  # a tensor of the example's graphs


def _manifest(subject: ExampleTask) -> Manifest:
    graphs = {role: GraphSpec(file=file, opset=17,
                              inputs=[TensorSpec(name=name, shape=_SHAPE) for name in ins],
                              outputs=[TensorSpec(name=name, shape=_SHAPE) for name in outs])
              for role, (file, ins, outs) in subject.graphs.items()}
    checked = next(f"{role}.{outs[0]}" for role, (_, _, outs) in subject.graphs.items())
    return Manifest(
        model=subject.model, version=2, task=subject.name, arch=subject.arch,
        created_at=_AT.isoformat(), graphs=graphs,
        parity=ParityReport(passed=True, tolerance=1e-4, max_abs_error={checked: 2.1e-7},
                            inputs="2 fixed seeded batches (batch sizes 1 and >1)"),
        metrics={subject.metric: subject.metric_value(0)} if subject.metric else {},
        lineage=Lineage(source="finetune", dataset="faces", parent=f"{subject.model}@1",
                        hyperparameters={"epochs": 10}, job_id=JOB))


def _dataset(subject: ExampleTask) -> IngestResult:
    meta = DatasetMeta(id="faces", task=subject.name, name="faces", created_at=_AT,
                       bytes=1_204_224, filename="faces.zip", counts={"train": 90, "val": 10})
    report = IntakeReport(
        task=subject.name, can_train=True, split_source="auto",
        counts={"train": 90, "val": 10}, files_seen=101, files_accepted=100,
        image_size=SizeStats(min_width=64, max_width=256, mean_width=120.5, min_height=64,
                             max_height=256, mean_height=118.0),
        skipped=[SkippedFile(path="images/notes.txt", reason="not an image")])
    return IngestResult(meta=meta, report=report)


def _key() -> KeyView:
    return KeyView(id="0f1e2d3c4b5a", name="ci", scopes=["infer", "train"], created_at=_AT,
                   revoked_at=None, limits=KeyLimitsBody(rps=5))


def _json_examples(subject: ExampleTask) -> dict[str, Any]:
    model = subject.model
    info = ModelInfo(name=model, task=subject.name, versions=[1, 2], active=2,
                     is_default=True)
    summary = VersionSummary(version=2, arch=subject.arch, created_at=_AT.isoformat(),
                             description="fine-tuned by job " + JOB, parity_passed=True,
                             source="finetune", parent=f"{model}@1",
                             metrics=_manifest(subject).metrics)
    examples: dict[str, Any] = {
        "list_models": [info],
        "get_model": ModelDetail(**info.model_dump(), loaded_version=2,
                                 version_summaries=[summary], corrupt_versions=[],
                                 rollback_target=1),
        "get_model_version": _manifest(subject),
        "activate_model_version": ActivateResponse(name=model, active=2, previous=1),
        "rollback_model": ActivateResponse(name=model, active=1, previous=2),
        "create_dataset": _dataset(subject),
        "get_dataset": _dataset(subject),
        "list_datasets": [_dataset(subject).meta],
        "create_finetune_job": _job(subject, JobStatus.QUEUED),
        "get_job": _job(subject),
        "cancel_job": _job(subject),
        "resume_job": _job(subject, JobStatus.QUEUED, resumed_from=JOB),
        "list_jobs": JobPage(jobs=[_job(subject, JobStatus.SUCCEEDED)], total=1, limit=50,
                             offset=0),
        "get_job_metrics": JobMetrics(job_id=JOB, status=JobStatus.RUNNING, points=[
            MetricPoint(epoch=1, step=8, losses={"loss": 0.19}, val_metrics={"loss": 0.17},
                        at=_AT)]),
        "list_job_samples": [SampleInfo(name="epoch_001.png", epoch=1, bytes=48_213,
                                        url=f"/jobs/{JOB}/samples/epoch_001.png")],
        "create_key": KeyCreated(**_key().model_dump(),
                                 key="tf_0f1e2d3c4b5a_n8sGHFaga9wkrr8fiCpQrOI1dVTgBxJ_9h7HPghFGtk"),
        "list_keys": [_key()],
        "revoke_key": KeyView(**{**_key().model_dump(), "revoked_at": _AT}),
        "healthz": Health(),
        "readyz": Readiness(ready=True, models=[ModelReadiness(
            name=model, task=subject.name, active_version=2, loaded_version=2,
            providers=["CPUExecutionProvider"], ready=True, fallback=False,
            error=None)], replica="api-1", reload=ReloadStatus(mode="redis", connected=True)),
    }
    from service.routes.sweeps import json_examples as sweep_examples

    return {**{op: _dump(value) for op, value in examples.items()}, **sweep_examples()}


def _dump(value: Any) -> Any:
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value.model_dump(mode="json")


def _request_examples(subject: ExampleTask) -> dict[str, dict[str, Any]]:
    return {
        "create_finetune_job": _finetune(subject),
        "activate_model_version": {"version": 2},
        "create_key": {"name": "ci", "scopes": ["infer", "train"], "limits": {"rps": 5}},
    }


_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def _envelope_422() -> dict[str, Any]:
    """FastAPI documents its own 422 body on routes with parameters; ours is the envelope."""
    return error_responses(422, descriptions={
        422: "A parameter is invalid (`invalid_parameter`)."})[422] | {"model": None}


def _with_key(curl: str, op: dict[str, Any]) -> str:
    """The curl line with the API key header where the operation's scope is not open by
    default (train, admin; docs/SECURITY.md), whatever this server opens."""
    scopes = {s for requirement in op.get("security", []) for s in requirement.get("bearer", [])}
    if scopes - {"infer"}:
        return curl.replace("curl ", 'curl -H "Authorization: Bearer $TOONFORGE_API_KEY" ', 1)
    return curl


def mark_open_scopes(schema: dict[str, Any], open_scopes: frozenset[str]) -> dict[str, Any]:
    """An operation whose scope is open (setting ``open_scopes``; ``infer`` by default) may
    be called with no key or with a key: its security is ``[{}, {"bearer": [scope]}]``
    (OpenAPI's "optional" form), not a requirement the server does not make."""
    for operations in schema["paths"].values():
        for op in operations.values():
            security = op.get("security")
            if not security or {} in security:
                continue
            scopes = {s for requirement in security for s in requirement.get("bearer", [])}
            if scopes and scopes <= open_scopes:
                op["security"] = [{}, *security]
    return schema


def add_examples(schema: dict[str, Any], families: Iterable[OperationExamples] = ()
                 ) -> dict[str, Any]:
    subject = example_task()
    curls = _curls(subject)
    answers = _json_examples(subject)
    requests: dict[str, Mapping[str, Any]] = dict(_request_examples(subject))
    for examples in families:
        curls.update(examples.curl)
        answers.update({op: _dump(value) for op, value in examples.answers.items()})
        requests.update(examples.requests)
    fixed_422 = _envelope_422()
    fixed_422.pop("model")
    fixed_422["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/ErrorEnvelope"}
    for operations in schema["paths"].values():
        for op in operations.values():
            op_id = op.get("operationId")
            responses = op.get("responses", {})
            if responses.get("422", {}).get("content", {}).get("application/json", {}).get(
                    "schema", {}).get("$ref") == _FASTAPI_422:
                responses["422"] = fixed_422
            if op_id in curls:
                op["x-codeSamples"] = [{"lang": "Shell", "label": "curl",
                                        "source": _with_key(curls[op_id], op)}]
            for status, response in op.get("responses", {}).items():
                media = response.get("content", {}).get("application/json")
                if status.startswith("2") and media is not None and op_id in answers:
                    media["example"] = answers[op_id]
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and op_id in requests:
                body["example"] = requests[op_id]
    for unused in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(unused, None)
    return schema


_SCHEMA_REF = "#/components/schemas/{model}"


def add_hyperparameter_union(schema: dict[str, Any]) -> dict[str, Any]:
    """``FinetuneRequest.hyperparameters``: one of each registered task's hyper-parameter
    model, chosen by the request's ``task`` (said in the description and ``x-task-mapping``;
    an OpenAPI discriminator cannot name a sibling field)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    request = components.get("FinetuneRequest")
    if request is None:
        return schema
    mapping: dict[str, str] = {}
    for spec in task_specs():
        model = spec.hyperparameters
        body = model.model_json_schema(ref_template=_SCHEMA_REF)
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
        mapping[spec.name] = _SCHEMA_REF.format(model=model.__name__)
    field = request["properties"]["hyperparameters"]
    described = ", ".join(f"`{task}` -> {ref.rsplit('/', 1)[-1]}"
                          for task, ref in mapping.items())
    request["properties"]["hyperparameters"] = {
        "title": field.get("title", "Hyperparameters"),
        "default": field.get("default", {}),
        "oneOf": [{"$ref": ref} for ref in dict.fromkeys(mapping.values())],
        "description": "The hyper-parameters of the request's `task` (fields left out take"
        " the task's defaults; unknown fields are refused): " + described + ".",
        "x-task-mapping": mapping,
    }
    return schema


def install_openapi(app: FastAPI, families: Iterable[OperationExamples] = ()) -> None:
    """The document, with the generic examples and those of each family's operations."""
    family_examples = list(families)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = mark_open_scopes(get_openapi(
                title=app.title, version=app.version, summary=app.summary,
                description=app.description, routes=app.routes),
                frozenset(app.state.settings.open_scopes))
            app.openapi_schema = add_hyperparameter_union(add_examples(document,
                                                                       family_examples))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
