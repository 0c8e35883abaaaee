"""``AsyncClient``: ``Client``'s methods as coroutines, on httpx.AsyncClient. Requests come
from ``_calls`` and ``wait_for_job`` drives the same job-follow state machine (``_follow``) as
the sync client; only the I/O differs."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar, overload

import httpx

from toonforge_client import _calls as calls
from toonforge_client import _follow
from toonforge_client._base import STREAM_READ_TIMEOUT_S, ClientBase
from toonforge_client._events import JobEventReader
from toonforge_client._inputs import ArchiveInput, ImageInput, Upload, UploadProgress
from toonforge_client.errors import error_from_response
from toonforge_client.types import (
    ActivateResponse,
    ClassifyResponse,
    DatasetMeta,
    FinetuneRequest,
    Health,
    ImageResult,
    ImagesResponse,
    IngestResult,
    JobEvent,
    JobMetrics,
    JobPage,
    JobUpdate,
    JobView,
    KeyCreated,
    KeyView,
    Manifest,
    ModelDetail,
    ModelInfo,
    Precision,
    Readiness,
    SampleInfo,
    StyleList,
    SweepPage,
    SweepView,
    Task,
)

AsyncProgressCallback = Callable[[JobUpdate], object | Awaitable[object]]
T = TypeVar("T")


class AsyncClient(ClientBase):
    """``Client``'s methods as coroutines (``stream_job_events`` is an async iterator)."""

    def __init__(self, url: str | None = None, *, timeout: float | httpx.Timeout | None = None,
                 headers: dict[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 api_key: str | None = None) -> None:
        super().__init__(url, timeout, headers, api_key)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout,
                                       headers=self.headers, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: calls.Call[T]) -> T:
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
                         version: int | None = None,
                         precision: Precision | None = None, max_side: int | None = None,
                         format: Literal["png", "jpeg", "webp"] | None = None,
                         style: str | None = None,
                         faces: Literal["auto", "off"] | None = None) -> ImageResult:
        call = calls.cartoonize(image, model, version, max_side, format, style, faces)
        return await self._send(calls.with_precision(call, precision))

    async def infer(self, task: str, image: ImageInput, *, model: str | None = None,
                    version: int | None = None,
                    precision: Precision | None = None) -> ImageResult:
        call = calls.infer(task, image, model, version)
        return await self._send(calls.with_precision(call, precision))

    async def matte(self, image: ImageInput, *, model: str | None = None,
                    version: int | None = None,
                    precision: Precision | None = None,
                    output: Literal["mask", "cutout", "composite"] | None = None,
                    background: str | None = None,
                    format: Literal["png", "webp", "jpeg"] | None = None) -> ImageResult:
        call = calls.matte(image, model, version, output, background, format)
        return await self._send(calls.with_precision(call, precision))

    async def portrait(self, image: ImageInput, *, model: str | None = None,
                       version: int | None = None, precision: Precision | None = None,
                       output: Literal["drawing", "composite", "full"] | None = None,
                       crop: Literal["face", "none"] | None = None,
                       sigma: float | None = None, alpha: float | None = None
                       ) -> ImageResult:
        call = calls.portrait(image, model, version, output, crop, sigma, alpha)
        return await self._send(calls.with_precision(call, precision))

    async def classify(self, image: ImageInput, *, model: str | None = None,
                       version: int | None = None,
                       precision: Precision | None = None, top_k: int | None = None
                       ) -> ClassifyResponse:
        call = calls.classify(image, model, version, top_k)
        return await self._send(calls.with_precision(call, precision))

    @overload
    async def generate(self, *, model: str | None = ..., version: int | None = ...,
                       precision: Precision | None = ...,
                       n: int | None = ..., seed: int | None = ...,
                       latents: list[list[float]] | None = ...,
                       rank_by_discriminator: bool | None = ..., oversample: int | None = ...,
                       format: Literal["grid"] = ...) -> ImageResult: ...

    @overload
    async def generate(self, *, model: str | None = ..., version: int | None = ...,
                       precision: Precision | None = ...,
                       n: int | None = ..., seed: int | None = ...,
                       latents: list[list[float]] | None = ...,
                       rank_by_discriminator: bool | None = ..., oversample: int | None = ...,
                       format: Literal["json"]) -> ImagesResponse: ...

    async def generate(self, *, model: str | None = None, version: int | None = None,
                       precision: Precision | None = None,
                       n: int | None = None, seed: int | None = None,
                       latents: list[list[float]] | None = None,
                       rank_by_discriminator: bool | None = None, oversample: int | None = None,
                       format: Literal["grid", "json"] = "grid"
                       ) -> ImageResult | ImagesResponse:
        call = calls.generate(model, version, n, seed, latents,
                                           rank_by_discriminator, oversample, format)
        return await self._send(calls.with_precision(call, precision))

    async def autoencode(self, image: ImageInput, *, model: str | None = None,
                         version: int | None = None,
                         precision: Precision | None = None, size: int | None = None
                         ) -> ImageResult:
        call = calls.autoencode(image, model, version, size)
        return await self._send(calls.with_precision(call, precision))

    @overload
    async def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                                     model: str | None = ..., version: int | None = ...,
                                     precision: Precision | None = ...,
                                     steps: int | None = ..., format: Literal["png"] = ...
                                     ) -> ImageResult: ...

    @overload
    async def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                                     model: str | None = ..., version: int | None = ...,
                                     precision: Precision | None = ...,
                                     steps: int | None = ..., format: Literal["json"]
                                     ) -> ImagesResponse: ...

    async def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                                     model: str | None = None, version: int | None = None,
                                     precision: Precision | None = None,
                                     steps: int | None = None,
                                     format: Literal["png", "json"] = "png"
                                     ) -> ImageResult | ImagesResponse:
        call = calls.autoencode_interpolate(image_a, image_b, model, version,
                                                         steps, format)
        return await self._send(calls.with_precision(call, precision))

    async def autoencode_sample(self, *, model: str | None = None, version: int | None = None,
                                precision: Precision | None = None,
                                n: int | None = None, seed: int | None = None) -> ImageResult:
        call = calls.autoencode_sample(model, version, n, seed)
        return await self._send(calls.with_precision(call, precision))

    # ------------------------------------------------------------------ models

    async def list_styles(self) -> StyleList:
        """The styles ``cartoonize(style=...)`` takes, with previews (``GET /styles``)."""
        return await self._send(calls.list_styles())

    async def list_models(self) -> list[ModelInfo]:
        return await self._send(calls.list_models())

    async def get_model(self, name: str) -> ModelDetail:
        return await self._send(calls.get_model(name))

    async def get_model_version(self, name: str, version: int) -> Manifest:
        return await self._send(calls.get_model_version(name, version))

    async def activate_model_version(self, name: str, version: int) -> ActivateResponse:
        return await self._send(calls.activate_model_version(name, version))

    async def rollback_model(self, name: str) -> ActivateResponse:
        return await self._send(calls.rollback_model(name))

    # ------------------------------------------------------------------ datasets

    async def create_dataset(self, archive: ArchiveInput, *, task: Task | str,
                             name: str | None = None, id: str | None = None,
                             on_progress: UploadProgress | None = None) -> IngestResult:
        upload = await asyncio.to_thread(Upload.open, archive, on_progress)
        return await self._send(calls.create_dataset(upload, str(task), name, id))

    async def list_datasets(self, *, task: Task | str | None = None) -> list[DatasetMeta]:
        return await self._send(calls.list_datasets(task))

    async def get_dataset(self, dataset_id: str) -> IngestResult:
        return await self._send(calls.get_dataset(dataset_id))

    async def delete_dataset(self, dataset_id: str) -> None:
        return await self._send(calls.delete_dataset(dataset_id))

    # ------------------------------------------------------------------ API keys (admin)

    async def create_key(self, *, name: str, scopes: list[str], rps: float | None = None,
                         burst: int | None = None, max_running_jobs: int | None = None,
                         max_queued_jobs: int | None = None,
                         max_dataset_bytes: int | None = None,
                         max_dataset_files: int | None = None) -> KeyCreated:
        """A new API key (``POST /keys``, admin scope); ``["key"]`` is its plaintext, shown
        only in this answer. Limits left out take the server's settings (0: no limit)."""
        limits = {"rps": rps, "burst": burst, "max_running_jobs": max_running_jobs,
                  "max_queued_jobs": max_queued_jobs, "max_dataset_bytes": max_dataset_bytes,
                  "max_dataset_files": max_dataset_files}
        return await self._send(calls.create_key(name, scopes, limits))

    async def list_keys(self, *, include_revoked: bool = True) -> list[KeyView]:
        return await self._send(calls.list_keys(include_revoked))

    async def revoke_key(self, key_id: str) -> KeyView:
        """Revoke a key; API processes refuse it within their key cache time (5 s)."""
        return await self._send(calls.revoke_key(key_id))

    # ------------------------------------------------------------------ jobs

    async def create_finetune_job(self, *, task: Task | str, dataset_id: str, base: str,
                                  target_model: str | None = None,
                                  hyperparameters: dict[str, Any] | None = None,
                                  auto_activate: bool = False, webhook_url: str | None = None,
                                  idempotency_key: str | None = None) -> JobView:
        return await self._send(calls.create_finetune_job(
            str(task), dataset_id, base, target_model, hyperparameters, auto_activate,
            webhook_url, idempotency_key))

    async def list_jobs(self, *, status: str | None = None, task: Task | str | None = None,
                        limit: int | None = None, offset: int | None = None) -> JobPage:
        return await self._send(calls.list_jobs(status, task, limit, offset))

    async def get_job(self, job_id: str) -> JobView:
        return await self._send(calls.get_job(job_id))

    async def cancel_job(self, job_id: str) -> JobView:
        return await self._send(calls.cancel_job(job_id))

    async def resume_job(self, job_id: str) -> JobView:
        return await self._send(calls.resume_job(job_id))

    async def stream_job_events(self, job_id: str, *, after: int = 0,
                                read_timeout: float | None = STREAM_READ_TIMEOUT_S
                                ) -> AsyncIterator[JobEvent]:
        call = calls.stream_job_events(job_id, after)
        reader = JobEventReader()
        try:
            async with self._http.stream("GET", call.path, **call.request_kwargs(),
                                         timeout=self._stream_timeout(self._http.timeout,
                                                                      read_timeout)
                                         ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_from_response(response)
                async for line in response.aiter_lines():
                    event = reader.feed(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc

    async def get_job_metrics(self, job_id: str) -> JobMetrics:
        return await self._send(calls.get_job_metrics(job_id))

    async def list_job_samples(self, job_id: str) -> list[SampleInfo]:
        return await self._send(calls.list_job_samples(job_id))

    async def get_job_sample(self, job_id: str, name: str) -> ImageResult:
        return await self._send(calls.get_job_sample(job_id, name))

    async def wait_for_job(self, job_id: str, *,
                           on_progress: AsyncProgressCallback | None = None,
                           timeout: float | None = None, poll_interval: float = 1.0,
                           stream: bool = True,
                           stream_read_timeout: float = STREAM_READ_TIMEOUT_S,
                           raise_on_failure: bool = True) -> JobView:
        """``Client.wait_for_job``; ``on_progress`` may be a plain function or a coroutine
        function."""
        options = _follow.WaitOptions(timeout, poll_interval, stream, stream_read_timeout,
                                      raise_on_failure)
        return await self._drive(_follow.follow_job(job_id, options), on_progress)

    async def _drive(self, steps: _follow.Steps, on_progress: AsyncProgressCallback | None
                     ) -> JobView:
        """``Client._drive``, awaiting each step."""
        events: AsyncIterator[JobEvent] | None = None
        answer: Any = None
        error: Exception | None = None
        try:
            while True:
                try:
                    step = steps.send(answer) if error is None else steps.throw(error)
                except StopIteration as done:
                    job: JobView = done.value  # what ``Steps`` returns
                    return job
                answer, error = None, None
                try:
                    match step:
                        case _follow.Send(call):
                            answer = await self._send(call)
                        case _follow.OpenEvents(job_id, read_timeout):
                            events = self.stream_job_events(job_id, read_timeout=read_timeout)
                        case _follow.NextEvent():
                            answer = await anext(events, None) if events is not None else None
                        case _follow.CloseEvents():
                            if events is not None:
                                await events.aclose()  # type: ignore[attr-defined]
                                events = None
                        case _follow.Sleep(seconds):
                            await asyncio.sleep(seconds)
                        case _follow.Notify(update) if on_progress is not None:
                            result = on_progress(update)
                            if inspect.isawaitable(result):
                                await result
                except Exception as exc:  # the state machine decides what a failure means
                    error = exc
        finally:
            steps.close()
            if events is not None:
                await events.aclose()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ health

    async def healthz(self) -> Health:
        return await self._send(calls.healthz())

    async def readyz(self) -> Readiness:
        return await self._send(calls.readyz())

    async def metrics(self) -> str:
        return await self._send(calls.metrics())

    # ------------------------------------------------------------------ sweeps

    async def create_sweep(self, *, base: FinetuneRequest | dict[str, Any],
                     grid: dict[str, list[Any]] | None = None,
                     points: list[dict[str, Any]] | None = None,
                     auto_activate: bool = False,
                     idempotency_key: str | None = None) -> SweepView:
        """One fine-tune job per point: ``grid`` (every combination) or ``points`` (a list),
        each merged into ``base["hyperparameters"]``. All or nothing: a bad point (422) or a
        quota that cannot take every point (429) creates no job."""
        return await self._send(calls.create_sweep(dict(base), grid, points, auto_activate,
                                                idempotency_key))

    async def list_sweeps(self, *, limit: int | None = None, offset: int | None = None
                    ) -> SweepPage:
        return await self._send(calls.list_sweeps(limit, offset))

    async def get_sweep(self, sweep_id: str) -> SweepView:
        """The points side by side: values, status, epochs, final and best metric, version."""
        return await self._send(calls.get_sweep(sweep_id))
