"""Datasets: upload (zip or tar), list, inspect, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from model_store.dataset_schema import DatasetMeta, IngestResult
from model_store.datasets import DatasetStore
from service import uploads
from service.deps import JobRepositoryDep, SettingsDep
from service.errors import error_responses
from tasks import TaskName

router = APIRouter(prefix="/datasets", tags=["datasets"])

_ARCHIVE = {"type": "string", "format": "binary"}
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "application/zip": {"schema": _ARCHIVE},
        "application/x-tar": {"schema": _ARCHIVE},
        "application/gzip": {"schema": _ARCHIVE},
        "application/octet-stream": {"schema": _ARCHIVE},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": _ARCHIVE}}},
    },
}
_UPLOAD_ERRORS = {
    413: "The archive is larger than the upload cap (`too_large`).",
    415: "The body is not a zip or tar archive (`unsupported_media_type`).",
    409: "A dataset with this id exists (`dataset_conflict`).",
    422: "The dataset cannot train (`dataset_invalid`, details.report says why), an entry"
    " breaks a safety rule (`archive_unsafe`: absolute or `..` paths, links) or the archive"
    " inflates past the caps (`archive_too_large`), or a parameter is invalid.",
}


@router.post("", operation_id="create_dataset", status_code=201,
             openapi_extra={"requestBody": _UPLOAD_BODY},
             responses=error_responses(409, 413, 415, 422, 500, descriptions=_UPLOAD_ERRORS))
async def create_dataset(
    request: Request,
    settings: SettingsDep,
    task: Annotated[TaskName, Query(description="The task the dataset trains.")],
    name: str | None = Query(None, max_length=200, description="A name to show in lists."),
    id: str | None = Query(None, description="Choose the id (lowercase, digits, . _ -)."),
) -> IngestResult:
    """Upload a dataset archive (raw body or multipart field `file`); answers its intake report."""
    return await uploads.create_dataset(request, settings, task, name, id)


@router.get("", operation_id="list_datasets", responses=error_responses(422, 500))
async def list_datasets(settings: SettingsDep, task: TaskName | None = None
                        ) -> list[DatasetMeta]:
    """Every stored dataset, newest first, optionally of one task."""
    return await run_in_threadpool(DatasetStore(settings.store_dir).list_datasets, task)


@router.get("/{dataset_id}", operation_id="get_dataset",
            responses=error_responses(404, 500, descriptions={404: "`dataset_not_found`."}))
async def get_dataset(settings: SettingsDep, dataset_id: str) -> IngestResult:
    """One dataset with its intake report."""
    store = DatasetStore(settings.store_dir)

    def read() -> IngestResult:
        return IngestResult(meta=store.get(dataset_id), report=store.report(dataset_id))

    return await run_in_threadpool(read)


@router.delete("/{dataset_id}", operation_id="delete_dataset", status_code=204,
               response_class=Response,
               responses=error_responses(404, 409, 500, descriptions={
                   404: "`dataset_not_found`.",
                   409: "A job that has not finished uses it (`dataset_conflict`)."}))
async def delete_dataset(settings: SettingsDep, jobs: JobRepositoryDep, dataset_id: str
                         ) -> Response:
    """Delete a dataset (refused while a queued or running job uses it)."""
    await run_in_threadpool(uploads.delete_dataset, settings, dataset_id, jobs.dataset_in_use)
    return Response(status_code=204)
