"""Fine-tune jobs: create, list, inspect, cancel, resume, follow (SSE), metrics, sample
pictures."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import FileResponse, StreamingResponse

from core.task_names import TaskName
from core.wire import (
    MAX_OFFSET,
    FinetuneRequest,
    JobMetrics,
    JobPage,
    JobStatus,
    JobView,
    SampleInfo,
)
from jobs import webhooks
from service import jobs_api
from service.auth import TrainCaller, auth_responses, scope
from service.deps import ArtifactsDep, JobQueueDep, JobRepositoryDep, SettingsDep, StoresDep
from service.errors import error_responses

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[scope("train")],
                   responses=auth_responses())

_JOB_404 = {404: "Unknown job (`job_not_found`)."}
_CREATE_ERRORS = {
    409: "The Idempotency-Key was used with another body (`idempotency_conflict`).",
    422: "A field is invalid (`invalid_parameter`; the message and details.errors name it):"
    " an unknown or invalid hyper-parameter, an unknown dataset or one of another task, an"
    " unknown base model or version, a target model of another task, a webhook_url that is"
    " not http(s) or names a loopback/private address; or the body is not JSON"
    " (`malformed_json`).",
    503: "The job broker is unreachable (`broker_unavailable`); nothing was recorded.",
}
Responses = dict[int | str, dict[str, Any]]
_CREATED: Responses = {201: {"description": "The job, queued."},
            200: {"model": JobView, "description": "An Idempotency-Key replay: the job that"
                  " key created (header Idempotent-Replayed: true)."}}
_SSE: Responses = {200: {
    "description": "text/event-stream: `id:` the event id, `event:` progress |"
              " status | sample | log | webhook, `data:` a JobEvent as JSON; ends after"
              " the terminal status event; `: keep-alive` comments in long silences.",
              "content": {"text/event-stream": {"schema": {"type": "string"}}}}}
_PNG: Responses = {200: {"description": "The PNG.", "content": {"image/png": {"schema": {
    "type": "string", "format": "binary"}}}}}


@router.post("/finetune", operation_id="create_finetune_job", status_code=201,
             responses={**_CREATED, **error_responses(409, 413, 422, 500, 503,
                                                      descriptions=_CREATE_ERRORS)})
async def create_finetune_job(
    body: FinetuneRequest,
    response: Response,
    repo: JobRepositoryDep,
    queue: JobQueueDep,
    settings: SettingsDep,
    stores: StoresDep,
    caller: TrainCaller,
    idempotency_key: str | None = Header(
        None, max_length=255, description="Repeat a request safely: the same key and body"
        " answer the job it created; the same key with another body is a 409."),
) -> JobView:
    """Queue a fine-tune job on an uploaded dataset (201; 200 for an Idempotency-Key replay)."""
    if body.webhook_url is not None:  # scheme and literal addresses; resolved at delivery
        webhooks.check_webhook_url(str(body.webhook_url), settings.webhook_allow_hosts)
    job, created = await jobs_api.create_job(repo, queue, stores, body, idempotency_key,
                                             caller)
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return job


@router.get("", operation_id="list_jobs", responses=error_responses(422, 500))
async def list_jobs(
    repo: JobRepositoryDep,
    status: JobStatus | None = None,
    task: TaskName | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> JobPage:
    """Jobs, newest first, optionally of one status and task (paginated by limit/offset)."""
    return await jobs_api.list_jobs(repo, status, task, limit, offset)


@router.get("/{job_id}", operation_id="get_job",
            responses=error_responses(404, 500, descriptions=_JOB_404))
async def get_job(repo: JobRepositoryDep, job_id: str) -> JobView:
    """Where a job stands: status, epoch/step, latest losses and metrics, ETA, result, error."""
    return await jobs_api.get_job(repo, job_id)


@router.post("/{job_id}/cancel", operation_id="cancel_job",
             responses=error_responses(404, 409, 500, descriptions={
                 **_JOB_404, 409: "The job has finished (`job_conflict`)."}))
async def cancel_job(repo: JobRepositoryDep, settings: SettingsDep, job_id: str) -> JobView:
    """Cancel a job: a queued one at once, a running one at its next step (keeps its checkpoint)."""
    return await jobs_api.cancel_job(repo, settings, job_id)


_RESUME_ERRORS = {
    **_JOB_404,
    409: "The job is not failed or cancelled, or it left no checkpoint (`job_conflict`).",
    503: "The job broker is unreachable (`broker_unavailable`); nothing was recorded.",
}


@router.post("/{job_id}/resume", operation_id="resume_job", status_code=201,
             responses={201: {"description": "The new job, queued (`resumed_from` names"
                              " the old one)."},
                        **error_responses(404, 409, 500, 503, descriptions=_RESUME_ERRORS)})
async def resume_job(repo: JobRepositoryDep, queue: JobQueueDep, artifacts: ArtifactsDep,
                     caller: TrainCaller, job_id: str) -> JobView:
    """Continue a failed or cancelled job from its last checkpoint, as a new job.

    The new job has the old one's request (dataset, base, target, hyper-parameters,
    auto_activate, webhook) and `resumed_from` set to the old id; it starts from the old
    job's checkpoint (weights, optimizer, epoch). The old job is left as it is.
    """
    return await jobs_api.resume_job(repo, queue, artifacts, job_id, caller)


@router.get("/{job_id}/events", operation_id="stream_job_events", response_class=Response,
            responses={**_SSE, **error_responses(404, 422, 500, descriptions=_JOB_404)})
async def stream_job_events(
    repo: JobRepositoryDep,
    settings: SettingsDep,
    job_id: str,
    last_event_id: str | None = Header(
        None, alias="Last-Event-ID", pattern=r"^(null|[0-9]{1,18})?$",
        description="Resume after this event id (digits; empty or `null`: from the start)."),
    after: int = Query(0, ge=0, description="Resume after this event id (for clients that"
                       " cannot set Last-Event-ID)."),
) -> StreamingResponse:
    """Follow a job as server-sent events until it finishes (resume with Last-Event-ID)."""
    await jobs_api.get_job(repo, job_id)  # a 404 is JSON, before the stream starts
    stream = jobs_api.event_stream(
        repo, job_id, max(after, _event_id(last_event_id)), poll_s=settings.job_events_poll_s,
        heartbeat_s=settings.job_events_heartbeat_s)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _event_id(header: str | None) -> int:
    """Last-Event-ID as a number; absent, empty and ``null`` (an EventSource that never
    saw an id, or a client that serialised None) mean "from the start"."""
    text = (header or "").strip()
    return int(text) if text.isdigit() else 0


@router.get("/{job_id}/metrics", operation_id="get_job_metrics",
            responses=error_responses(404, 500, descriptions=_JOB_404))
async def get_job_metrics(repo: JobRepositoryDep, job_id: str) -> JobMetrics:
    """The job's per-epoch training losses and validation metrics."""
    return await jobs_api.job_metrics(repo, job_id)


@router.get("/{job_id}/samples", operation_id="list_job_samples",
            responses=error_responses(404, 500, descriptions=_JOB_404))
async def list_job_samples(repo: JobRepositoryDep, artifacts: ArtifactsDep, job_id: str
                           ) -> list[SampleInfo]:
    """The pictures the trainer drew after each epoch."""
    return await jobs_api.job_samples(repo, artifacts, job_id)


@router.get("/{job_id}/samples/{name}", operation_id="get_job_sample",
            response_class=FileResponse,
            responses={**_PNG, **error_responses(404, 422, 500, descriptions={
                404: "Unknown job or sample (`job_not_found`, `sample_not_found`).",
                422: "Not a sample file name (`invalid_parameter`)."})})
async def get_job_sample(repo: JobRepositoryDep, artifacts: ArtifactsDep, job_id: str,
                         name: str = Path(max_length=200)) -> FileResponse:
    """One sample picture (a PNG named by GET /jobs/{id}/samples)."""
    path = await jobs_api.sample_file(repo, artifacts, job_id, name)
    return FileResponse(path, media_type="image/png")
