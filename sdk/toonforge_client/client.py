"""``Client``: the toonforge API over HTTP, synchronously. One method per API operation,
named after its operationId in openapi/openapi.json (``AsyncClient`` has the same ones).
Each method builds its request with ``_calls``; ``wait_for_job`` drives the shared job-follow
state machine (``_follow``).

Why one module of ~410 lines: one short method per API operation, the same list as
``AsyncClient``'s, so the two read side by side; each method is little more than a call to
its ``_calls`` builder, and nothing in it is worth a module of its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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

ProgressCallback = Callable[[JobUpdate], object]
T = TypeVar("T")


class Client(ClientBase):
    """The toonforge API over HTTP (thread-safe; use one per process).

    ``url`` defaults to ``$TOONFORGE_URL``, then http://127.0.0.1:8000; ``api_key`` (sent as
    ``Authorization: Bearer``) to ``$TOONFORGE_API_KEY``, then none. Every non-2xx answer
    raises an ``ApiError`` subclass with the server's ``code`` and ``message``; a server that
    cannot be reached raises ``ToonforgeConnectionError``.
    """

    def __init__(self, url: str | None = None, *, timeout: float | httpx.Timeout | None = None,
                 headers: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None, api_key: str | None = None) -> None:
        super().__init__(url, timeout, headers, api_key)
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout,
                                  headers=self.headers, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: calls.Call[T]) -> T:
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
                   version: int | None = None,
                   precision: Precision | None = None, max_side: int | None = None,
                   format: Literal["png", "jpeg", "webp"] | None = None,
                   style: str | None = None,
                   faces: Literal["auto", "off"] | None = None) -> ImageResult:
        """A cartoon of the same size (``POST /cartoonize``); ``style`` picks one of
        :meth:`list_styles` (instead of ``model``), ``faces="off"`` skips the head graph."""
        call = calls.cartoonize(image, model, version, max_side, format, style, faces)
        return self._send(calls.with_precision(call, precision))

    def infer(self, task: str, image: ImageInput, *, model: str | None = None,
              version: int | None = None,
              precision: Precision | None = None) -> ImageResult:
        """Image in, image out for any task with an image pipeline (``POST /infer/{task}``:
        e.g. a plugin family)."""
        call = calls.infer(task, image, model, version)
        return self._send(calls.with_precision(call, precision))

    def matte(self, image: ImageInput, *, model: str | None = None, version: int | None = None,
              precision: Precision | None = None,
              output: Literal["mask", "cutout", "composite"] | None = None,
              background: str | None = None,
              format: Literal["png", "webp", "jpeg"] | None = None) -> ImageResult:
        """An alpha mask, RGBA cut-out or composite on ``background`` (#rrggbb)."""
        call = calls.matte(image, model, version, output, background, format)
        return self._send(calls.with_precision(call, precision))

    def portrait(self, image: ImageInput, *, model: str | None = None,
                 version: int | None = None, precision: Precision | None = None,
                 output: Literal["drawing", "composite", "full"] | None = None,
                 crop: Literal["face", "none"] | None = None,
                 sigma: float | None = None, alpha: float | None = None) -> ImageResult:
        """A line drawing of the biggest face (``POST /portrait``); ``result.headers``
        says whether a face was found (``x-face-found``) and the crop (``x-crop-box``)."""
        call = calls.portrait(image, model, version, output, crop, sigma, alpha)
        return self._send(calls.with_precision(call, precision))

    def classify(self, image: ImageInput, *, model: str | None = None,
                 version: int | None = None,
                 precision: Precision | None = None, top_k: int | None = None) -> ClassifyResponse:
        """The ``top_k`` most probable labels with their scores."""
        call = calls.classify(image, model, version, top_k)
        return self._send(calls.with_precision(call, precision))

    @overload
    def generate(self, *, model: str | None = ..., version: int | None = ...,
                 precision: Precision | None = ...,
                 n: int | None = ..., seed: int | None = ...,
                 latents: list[list[float]] | None = ...,
                 rank_by_discriminator: bool | None = ..., oversample: int | None = ...,
                 format: Literal["grid"] = ...) -> ImageResult: ...

    @overload
    def generate(self, *, model: str | None = ..., version: int | None = ...,
                 precision: Precision | None = ...,
                 n: int | None = ..., seed: int | None = ...,
                 latents: list[list[float]] | None = ...,
                 rank_by_discriminator: bool | None = ..., oversample: int | None = ...,
                 format: Literal["json"]) -> ImagesResponse: ...

    def generate(self, *, model: str | None = None, version: int | None = None,
                 precision: Precision | None = None,
                 n: int | None = None, seed: int | None = None,
                 latents: list[list[float]] | None = None,
                 rank_by_discriminator: bool | None = None, oversample: int | None = None,
                 format: Literal["grid", "json"] = "grid") -> ImageResult | ImagesResponse:
        """Generated images: a PNG grid (``ImageResult``, ``seed`` set) or, with
        ``format="json"``, each image as base64 PNG with its discriminator score."""
        call = calls.generate(model, version, n, seed, latents, rank_by_discriminator,
                                     oversample, format)
        return self._send(calls.with_precision(call, precision))

    def autoencode(self, image: ImageInput, *, model: str | None = None,
                   version: int | None = None,
                   precision: Precision | None = None, size: int | None = None) -> ImageResult:
        """The autoencoder's reconstruction (``size`` upscales it)."""
        call = calls.autoencode(image, model, version, size)
        return self._send(calls.with_precision(call, precision))

    @overload
    def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                               model: str | None = ..., version: int | None = ...,
                               precision: Precision | None = ...,
                               steps: int | None = ..., format: Literal["png"] = ...
                               ) -> ImageResult: ...

    @overload
    def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                               model: str | None = ..., version: int | None = ...,
                               precision: Precision | None = ...,
                               steps: int | None = ..., format: Literal["json"]
                               ) -> ImagesResponse: ...

    def autoencode_interpolate(self, image_a: ImageInput, image_b: ImageInput, *,
                               model: str | None = None, version: int | None = None,
                               precision: Precision | None = None,
                               steps: int | None = None, format: Literal["png", "json"] = "png"
                               ) -> ImageResult | ImagesResponse:
        """The decoded straight path between two images' latents (a PNG strip, or JSON)."""
        call = calls.autoencode_interpolate(image_a, image_b, model, version, steps,
                                                   format)
        return self._send(calls.with_precision(call, precision))

    def autoencode_sample(self, *, model: str | None = None, version: int | None = None,
                          precision: Precision | None = None,
                          n: int | None = None, seed: int | None = None) -> ImageResult:
        """A grid decoded from latents sampled from the fitted distribution."""
        call = calls.autoencode_sample(model, version, n, seed)
        return self._send(calls.with_precision(call, precision))

    # ------------------------------------------------------------------ models

    def list_styles(self) -> StyleList:
        """The styles ``cartoonize(style=...)`` takes, with previews (``GET /styles``)."""
        return self._send(calls.list_styles())

    def list_models(self) -> list[ModelInfo]:
        return self._send(calls.list_models())

    def get_model(self, name: str) -> ModelDetail:
        return self._send(calls.get_model(name))

    def get_model_version(self, name: str, version: int) -> Manifest:
        """The version's manifest."""
        return self._send(calls.get_model_version(name, version))

    def activate_model_version(self, name: str, version: int) -> ActivateResponse:
        """Promote or roll back; the answering process serves it before replying."""
        return self._send(calls.activate_model_version(name, version))

    def rollback_model(self, name: str) -> ActivateResponse:
        """Re-activate the version that was active before the current one (409 if none)."""
        return self._send(calls.rollback_model(name))

    # ------------------------------------------------------------------ datasets

    def create_dataset(self, archive: ArchiveInput, *, task: Task | str, name: str | None = None,
                       id: str | None = None, on_progress: UploadProgress | None = None
                       ) -> IngestResult:
        """Upload a zip / tar / tar.gz (bytes, a path, an open file) or a folder (zipped on
        the fly); ``on_progress(sent, total)`` after each chunk. Answers the intake report."""
        upload = Upload.open(archive, on_progress)
        return self._send(calls.create_dataset(upload, str(task), name, id))

    def list_datasets(self, *, task: Task | str | None = None) -> list[DatasetMeta]:
        return self._send(calls.list_datasets(task))

    def get_dataset(self, dataset_id: str) -> IngestResult:
        return self._send(calls.get_dataset(dataset_id))

    def delete_dataset(self, dataset_id: str) -> None:
        return self._send(calls.delete_dataset(dataset_id))

    # ------------------------------------------------------------------ API keys (admin)

    def create_key(self, *, name: str, scopes: list[str], rps: float | None = None,
                   burst: int | None = None, max_running_jobs: int | None = None,
                   max_queued_jobs: int | None = None,
                   max_dataset_bytes: int | None = None,
                   max_dataset_files: int | None = None) -> KeyCreated:
        """A new API key (``POST /keys``, admin scope); ``["key"]`` is its plaintext, shown
        only in this answer. Limits left out take the server's settings (0: no limit)."""
        limits = {"rps": rps, "burst": burst, "max_running_jobs": max_running_jobs,
                  "max_queued_jobs": max_queued_jobs, "max_dataset_bytes": max_dataset_bytes,
                  "max_dataset_files": max_dataset_files}
        return self._send(calls.create_key(name, scopes, limits))

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyView]:
        return self._send(calls.list_keys(include_revoked))

    def revoke_key(self, key_id: str) -> KeyView:
        """Revoke a key; API processes refuse it within their key cache time (5 s)."""
        return self._send(calls.revoke_key(key_id))

    # ------------------------------------------------------------------ jobs

    def create_finetune_job(self, *, task: Task | str, dataset_id: str, base: str,
                            target_model: str | None = None,
                            hyperparameters: dict[str, Any] | None = None,
                            auto_activate: bool = False, webhook_url: str | None = None,
                            idempotency_key: str | None = None) -> JobView:
        """Queue a fine-tune job (an ``idempotency_key`` makes retries safe); the server
        publishes to ``target_model``, by default the base's model name."""
        return self._send(calls.create_finetune_job(str(task), dataset_id, base, target_model,
                                                hyperparameters, auto_activate, webhook_url,
                                                idempotency_key))

    def list_jobs(self, *, status: str | None = None, task: Task | str | None = None,
                  limit: int | None = None, offset: int | None = None) -> JobPage:
        return self._send(calls.list_jobs(status, task, limit, offset))

    def get_job(self, job_id: str) -> JobView:
        return self._send(calls.get_job(job_id))

    def cancel_job(self, job_id: str) -> JobView:
        """A queued job is cancelled at once, a running one at its next step."""
        return self._send(calls.cancel_job(job_id))

    def resume_job(self, job_id: str) -> JobView:
        """Continue a failed or cancelled job from its last checkpoint: a NEW job (the same
        request, ``resumed_from`` = ``job_id``) is queued and returned. A job that is not
        failed/cancelled, or left no checkpoint, is a ``ConflictError`` (409)."""
        return self._send(calls.resume_job(job_id))

    def stream_job_events(self, job_id: str, *, after: int = 0,
                          read_timeout: float | None = STREAM_READ_TIMEOUT_S
                          ) -> Iterator[JobEvent]:
        """The job's events after event id ``after``, as they happen, until the terminal
        status event (``GET /jobs/{id}/events``). Close the iterator to stop early."""
        call = calls.stream_job_events(job_id, after)
        reader = JobEventReader()
        try:
            with self._http.stream("GET", call.path, **call.request_kwargs(),
                                   timeout=self._stream_timeout(self._http.timeout,
                                                                read_timeout)) as response:
                if response.status_code != 200:
                    response.read()
                    raise error_from_response(response)
                for line in response.iter_lines():
                    event = reader.feed(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc

    def get_job_metrics(self, job_id: str) -> JobMetrics:
        return self._send(calls.get_job_metrics(job_id))

    def list_job_samples(self, job_id: str) -> list[SampleInfo]:
        return self._send(calls.list_job_samples(job_id))

    def get_job_sample(self, job_id: str, name: str) -> ImageResult:
        return self._send(calls.get_job_sample(job_id, name))

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
        options = _follow.WaitOptions(timeout, poll_interval, stream, stream_read_timeout,
                                      raise_on_failure)
        return self._drive(_follow.follow_job(job_id, options), on_progress)

    def _drive(self, steps: _follow.Steps, on_progress: ProgressCallback | None) -> JobView:
        """Perform each step of the job-follow state machine and hand it the answer."""
        events: Iterator[JobEvent] | None = None
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
                            answer = self._send(call)
                        case _follow.OpenEvents(job_id, read_timeout):
                            events = self.stream_job_events(job_id, read_timeout=read_timeout)
                        case _follow.NextEvent():
                            answer = next(events, None) if events is not None else None
                        case _follow.CloseEvents():
                            if events is not None:
                                events.close()  # type: ignore[attr-defined]
                                events = None
                        case _follow.Sleep(seconds):
                            time.sleep(seconds)
                        case _follow.Notify(update) if on_progress is not None:
                            on_progress(update)
                except Exception as exc:  # the state machine decides what a failure means
                    error = exc
        finally:
            steps.close()
            if events is not None:
                events.close()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ health

    def healthz(self) -> Health:
        return self._send(calls.healthz())

    def readyz(self) -> Readiness:
        """Readiness, whether ready (200) or not (503): look at ``["ready"]``."""
        return self._send(calls.readyz())

    def metrics(self) -> str:
        """The Prometheus text exposition of the answering process."""
        return self._send(calls.metrics())

    # ------------------------------------------------------------------ sweeps

    def create_sweep(self, *, base: FinetuneRequest | dict[str, Any],
                     grid: dict[str, list[Any]] | None = None,
                     points: list[dict[str, Any]] | None = None,
                     auto_activate: bool = False,
                     idempotency_key: str | None = None) -> SweepView:
        """One fine-tune job per point: ``grid`` (every combination) or ``points`` (a list),
        each merged into ``base["hyperparameters"]``. All or nothing: a bad point (422) or a
        quota that cannot take every point (429) creates no job."""
        return self._send(calls.create_sweep(dict(base), grid, points, auto_activate,
                                                idempotency_key))

    def list_sweeps(self, *, limit: int | None = None, offset: int | None = None
                    ) -> SweepPage:
        return self._send(calls.list_sweeps(limit, offset))

    def get_sweep(self, sweep_id: str) -> SweepView:
        """The points side by side: values, status, epochs, final and best metric, version."""
        return self._send(calls.get_sweep(sweep_id))
