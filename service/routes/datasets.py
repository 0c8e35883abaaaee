"""Datasets: upload (zip or tar), list, inspect, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from core.task_names import TaskName
from core.wire import NAME_PATTERN, DatasetMeta, IngestResult
from model_store import dataset_schema
from model_store.dataset_scan import cap_report
from service import uploads
from service.auth import TrainCaller, auth_responses, scope
from service.deps import DatasetsDep, JobRepositoryDep, SettingsDep
from service.errors import error_responses
from service.ratelimit import check_dataset_room, enforce_dataset_quota
from service.uploads import MAX_FORM_FIELDS
from service.views import dataset_view, ingest_view

# The id rule, stated in the schema; the store checks it (an id that breaks it names no
# dataset: 404) with its own message.
DatasetId = Annotated[str, Path(json_schema_extra={"pattern": NAME_PATTERN})]

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=auth_responses())

_ARCHIVE = {"type": "string", "format": "binary"}
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "application/zip": {"schema": _ARCHIVE},
        "application/x-tar": {"schema": _ARCHIVE},
        "application/gzip": {"schema": _ARCHIVE},
        "application/octet-stream": {"schema": _ARCHIVE},
        # Parts past these are refused 413 too_many_parts (service/uploads.py).
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"], "properties": {"file": _ARCHIVE},
            "maxProperties": MAX_FORM_FIELDS + 1,
            "description": f"the archive as the file field `file`; at most one file and"
                           f" {MAX_FORM_FIELDS} other fields"}},
    },
}
_UPLOAD_ERRORS = {
    400: "The multipart framing is broken (`malformed_multipart`).",
    413: "The archive is larger than the upload cap (`too_large`), or the multipart body has"
    " more than the field `file` and a few others (`too_many_parts`).",
    415: "The body is not a zip or tar archive (`unsupported_media_type`).",
    409: "A dataset with this id exists (`dataset_conflict`).",
    422: "The dataset cannot train (`dataset_invalid`, details.report says why), an entry"
    " breaks a safety rule (`archive_unsafe`: absolute or `..` paths, links) or the archive"
    " passes a cap (`archive_too_large`: entries, files the layout uses, inflated bytes,"
    " staging disk bytes, compression ratio), or a parameter is invalid.",
}


@router.post("", operation_id="create_dataset", status_code=201,
             openapi_extra={"requestBody": _UPLOAD_BODY},
             responses=error_responses(400, 409, 413, 415, 422, 500, descriptions=_UPLOAD_ERRORS))
async def create_dataset(
    request: Request,
    settings: SettingsDep,
    store: DatasetsDep,
    caller: TrainCaller,
    task: Annotated[TaskName, Query(description="The task the dataset trains.")],
    name: str | None = Query(None, max_length=200, description="A name to show in lists."),
    id: str | None = Query(None, description="Choose the id (lowercase, digits, . _ -)."
                           " Absent: a random one.",
                           json_schema_extra={"pattern": NAME_PATTERN}),
) -> IngestResult:
    """Upload a dataset archive (raw body or multipart field `file`); answers its intake report."""
    # Per-key dataset quota (service/ratelimit.py): before the body is read, and once the
    # new dataset's size is known.
    await run_in_threadpool(check_dataset_room, store, caller.key_id, caller.limits)
    result = await uploads.create_dataset(request, settings, store, task, name, id,
                                          owner=caller.key_id)
    return ingest_view(await run_in_threadpool(enforce_dataset_quota, store, caller.key_id,
                                               caller.limits, result))


@router.get("", operation_id="list_datasets", responses=error_responses(422, 500),
            dependencies=[scope("train")])
async def list_datasets(store: DatasetsDep, task: TaskName | None = None
                        ) -> list[DatasetMeta]:
    """Every stored dataset, newest first, optionally of one task."""
    return [dataset_view(meta) for meta in await run_in_threadpool(store.list_datasets, task)]


@router.get("/{dataset_id}", operation_id="get_dataset", dependencies=[scope("train")],
            responses=error_responses(404, 500, descriptions={404: "`dataset_not_found`."}))
async def get_dataset(settings: SettingsDep, store: DatasetsDep, dataset_id: DatasetId
                      ) -> IngestResult:
    """One dataset with its intake report."""

    def read() -> dataset_schema.IngestResult:
        # Capped again on the way out: reports stored before the cap existed may be huge.
        report = cap_report(store.report(dataset_id), settings.dataset_report_max_items)
        return dataset_schema.IngestResult(meta=store.get(dataset_id), report=report)

    return ingest_view(await run_in_threadpool(read))


@router.delete("/{dataset_id}", operation_id="delete_dataset", status_code=204,
               dependencies=[scope("admin")],
               response_class=Response,
               responses=error_responses(404, 409, 500, descriptions={
                   404: "`dataset_not_found`.",
                   409: "A job that has not finished uses it (`dataset_conflict`)."}))
async def delete_dataset(store: DatasetsDep, jobs: JobRepositoryDep, dataset_id: DatasetId
                         ) -> Response:
    """Delete a dataset (refused while a queued or running job uses it; a job accepted
    at the same moment either wins, and the delete is a 409, or fails with 422)."""
    await run_in_threadpool(uploads.delete_dataset, store, dataset_id, jobs)
    return Response(status_code=204)
