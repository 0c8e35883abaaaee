"""The request builders: one builder per API operation (named after its operationId) that
says which HTTP request to make and how to read its answer, with no I/O. Both clients send
these ``Call``s; only how they send differs."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from toonforge_client._inputs import ImageInput, Upload, image_media_type, read_image
from toonforge_client.errors import error_from_response
from toonforge_client.types import (
    ActivateRequest,
    ActivateResponse,
    ClassifyResponse,
    DatasetMeta,
    GenerateBody,
    Health,
    ImageResult,
    ImagesResponse,
    IngestResult,
    JobMetrics,
    JobPage,
    JobView,
    KeyCreated,
    KeyView,
    Manifest,
    ModelDetail,
    ModelInfo,
    Readiness,
    SampleInfo,
    StyleList,
    SweepPage,
    SweepView,
)

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "TOONFORGE_URL"
API_KEY_ENV = "TOONFORGE_API_KEY"
DEFAULT_TIMEOUT_S = 120.0

T = TypeVar("T")


def resolve_url(url: str | None) -> str:
    """``url``, else ``$TOONFORGE_URL``, else http://127.0.0.1:8000; without a trailing /."""
    chosen = url or os.environ.get(URL_ENV) or DEFAULT_URL
    if "://" not in chosen:
        chosen = f"http://{chosen}"
    return chosen.rstrip("/")


def resolve_api_key(api_key: str | None) -> str | None:
    """``api_key``, else ``$TOONFORGE_API_KEY``, else None (no Authorization header)."""
    chosen = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if not chosen:
        return None
    return chosen.strip() or None


def segment(value: str | int) -> str:
    """One path segment, escaped (a name with / or ? cannot reach another route)."""
    return quote(str(value), safe="")


def drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _json(response: httpx.Response) -> Any:
    # The one place a JSON answer is decoded: its shape is the operation's response type
    # (types.py), which the builder states as the ``Call``'s type parameter.
    return response.json()


def _nothing(response: httpx.Response) -> None:
    return None


def _text(response: httpx.Response) -> str:
    return response.text


def _image(response: httpx.Response) -> ImageResult:
    seed = response.headers.get("x-seed")
    return ImageResult(
        content=response.content,
        media_type=response.headers.get("content-type", "application/octet-stream"),
        model_version=response.headers.get("x-model-version"),
        seed=int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
        latent_distribution=response.headers.get("x-latent-distribution"),
        precision=response.headers.get("x-model-precision"),
        faces_cartoonized=_int_header(response, "x-faces-cartoonized"),
        faces_found=_int_header(response, "x-faces-found"),
        headers={k.lower(): v for k, v in response.headers.items()
                 if k.lower().startswith("x-")},
    )


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value is not None and value.isdigit() else None


@dataclass
class Call(Generic[T]):
    """One HTTP request, and how to read its answer (a ``T``)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T] = _json
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    content: bytes | None = None
    json: Any = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    upload: Upload | None = None
    ok: tuple[int, ...] = (200,)

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": drop_none(self.params or {}) or None,
                                  "headers": self.headers}
        if self.content is not None:
            kwargs["content"] = self.content
        if self.json is not None:
            kwargs["json"] = self.json
        if self.files is not None:
            kwargs["files"] = self.files
        return kwargs

    def result(self, response: httpx.Response) -> T:
        if response.status_code not in self.ok:
            raise error_from_response(response)
        return self.parse(response)


def with_precision(call: Call[T], precision: str | None) -> Call[T]:
    """``?precision=fp32|int8`` on an inference call (None: the server's default)."""
    if precision is not None:
        call.params = {**(call.params or {}), "precision": precision}
    return call


def _model(model: str | None, version: int | None) -> dict[str, Any]:
    return {"model": model, "version": version}


def _image_request(path: str, image: ImageInput, params: dict[str, Any],
                   parse: Callable[[httpx.Response], T]) -> Call[T]:
    data, _ = read_image(image)
    return Call("POST", path, parse, params=params, content=data,
                headers={"content-type": image_media_type(data)})


def image_call(path: str, image: ImageInput, params: dict[str, Any]) -> Call[ImageResult]:
    return _image_request(path, image, params, _image)


def cartoonize(image: ImageInput, model: str | None, version: int | None,
               max_side: int | None, format: str | None, style: str | None = None,
               faces: str | None = None) -> Call[ImageResult]:
    return image_call("/cartoonize", image, {**_model(model, version), "max_side": max_side,
                                             "format": format, "style": style,
                                             "faces": faces})


def list_styles() -> Call[StyleList]:
    return Call("GET", "/styles")


def infer(task: str, image: ImageInput, model: str | None, version: int | None
          ) -> Call[ImageResult]:
    return image_call(f"/infer/{quote(task, safe='')}", image, _model(model, version))


def matte(image: ImageInput, model: str | None, version: int | None, output: str | None,
          background: str | None, format: str | None) -> Call[ImageResult]:
    return image_call("/matte", image, {**_model(model, version), "output": output,
                                        "background": background, "format": format})


def portrait(image: ImageInput, model: str | None, version: int | None, output: str | None,
             crop: str | None, sigma: float | None, alpha: float | None) -> Call[ImageResult]:
    return image_call("/portrait", image, {**_model(model, version), "output": output,
                                           "crop": crop, "sigma": sigma, "alpha": alpha})


def classify(image: ImageInput, model: str | None, version: int | None, top_k: int | None
             ) -> Call[ClassifyResponse]:
    return _image_request("/classify", image, {**_model(model, version), "top_k": top_k},
                          _json)


def generate(model: str | None, version: int | None, n: int | None, seed: int | None,
             latents: list[list[float]] | None, rank_by_discriminator: bool | None,
             oversample: int | None, format: str) -> Call[ImageResult | ImagesResponse]:
    params = {**_model(model, version), "n": n, "seed": seed,
              "rank_by_discriminator": rank_by_discriminator, "oversample": oversample,
              "format": format}
    return Call("POST", "/generate", _json if format == "json" else _image, params=params,
                json=GenerateBody(latents=latents) if latents is not None else None)


def autoencode(image: ImageInput, model: str | None, version: int | None, size: int | None
               ) -> Call[ImageResult]:
    return image_call("/autoencode", image, {**_model(model, version), "size": size})


def autoencode_interpolate(image_a: ImageInput, image_b: ImageInput, model: str | None,
                           version: int | None, steps: int | None, format: str
                           ) -> Call[ImageResult | ImagesResponse]:
    files = {}
    for field_name, image in (("image_a", image_a), ("image_b", image_b)):
        data, name = read_image(image)
        files[field_name] = (name, data, image_media_type(data))
    return Call("POST", "/autoencode/interpolate", _json if format == "json" else _image,
                params={**_model(model, version), "steps": steps, "format": format},
                files=files)


def autoencode_sample(model: str | None, version: int | None, n: int | None, seed: int | None
                      ) -> Call[ImageResult]:
    return Call("POST", "/autoencode/sample", _image,
                params={**_model(model, version), "n": n, "seed": seed})


def list_models() -> Call[list[ModelInfo]]:
    return Call("GET", "/models")


def get_model(name: str) -> Call[ModelDetail]:
    return Call("GET", f"/models/{segment(name)}")


def get_model_version(name: str, version: int) -> Call[Manifest]:
    return Call("GET", f"/models/{segment(name)}/versions/{segment(version)}")


def activate_model_version(name: str, version: int) -> Call[ActivateResponse]:
    return Call("POST", f"/models/{segment(name)}/activate", json=ActivateRequest(version=version))


def rollback_model(name: str) -> Call[ActivateResponse]:
    return Call("POST", f"/models/{segment(name)}/rollback")


def create_dataset(upload: Upload, task: str, name: str | None, dataset_id: str | None
                   ) -> Call[IngestResult]:
    return Call("POST", "/datasets", params={"task": task, "name": name, "id": dataset_id},
                headers=upload.headers, upload=upload, ok=(201,))


def list_datasets(task: str | None) -> Call[list[DatasetMeta]]:
    return Call("GET", "/datasets", params={"task": task})


def get_dataset(dataset_id: str) -> Call[IngestResult]:
    return Call("GET", f"/datasets/{segment(dataset_id)}")


def delete_dataset(dataset_id: str) -> Call[None]:
    return Call("DELETE", f"/datasets/{segment(dataset_id)}", _nothing, ok=(204,))


def create_key(name: str, scopes: list[str], limits: dict[str, Any]) -> Call[KeyCreated]:
    return Call("POST", "/keys", json={"name": name, "scopes": list(scopes),
                                       "limits": drop_none(limits)}, ok=(201,))


def list_keys(include_revoked: bool) -> Call[list[KeyView]]:
    return Call("GET", "/keys", params={"include_revoked": str(include_revoked).lower()})


def revoke_key(key_id: str) -> Call[KeyView]:
    return Call("DELETE", f"/keys/{segment(key_id)}")


def create_finetune_job(task: str, dataset_id: str, base: str, target_model: str | None,
                        hyperparameters: dict[str, Any] | None, auto_activate: bool,
                        webhook_url: str | None, idempotency_key: str | None) -> Call[JobView]:
    body = drop_none({"task": task, "dataset_id": dataset_id, "base": base,
                      "target_model": target_model, "hyperparameters": hyperparameters or {},
                      "auto_activate": auto_activate, "webhook_url": webhook_url})
    headers = {"idempotency-key": idempotency_key} if idempotency_key else None
    return Call("POST", "/jobs/finetune", json=body, headers=headers, ok=(200, 201))


def list_jobs(status: str | None, task: str | None, limit: int | None, offset: int | None
              ) -> Call[JobPage]:
    return Call("GET", "/jobs", params={"status": status, "task": task, "limit": limit,
                                        "offset": offset})


def get_job(job_id: str) -> Call[JobView]:
    return Call("GET", f"/jobs/{segment(job_id)}")


def cancel_job(job_id: str) -> Call[JobView]:
    return Call("POST", f"/jobs/{segment(job_id)}/cancel")


def resume_job(job_id: str) -> Call[JobView]:
    return Call("POST", f"/jobs/{segment(job_id)}/resume", ok=(201,))


def stream_job_events(job_id: str, after: int) -> Call[Any]:
    headers = {"accept": "text/event-stream"}
    if after:
        headers["last-event-id"] = str(after)
    return Call("GET", f"/jobs/{segment(job_id)}/events", params={"after": after or None},
                headers=headers)


def get_job_metrics(job_id: str) -> Call[JobMetrics]:
    return Call("GET", f"/jobs/{segment(job_id)}/metrics")


def list_job_samples(job_id: str) -> Call[list[SampleInfo]]:
    return Call("GET", f"/jobs/{segment(job_id)}/samples")


def get_job_sample(job_id: str, name: str) -> Call[ImageResult]:
    return Call("GET", f"/jobs/{segment(job_id)}/samples/{segment(name)}", _image)


def healthz() -> Call[Health]:
    return Call("GET", "/healthz")


def readyz() -> Call[Readiness]:
    # 503 carries the same body: not ready is an answer, not an error.
    return Call("GET", "/readyz", ok=(200, 503))


def metrics() -> Call[str]:
    return Call("GET", "/metrics", _text)


# ---- sweeps
def create_sweep(base: dict[str, Any], grid: dict[str, list[Any]] | None,
                 points: list[dict[str, Any]] | None, auto_activate: bool,
                 idempotency_key: str | None) -> Call[SweepView]:
    body = drop_none({"base": base, "grid": grid, "points": points,
                      "auto_activate": auto_activate})
    headers = {"idempotency-key": idempotency_key} if idempotency_key else None
    return Call("POST", "/sweeps", json=body, headers=headers, ok=(200, 201))


def list_sweeps(limit: int | None, offset: int | None) -> Call[SweepPage]:
    return Call("GET", "/sweeps", params={"limit": limit, "offset": offset})


def get_sweep(sweep_id: str) -> Call[SweepView]:
    return Call("GET", f"/sweeps/{segment(sweep_id)}")
