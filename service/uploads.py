"""Dataset uploads: stream the body (raw or the multipart field ``file``) to disk under the
cap, then hand the file to the intake (model_store/intake.py) on a worker thread."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from core.errors import InvalidParameter
from core.settings import Settings
from jobs.repository import JobRepository
from model_store.dataset_schema import IngestResult
from model_store.datasets import DatasetStore, validate_dataset_id
from model_store.errors import InvalidName
from model_store.intake import ingest_upload, receive_upload, receive_upload_async
from service.errors import multipart_error

MAX_FORM_FIELDS = 8  # non-file fields of a multipart dataset upload (stated in the schema)


async def _receive(request: Request, dest: Path, max_bytes: int) -> str:
    """Write the archive to ``dest``; returns the client's file name."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        await receive_upload_async(request.stream(), dest, max_bytes)
        return request.headers.get("x-filename", "upload")
    # Starlette spools the part to a temporary file; the body itself is already capped by
    # BodyLimitMiddleware, and the copy below enforces the cap on the part alone.
    try:
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    except (StarletteHTTPException, MultiPartException) as exc:
        raise multipart_error(exc) from None  # 413 too_many_parts / 400 malformed_multipart
    try:
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise InvalidParameter("file", "send the archive as the multipart file field 'file'"
                                   " or as the raw body")
        await run_in_threadpool(receive_upload, part.file, dest, max_bytes)
        return part.filename or "upload"
    finally:
        await form.close()


async def create_dataset(request: Request, settings: Settings, store: DatasetStore, task: str,
                         name: str | None, dataset_id: str | None, owner: str | None = None
                         ) -> IngestResult:
    if dataset_id is not None:
        try:
            validate_dataset_id(dataset_id)
        except InvalidName as exc:  # elsewhere an invalid name is "not found"; here, a typo
            raise InvalidParameter("id", str(exc)) from exc
    with store.upload_file() as tmp:
        filename = await _receive(request, tmp, settings.dataset_max_upload_bytes)
        return await run_in_threadpool(
            ingest_upload, store, task, tmp, filename, settings,
            name=name, dataset_id=dataset_id, owner=owner,
        )


def delete_dataset(store: DatasetStore, dataset_id: str, jobs: JobRepository) -> None:
    """Delete unless a queued, running or exporting job names it, under the dataset's lock
    (jobs/dataset_lock.py: a job accepted meanwhile either came first or fails)."""
    store.get(dataset_id)  # 404 before taking a lock on a name that is not a dataset
    with jobs.dataset_lock(dataset_id) as in_use:
        store.delete(dataset_id, in_use=in_use)

