"""Hyper-parameter sweeps: one job per point of a grid or list, compared side by side
(jobs/sweeps.py; docs/JOBS.md "Sweeps")."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Header, Query, Response

from core.wire import (
    MAX_OFFSET,
    FinetuneRequest,
    JobStatus,
    SweepEpoch,
    SweepPage,
    SweepPoint,
    SweepRequest,
    SweepSummary,
    SweepView,
)
from jobs import webhooks
from service import sweeps_api
from service.auth import TrainCaller, auth_responses, scope
from service.deps import (
    JobQueueDep,
    JobRepositoryDep,
    SettingsDep,
    StoresDep,
    SweepRepositoryDep,
)
from service.errors import error_responses
from service.examples import ExampleTask, example_task

router = APIRouter(prefix="/sweeps", tags=["sweeps"], dependencies=[scope("train")],
                   responses=auth_responses())

# ----------------------------------------------------------------- documentation
# The task and model the examples show: service/examples.py's, a task this server serves.
_URL = "http://127.0.0.1:8000"
_ID = "5e1f0a2b3c4d5e6f708192a3b4c5d6e7"
_JOBS = ["0f1e2d3c4b5a69788796a5b4c3d2e1f0", "1a2b3c4d5e6f708192a3b4c5d6e7f801"]
_AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _base(subject: ExampleTask) -> FinetuneRequest:
    return FinetuneRequest(task=subject.name, dataset_id="faces", base=subject.model,
                           target_model=subject.model, hyperparameters={"epochs": 2})


def _body(subject: ExampleTask) -> dict[str, Any]:
    return {"base": _base(subject).model_dump(mode="json", exclude_defaults=True),
            "grid": {"lr": [1e-3, 3e-4]}}


def _example_view() -> dict[str, Any]:
    subject = example_task()
    points = [
        SweepPoint(index=i, values={"lr": lr}, job_id=_JOBS[i], status=JobStatus.SUCCEEDED,
                   epoch=2, total_epochs=2, final_metric=final, best_metric=final,
                   best_epoch=2, published_metric=final,
                   result_version=f"{subject.model}@{i + 2}",
                   activated=False, activation_reason="auto_activate is off", error=None,
                   series=[SweepEpoch(epoch=1, value=first), SweepEpoch(epoch=2, value=final)])
        for i, (lr, first, final) in enumerate(
            [(1e-3, subject.metric_value(4), subject.metric_value(0)),
             (3e-4, subject.metric_value(5), subject.metric_value(1))])]
    return SweepView(id=_ID, created_at=_AT, task=subject.name, base=_base(subject),
                     grid={"lr": [1e-3, 3e-4]}, auto_activate=False, metric=subject.metric,
                     direction=subject.direction, best_index=0,
                     status_counts={"succeeded": 2}, points=points).model_dump(mode="json")


def _example_page() -> dict[str, Any]:
    subject = example_task()
    return SweepPage(sweeps=[SweepSummary(id=_ID, created_at=_AT, task=subject.name,
                                          dataset_id="faces", target_model=subject.model,
                                          keys=["lr"], job_ids=_JOBS)],
                     total=1, limit=50, offset=0).model_dump(mode="json")


def json_examples() -> dict[str, Any]:
    """The 2xx examples, set by service/openapi_docs.py after FastAPI built the document
    (FastAPI drops null values from examples given to the route: a point's error is null)."""
    return {"create_sweep": _example_view(), "get_sweep": _example_view(),
            "list_sweeps": _example_page()}


def _curl(line: str) -> dict[str, Any]:
    return {"x-codeSamples": [{"lang": "Shell", "label": "curl", "source": line.replace(
        "curl ", 'curl -H "Authorization: Bearer $TOONFORGE_API_KEY" ', 1)}]}


def _answer(status: int, description: str, example: dict[str, Any],
            model: type | None = None) -> dict[int | str, dict[str, Any]]:
    answer: dict[str, Any] = {"description": description,
                              "content": {"application/json": {"example": example}}}
    if model is not None:
        answer["model"] = model
    return {status: answer}


# 429 (rate, and quota_exceeded when the quota cannot take every point: nothing is
# created) comes from auth_responses() on the router.
_SWEEP_404 = {404: "Unknown sweep (`sweep_not_found`)."}
_CREATE_ERRORS = {
    409: "The Idempotency-Key was used with another body (`idempotency_conflict`).",
    422: "A field is invalid (`invalid_parameter`; details.errors name the point and field):"
    " both or neither of grid and points, an empty value list, more points than the"
    " server's sweep_max_points, a point whose merged hyper-parameters the task refuses, or"
    " a base whose dataset, model or target is invalid; nothing was created. Or the body is"
    " not JSON (`malformed_json`).",
    503: "The job broker is unreachable (`broker_unavailable`): the jobs made before it"
    " failed were cancelled and no sweep was recorded.",
}


# ----------------------------------------------------------------- routes


@router.post("", operation_id="create_sweep", status_code=201, responses={
    **_answer(201, "The sweep, its jobs queued.", _example_view()),
    **_answer(200, "An Idempotency-Key replay: the sweep that key created (header"
              " Idempotent-Replayed: true).", _example_view(), SweepView),
    **error_responses(409, 413, 422, 500, 503, descriptions=_CREATE_ERRORS)},
    openapi_extra={**_curl(f"curl {_URL}/sweeps -H 'content-type: application/json'"
                           f" -d '{json.dumps(_body(example_task()))}'"),
                   "requestBody": {"content": {"application/json": {
                       "example": _body(example_task())}}}})
async def create_sweep(
    body: SweepRequest,
    response: Response,
    repo: JobRepositoryDep,
    sweeps: SweepRepositoryDep,
    queue: JobQueueDep,
    settings: SettingsDep,
    stores: StoresDep,
    caller: TrainCaller,
    idempotency_key: str | None = Header(
        None, max_length=255, description="Repeat a request safely: the same key and body"
        " answer the sweep it created; the same key with another body is a 409."),
) -> SweepView:
    """Create one fine-tune job per point of a grid (every combination) or list.

    Each point's values replace the base's hyper-parameters of the same name and every point
    is validated before any job exists; the key's job quota must take all of them. Every job
    publishes to the base's target_model; `auto_activate` (default false) applies to all.
    """
    if body.base.webhook_url is not None:  # scheme and literal addresses, as for one job
        webhooks.check_webhook_url(str(body.base.webhook_url), settings.webhook_allow_hosts)
    sweep, created = await sweeps_api.create(repo, sweeps, queue, settings, stores, body,
                                             idempotency_key, caller)
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return sweep


@router.get("", operation_id="list_sweeps", responses={
    **_answer(200, "Sweeps, newest first.", _example_page()),
    **error_responses(422, 500)},
            openapi_extra=_curl(f"curl '{_URL}/sweeps?limit=20'"))
async def list_sweeps(sweeps: SweepRepositoryDep, limit: int = Query(50, ge=1, le=500),
                      offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> SweepPage:
    """Sweeps, newest first (paginated by limit/offset)."""
    return await sweeps_api.page(sweeps, limit, offset)


@router.get("/{sweep_id}", operation_id="get_sweep",
            responses={**_answer(200, "The comparison.", _example_view()),
                       **error_responses(404, 500, descriptions=_SWEEP_404)},
            openapi_extra=_curl(f"curl {_URL}/sweeps/{_ID}"))
async def get_sweep(repo: JobRepositoryDep, sweeps: SweepRepositoryDep, sweep_id: str
                    ) -> SweepView:
    """The points side by side: values, job status, epochs, final and best validation metric
    (the task's gate metric and direction), the published version and why it was or was not
    activated, and the per-epoch metric of each point."""
    return await sweeps_api.get(repo, sweeps, sweep_id)
