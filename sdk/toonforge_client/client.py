"""``Client`` (sync) and ``AsyncClient``: one method per API operation, named after its
operationId in openapi/openapi.json, with the same arguments in both."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import IO, Any, Literal, overload

import httpx

from toonforge_client import _common as c
from toonforge_client._common import ImageInput, UploadProgress
from toonforge_client.errors import (
    JobFailedError,
    NotFoundError,
    ToonforgeConnectionError,
    ToonforgeError,
    WaitTimeoutError,
    error_from_response,
    transport_error,
)
from toonforge_client.types import (
    ActivateResponse,
    ClassifyResponse,
    DatasetMeta,
    Health,
    ImageResult,
    ImagesResponse,
    IngestResult,
    JobEvent,
    JobMetrics,
    JobPage,
    JobUpdate,
    JobView,
    ModelDetail,
    ModelInfo,
    Readiness,
    SampleInfo,
    Task,
    apply_event,
)

log = logging.getLogger("toonforge_client")

ArchiveInput = bytes | str | os.PathLike[str] | IO[bytes]
ProgressCallback = Callable[[JobUpdate], object]
AsyncProgressCallback = Callable[[JobUpdate], object | Awaitable[object]]
STREAM_READ_TIMEOUT_S = 60.0  # above the server's keep-alive interval (15 s by default)


def _is_terminal_event(event: JobEvent) -> bool:
    return event["kind"] == "status" and event["data"].get("status") in (
        "succeeded", "failed", "cancelled")


def _finished(job: JobView) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def _stream_error_is_final(exc: ToonforgeError) -> bool:
    """A stream failure that polling would not fix: the job does not exist."""
    return isinstance(exc, NotFoundError) and exc.code == "job_not_found"


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


class _Base:
    def __init__(self, url: str | None, timeout: float | httpx.Timeout | None,
                 headers: dict[str, str] | None) -> None:
        self.base_url = c.resolve_url(url)
        self.timeout = timeout if timeout is not None else c.DEFAULT_TIMEOUT_S
        from toonforge_client import __version__

        self.headers = {"user-agent": f"toonforge-client/{__version__}", **(headers or {})}

    def _connection_error(self, exc: httpx.TransportError) -> ToonforgeConnectionError:
        return transport_error(exc, self.base_url)

    @staticmethod
    def _finish(job: JobView, raise_on_failure: bool) -> JobView:
        if raise_on_failure and job["status"] != "succeeded":
            raise JobFailedError(dict(job))
        return job


class Client(_Base):
    """The toonforge API over HTTP (thread-safe; use one per process).

    ``url`` defaults to ``$TOONFORGE_URL``, then http://127.0.0.1:8000. Every non-2xx answer
    raises an ``ApiError`` subclass with the server's ``code`` and ``message``; a server that
    cannot be reached raises ``ToonforgeConnectionError``.
    """

    def __init__(self, url: str | None = None, *, timeout: float | httpx.Timeout | None = None,
                 headers: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(url, timeout, headers)
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout,
                                  headers=self.headers, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: c.Call) -> Any:
        try:
            kwargs = call.request_kwargs()
            if call.upload is not None:
                kwargs["content"] = iter(call.upload)
            response = self._http.request(call.method, call.path, **kwargs)
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc
        finally:
            if call.upload is not None:
                call.upload.close()
        return call.result(response)

    # ------------------------------------------------------------------ inference

    def cartoonize(self, image: ImageInput, *, model: str | None = None,
                   version: int | None = None, max_side: int | None = None,
                   format: Literal["png", "jpeg", "webp"] | None = None) -> ImageResult:
        """A cartoon of the same size (``POST /cartoonize``)."""
        return self._send(c.cartoonize(image, model, version, max_side, format))

    def matte(self, image: ImageInput, *, model: str | None = None, version: int | None = None,
              output: Literal["mask", "cutout", "composite"] | None = None,
              background: str | None = None,
              format: Literal["png", "webp", "jpeg"] | None = None) -> ImageResult:
        """An alpha mask, RGBA cut-out or composite on ``background`` (#rrggbb)."""
        return self._send(c.matte(image, model, version, output, background, format))

    def classify(self, image: ImageInput, *, model: str | None = None,
                 version: int | None = None, top_k: int | None = None) -> ClassifyResponse:
        """The ``top_k`` most probable labels with their scores."""
        return self._send(c.classify(image, model, version, top_k))

    @overload
    def generate(self, *, model: str | None = ..., version: int | None = ...,
                 n: int | None = ..., seed: int | None = ...,
                 latents: list[list[float]] | None = ...,
                 rank_by_discriminator: bool | None = ..., oversample: int | None = ...,
                 format: Literal["grid"] = ...) -> ImageResult: ...

    @overload
    def generate(self, *, model: str | None = ..., version: int | None = ...,
                 n: int | None = ..., seed: int | None = ...,
                 latents: list[list[float]] | None = ...,
                 rank_by_discriminator: bool | None = ..., oversample: int | None = ...,
                 format: Literal["json"]) -> ImagesResponse: ...

    def generate(self, *, model: str | None = None, version: int | None = None,
                 n: int | None = None, seed: int | None = None,
                 latents: list[list[float]] | None = None,
                 rank_by_discriminator: bool | None = None, oversample: int | None = None,
                 format: Literal["grid", "json"] = "grid") -> ImageResult | ImagesResponse:
        """Generated images: a PNG grid (``ImageResult``, ``seed`` set) or, with
        ``format="json"``, each image as base64 PNG with its discriminator score."""
        return self._send(c.generate(model, version, n, seed, latents, rank_by_discriminator,
                                     oversample, format))

    def autoencode(self, image: ImageInput, *, model: str | None = None,
                   version: int | None = None, size: int | None = None) -> ImageResult:
        """The autoencoder's reconstruction (``size`` upscales it)."""
        return self._send(c.autoencode(image, model, version, size))

    @overload
    def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                               model: str | None = ..., version: int | None = ...,
                               steps: int | None = ..., format: Literal["png"] = ...
                               ) -> ImageResult: ...

    @overload
    def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                               model: str | None = ..., version: int | None = ...,
                               steps: int | None = ..., format: Literal["json"]
                               ) -> ImagesResponse: ...

    def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                               model: str | None = None, version: int | None = None,
                               steps: int | None = None, format: Literal["png", "json"] = "png"
                               ) -> ImageResult | ImagesResponse:
        """The decoded straight path between two images' latents (a PNG strip, or JSON)."""
        return self._send(c.autoencode_interpolate(image_a, image_b, model, version, steps,
                                                   format))

    def autoencode_sample(self, *, model: str | None = None, version: int | None = None,
                          n: int | None = None, seed: int | None = None) -> ImageResult:
        """A grid decoded from latents sampled from the fitted distribution."""
        return self._send(c.autoencode_sample(model, version, n, seed))

    # ------------------------------------------------------------------ models

    def list_models(self) -> list[ModelInfo]:
        return self._send(c.list_models())

    def get_model(self, name: str) -> ModelDetail:
        return self._send(c.get_model(name))

    def get_model_version(self, name: str, version: int) -> dict[str, Any]:
        """The version's manifest."""
        return self._send(c.get_model_version(name, version))

    def activate_model_version(self, name: str, version: int) -> ActivateResponse:
        """Promote or roll back; the answering process serves it before replying."""
        return self._send(c.activate_model_version(name, version))

    def rollback_model(self, name: str) -> ActivateResponse:
        """Re-activate the version that was active before the current one (409 if none)."""
        return self._send(c.rollback_model(name))

    # ------------------------------------------------------------------ datasets

    def create_dataset(self, archive: ArchiveInput, *, task: Task | str, name: str | None = None,
                       id: str | None = None, on_progress: UploadProgress | None = None
                       ) -> IngestResult:
        """Upload a zip / tar / tar.gz (bytes, a path, an open file) or a folder (zipped on
        the fly); ``on_progress(sent, total)`` after each chunk. Answers the intake report."""
        upload = c.Upload.open(archive, on_progress)
        return self._send(c.create_dataset(upload, str(task), name, id))

    def list_datasets(self, *, task: Task | str | None = None) -> list[DatasetMeta]:
        return self._send(c.list_datasets(task))

    def get_dataset(self, dataset_id: str) -> IngestResult:
        return self._send(c.get_dataset(dataset_id))

    def delete_dataset(self, dataset_id: str) -> None:
        return self._send(c.delete_dataset(dataset_id))

    # ------------------------------------------------------------------ jobs

    def create_finetune_job(self, *, task: Task | str, dataset_id: str, base: str,
                            target_model: str, hyperparameters: dict[str, Any] | None = None,
                            auto_activate: bool = False, webhook_url: str | None = None,
                            idempotency_key: str | None = None) -> JobView:
        """Queue a fine-tune job (an ``idempotency_key`` makes retries safe)."""
        return self._send(c.create_finetune_job(str(task), dataset_id, base, target_model,
                                                hyperparameters, auto_activate, webhook_url,
                                                idempotency_key))

    def list_jobs(self, *, status: str | None = None, task: Task | str | None = None,
                  limit: int | None = None, offset: int | None = None) -> JobPage:
        return self._send(c.list_jobs(status, task, limit, offset))

    def get_job(self, job_id: str) -> JobView:
        return self._send(c.get_job(job_id))

    def cancel_job(self, job_id: str) -> JobView:
        """A queued job is cancelled at once, a running one at its next step."""
        return self._send(c.cancel_job(job_id))

    def stream_job_events(self, job_id: str, *, after: int = 0,
                          read_timeout: float | None = STREAM_READ_TIMEOUT_S
                          ) -> Iterator[JobEvent]:
        """The job's events after event id ``after``, as they happen, until the terminal
        status event (``GET /jobs/{id}/events``). Close the iterator to stop early."""
        call = c.stream_job_events(job_id, after)
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout,
                                write=self._http.timeout.write, pool=self._http.timeout.pool)
        decoder = c.SSEDecoder()
        try:
            with self._http.stream("GET", call.path, timeout=timeout,
                                   **call.request_kwargs()) as response:
                if response.status_code != 200:
                    response.read()
                    raise error_from_response(response)
                for line in response.iter_lines():
                    message = decoder.feed(line)
                    if message is not None:
                        yield c.job_event(*message)
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc

    def get_job_metrics(self, job_id: str) -> JobMetrics:
        return self._send(c.get_job_metrics(job_id))

    def list_job_samples(self, job_id: str) -> list[SampleInfo]:
        return self._send(c.list_job_samples(job_id))

    def get_job_sample(self, job_id: str, name: str) -> ImageResult:
        return self._send(c.get_job_sample(job_id, name))

    def wait_for_job(self, job_id: str, *, on_progress: ProgressCallback | None = None,
                     timeout: float | None = None, poll_interval: float = 1.0,
                     stream: bool = True, stream_read_timeout: float = STREAM_READ_TIMEOUT_S,
                     raise_on_failure: bool = True) -> JobView:
        """Follow a job to its end and return it.

        Reads ``GET /jobs/{id}/events`` (server-sent events), calling ``on_progress`` with a
        ``JobUpdate`` per event; when the stream cannot be opened or breaks (a proxy that
        does not pass streams, a silence longer than ``stream_read_timeout``), it falls back
        to polling ``GET /jobs/{id}`` every ``poll_interval`` seconds (updates with
        ``source="poll"``). A job that ends failed or cancelled raises ``JobFailedError``
        (unless ``raise_on_failure=False``); ``timeout`` raises ``WaitTimeoutError``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get_job(job_id)
        if stream and not _finished(job):
            job = self._follow_stream(job, on_progress, deadline, timeout or 0.0,
                                      stream_read_timeout)
        last_seen = None
        while not _finished(job):
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(dict(job), timeout or 0.0)
            time.sleep(poll_interval if remaining is None else min(poll_interval, remaining))
            job = self.get_job(job_id)
            if on_progress is not None and (job["updated_at"], job["status"]) != last_seen:
                on_progress(JobUpdate(job, None, "poll"))
            last_seen = (job["updated_at"], job["status"])
        return self._finish(job, raise_on_failure)

    def _follow_stream(self, job: JobView, on_progress: ProgressCallback | None,
                       deadline: float | None, deadline_s: float, read_timeout: float
                       ) -> JobView:
        """The job after its event stream ends; the stream's failures are logged, not raised
        (the caller polls on), except for an unknown job or a passed deadline."""
        remaining = _remaining(deadline)
        events = self.stream_job_events(
            job["id"], read_timeout=read_timeout if remaining is None
            else max(0.1, min(read_timeout, remaining)))
        try:
            while True:
                try:
                    event = next(events)
                except StopIteration:
                    break
                except ToonforgeError as exc:
                    if _stream_error_is_final(exc):
                        raise
                    log.warning("event stream of job %s failed (%s); polling instead",
                                job["id"], exc)
                    break
                except ValueError as exc:  # not the event format we know
                    log.warning("unreadable event stream of job %s (%s); polling instead",
                                job["id"], exc)
                    break
                job = apply_event(job, event)
                if on_progress is not None:
                    on_progress(JobUpdate(job, event, "stream"))
                if _is_terminal_event(event):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeoutError(dict(job), deadline_s)
        finally:
            events.close()
        return self.get_job(job["id"])

    # ------------------------------------------------------------------ health

    def healthz(self) -> Health:
        return self._send(c.healthz())

    def readyz(self) -> Readiness:
        """Readiness, whether ready (200) or not (503): look at ``["ready"]``."""
        return self._send(c.readyz())

    def metrics(self) -> str:
        """The Prometheus text exposition of the answering process."""
        return self._send(c.metrics())


class AsyncClient(_Base):
    """``Client``'s methods as coroutines (``stream_job_events`` is an async iterator)."""

    def __init__(self, url: str | None = None, *, timeout: float | httpx.Timeout | None = None,
                 headers: dict[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(url, timeout, headers)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout,
                                       headers=self.headers, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: c.Call) -> Any:
        try:
            kwargs = call.request_kwargs()
            if call.upload is not None:
                kwargs["content"] = call.upload.__aiter__()
            response = await self._http.request(call.method, call.path, **kwargs)
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc
        finally:
            if call.upload is not None:
                call.upload.close()
        return call.result(response)

    # ------------------------------------------------------------------ inference

    async def cartoonize(self, image: ImageInput, *, model: str | None = None,
                         version: int | None = None, max_side: int | None = None,
                         format: Literal["png", "jpeg", "webp"] | None = None) -> ImageResult:
        return await self._send(c.cartoonize(image, model, version, max_side, format))

    async def matte(self, image: ImageInput, *, model: str | None = None,
                    version: int | None = None,
                    output: Literal["mask", "cutout", "composite"] | None = None,
                    background: str | None = None,
                    format: Literal["png", "webp", "jpeg"] | None = None) -> ImageResult:
        return await self._send(c.matte(image, model, version, output, background, format))

    async def classify(self, image: ImageInput, *, model: str | None = None,
                       version: int | None = None, top_k: int | None = None
                       ) -> ClassifyResponse:
        return await self._send(c.classify(image, model, version, top_k))

    @overload
    async def generate(self, *, model: str | None = ..., version: int | None = ...,
                       n: int | None = ..., seed: int | None = ...,
                       latents: list[list[float]] | None = ...,
                       rank_by_discriminator: bool | None = ..., oversample: int | None = ...,
                       format: Literal["grid"] = ...) -> ImageResult: ...

    @overload
    async def generate(self, *, model: str | None = ..., version: int | None = ...,
                       n: int | None = ..., seed: int | None = ...,
                       latents: list[list[float]] | None = ...,
                       rank_by_discriminator: bool | None = ..., oversample: int | None = ...,
                       format: Literal["json"]) -> ImagesResponse: ...

    async def generate(self, *, model: str | None = None, version: int | None = None,
                       n: int | None = None, seed: int | None = None,
                       latents: list[list[float]] | None = None,
                       rank_by_discriminator: bool | None = None, oversample: int | None = None,
                       format: Literal["grid", "json"] = "grid"
                       ) -> ImageResult | ImagesResponse:
        return await self._send(c.generate(model, version, n, seed, latents,
                                           rank_by_discriminator, oversample, format))

    async def autoencode(self, image: ImageInput, *, model: str | None = None,
                         version: int | None = None, size: int | None = None) -> ImageResult:
        return await self._send(c.autoencode(image, model, version, size))

    @overload
    async def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                                     model: str | None = ..., version: int | None = ...,
                                     steps: int | None = ..., format: Literal["png"] = ...
                                     ) -> ImageResult: ...

    @overload
    async def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                                     model: str | None = ..., version: int | None = ...,
                                     steps: int | None = ..., format: Literal["json"]
                                     ) -> ImagesResponse: ...

    async def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                                     model: str | None = None, version: int | None = None,
                                     steps: int | None = None,
                                     format: Literal["png", "json"] = "png"
                                     ) -> ImageResult | ImagesResponse:
        return await self._send(c.autoencode_interpolate(image_a, image_b, model, version,
                                                         steps, format))

    async def autoencode_sample(self, *, model: str | None = None, version: int | None = None,
                                n: int | None = None, seed: int | None = None) -> ImageResult:
        return await self._send(c.autoencode_sample(model, version, n, seed))

    # ------------------------------------------------------------------ models

    async def list_models(self) -> list[ModelInfo]:
        return await self._send(c.list_models())

    async def get_model(self, name: str) -> ModelDetail:
        return await self._send(c.get_model(name))

    async def get_model_version(self, name: str, version: int) -> dict[str, Any]:
        return await self._send(c.get_model_version(name, version))

    async def activate_model_version(self, name: str, version: int) -> ActivateResponse:
        return await self._send(c.activate_model_version(name, version))

    async def rollback_model(self, name: str) -> ActivateResponse:
        return await self._send(c.rollback_model(name))

    # ------------------------------------------------------------------ datasets

    async def create_dataset(self, archive: ArchiveInput, *, task: Task | str,
                             name: str | None = None, id: str | None = None,
                             on_progress: UploadProgress | None = None) -> IngestResult:
        upload = await asyncio.to_thread(c.Upload.open, archive, on_progress)
        return await self._send(c.create_dataset(upload, str(task), name, id))

    async def list_datasets(self, *, task: Task | str | None = None) -> list[DatasetMeta]:
        return await self._send(c.list_datasets(task))

    async def get_dataset(self, dataset_id: str) -> IngestResult:
        return await self._send(c.get_dataset(dataset_id))

    async def delete_dataset(self, dataset_id: str) -> None:
        return await self._send(c.delete_dataset(dataset_id))

    # ------------------------------------------------------------------ jobs

    async def create_finetune_job(self, *, task: Task | str, dataset_id: str, base: str,
                                  target_model: str,
                                  hyperparameters: dict[str, Any] | None = None,
                                  auto_activate: bool = False, webhook_url: str | None = None,
                                  idempotency_key: str | None = None) -> JobView:
        return await self._send(c.create_finetune_job(
            str(task), dataset_id, base, target_model, hyperparameters, auto_activate,
            webhook_url, idempotency_key))

    async def list_jobs(self, *, status: str | None = None, task: Task | str | None = None,
                        limit: int | None = None, offset: int | None = None) -> JobPage:
        return await self._send(c.list_jobs(status, task, limit, offset))

    async def get_job(self, job_id: str) -> JobView:
        return await self._send(c.get_job(job_id))

    async def cancel_job(self, job_id: str) -> JobView:
        return await self._send(c.cancel_job(job_id))

    async def stream_job_events(self, job_id: str, *, after: int = 0,
                                read_timeout: float | None = STREAM_READ_TIMEOUT_S
                                ) -> AsyncIterator[JobEvent]:
        call = c.stream_job_events(job_id, after)
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout,
                                write=self._http.timeout.write, pool=self._http.timeout.pool)
        decoder = c.SSEDecoder()
        try:
            async with self._http.stream("GET", call.path, timeout=timeout,
                                         **call.request_kwargs()) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_from_response(response)
                async for line in response.aiter_lines():
                    message = decoder.feed(line)
                    if message is not None:
                        yield c.job_event(*message)
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc

    async def get_job_metrics(self, job_id: str) -> JobMetrics:
        return await self._send(c.get_job_metrics(job_id))

    async def list_job_samples(self, job_id: str) -> list[SampleInfo]:
        return await self._send(c.list_job_samples(job_id))

    async def get_job_sample(self, job_id: str, name: str) -> ImageResult:
        return await self._send(c.get_job_sample(job_id, name))

    async def wait_for_job(self, job_id: str, *,
                           on_progress: AsyncProgressCallback | None = None,
                           timeout: float | None = None, poll_interval: float = 1.0,
                           stream: bool = True,
                           stream_read_timeout: float = STREAM_READ_TIMEOUT_S,
                           raise_on_failure: bool = True) -> JobView:
        """``Client.wait_for_job``; ``on_progress`` may be a plain function or a coroutine
        function."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = await self.get_job(job_id)
        if stream and not _finished(job):
            job = await self._follow_stream(job, on_progress, deadline, timeout or 0.0,
                                            stream_read_timeout)
        last_seen = None
        while not _finished(job):
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(dict(job), timeout or 0.0)
            await asyncio.sleep(poll_interval if remaining is None
                                else min(poll_interval, remaining))
            job = await self.get_job(job_id)
            if on_progress is not None and (job["updated_at"], job["status"]) != last_seen:
                await _call(on_progress, JobUpdate(job, None, "poll"))
            last_seen = (job["updated_at"], job["status"])
        return self._finish(job, raise_on_failure)

    async def _follow_stream(self, job: JobView, on_progress: AsyncProgressCallback | None,
                             deadline: float | None, deadline_s: float, read_timeout: float
                             ) -> JobView:
        remaining = _remaining(deadline)
        events = self.stream_job_events(
            job["id"], read_timeout=read_timeout if remaining is None
            else max(0.1, min(read_timeout, remaining)))
        try:
            while True:
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                except ToonforgeError as exc:
                    if _stream_error_is_final(exc):
                        raise
                    log.warning("event stream of job %s failed (%s); polling instead",
                                job["id"], exc)
                    break
                except ValueError as exc:
                    log.warning("unreadable event stream of job %s (%s); polling instead",
                                job["id"], exc)
                    break
                job = apply_event(job, event)
                if on_progress is not None:
                    await _call(on_progress, JobUpdate(job, event, "stream"))
                if _is_terminal_event(event):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeoutError(dict(job), deadline_s)
        finally:
            await events.aclose()
        return await self.get_job(job["id"])

    # ------------------------------------------------------------------ health

    async def healthz(self) -> Health:
        return await self._send(c.healthz())

    async def readyz(self) -> Readiness:
        return await self._send(c.readyz())

    async def metrics(self) -> str:
        return await self._send(c.metrics())


async def _call(callback: AsyncProgressCallback, update: JobUpdate) -> None:
    result = callback(update)
    if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
        await result
