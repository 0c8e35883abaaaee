"""What the sync and async clients share and that does no I/O on the network: building each
request, reading each answer, decoding server-sent events, reading local inputs."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO
from urllib.parse import quote

import httpx

from toonforge_client.errors import error_from_response
from toonforge_client.types import ImageResult, JobEvent

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "TOONFORGE_URL"
DEFAULT_TIMEOUT_S = 120.0
UPLOAD_CHUNK = 256 * 1024

# What an image argument may be: the bytes, a path, or an open binary file.
ImageInput = bytes | str | os.PathLike[str] | IO[bytes]
# (bytes sent so far, total bytes) after each chunk of an upload.
UploadProgress = Callable[[int, int], None]


def resolve_url(url: str | None) -> str:
    """``url``, else ``$TOONFORGE_URL``, else http://127.0.0.1:8000; without a trailing /."""
    chosen = url or os.environ.get(URL_ENV) or DEFAULT_URL
    if "://" not in chosen:
        chosen = f"http://{chosen}"
    return chosen.rstrip("/")


def segment(value: str | int) -> str:
    """One path segment, escaped (a name with / or ? cannot reach another route)."""
    return quote(str(value), safe="")


def drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# ----------------------------------------------------------------------------- inputs


_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF8", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
)


def image_media_type(data: bytes) -> str:
    """The image's type from its first bytes; octet-stream (which the server accepts and
    sniffs itself) when we cannot tell."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, offset, media in _MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return media
    return "application/octet-stream"


def read_image(image: ImageInput) -> tuple[bytes, str]:
    """(bytes, file name) of an image argument."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), "image"
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return path.read_bytes(), path.name
    data = image.read()
    if not isinstance(data, bytes):
        raise TypeError("open the image file in binary mode ('rb')")
    return data, Path(str(getattr(image, "name", "image"))).name


def archive_media_type(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "application/zip"
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "application/x-tar"
    return "application/octet-stream"


def zip_folder(folder: Path, dest: IO[bytes]) -> None:
    """Every file under ``folder`` into a zip written to ``dest`` (paths relative to it)."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                zf.write(path, path.relative_to(folder).as_posix())


@dataclass
class Upload:
    """A body streamed from a file in chunks, with its length known up front (so the request
    carries Content-Length) and an optional progress callback."""

    file: BinaryIO
    size: int
    filename: str
    media_type: str
    on_progress: UploadProgress | None = None
    owned: bool = False  # close the file when the upload is done
    _sent: int = field(default=0, init=False)

    @classmethod
    def open(cls, source: bytes | str | os.PathLike[str] | BinaryIO,
             on_progress: UploadProgress | None = None) -> Upload:
        """bytes, an archive file (zip / tar / tar.gz), a folder (zipped on the fly to a
        temporary file), or an open binary file positioned at its start."""
        owned = False
        if isinstance(source, bytes | bytearray):
            file: BinaryIO = io.BytesIO(bytes(source))
            name = "upload"
            owned = True
        elif isinstance(source, str | os.PathLike):
            path = Path(source)
            if path.is_dir():
                file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
                zip_folder(path, file)
                name = f"{path.resolve().name or 'dataset'}.zip"
            else:
                file = path.open("rb")
                name = path.name
            owned = True
        else:
            file = source
            name = Path(str(getattr(source, "name", "upload"))).name
        start = file.tell() if owned is False else 0
        file.seek(0, io.SEEK_END)
        size = file.tell() - start
        file.seek(start)
        head = file.read(512)
        file.seek(start)
        return cls(file, size, name, archive_media_type(head), on_progress, owned)

    @property
    def headers(self) -> dict[str, str]:
        return {"content-type": self.media_type, "content-length": str(self.size),
                "x-filename": self.filename}

    def _chunk(self) -> bytes:
        chunk = self.file.read(UPLOAD_CHUNK)
        if chunk:
            self._sent += len(chunk)
            if self.on_progress is not None:
                self.on_progress(self._sent, self.size)
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._chunk():
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := self._chunk():
            yield chunk

    def close(self) -> None:
        if self.owned:
            self.file.close()


# ----------------------------------------------------------------------------- requests


def _json(response: httpx.Response) -> Any:
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
    )


@dataclass
class Call:
    """One HTTP request, and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any] = _json
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

    def result(self, response: httpx.Response) -> Any:
        if response.status_code not in self.ok:
            raise error_from_response(response)
        return self.parse(response)


def _model(model: str | None, version: int | None) -> dict[str, Any]:
    return {"model": model, "version": version}


def image_call(path: str, image: ImageInput, params: dict[str, Any]) -> Call:
    data, _ = read_image(image)
    return Call("POST", path, _image, params=params, content=data,
                headers={"content-type": image_media_type(data)})


def cartoonize(image: ImageInput, model: str | None, version: int | None,
               max_side: int | None, format: str | None) -> Call:
    return image_call("/cartoonize", image, {**_model(model, version), "max_side": max_side,
                                             "format": format})


def matte(image: ImageInput, model: str | None, version: int | None, output: str | None,
          background: str | None, format: str | None) -> Call:
    return image_call("/matte", image, {**_model(model, version), "output": output,
                                        "background": background, "format": format})


def classify(image: ImageInput, model: str | None, version: int | None, top_k: int | None
             ) -> Call:
    call = image_call("/classify", image, {**_model(model, version), "top_k": top_k})
    call.parse = _json
    return call


def generate(model: str | None, version: int | None, n: int | None, seed: int | None,
             latents: list[list[float]] | None, rank_by_discriminator: bool | None,
             oversample: int | None, format: str) -> Call:
    params = {**_model(model, version), "n": n, "seed": seed,
              "rank_by_discriminator": rank_by_discriminator, "oversample": oversample,
              "format": format}
    return Call("POST", "/generate", _json if format == "json" else _image, params=params,
                json={"latents": latents} if latents is not None else None)


def autoencode(image: ImageInput, model: str | None, version: int | None, size: int | None
               ) -> Call:
    return image_call("/autoencode", image, {**_model(model, version), "size": size})


def autoencode_interpolate(image_a: ImageInput, image_b: ImageInput, model: str | None,
                           version: int | None, steps: int | None, format: str) -> Call:
    files = {}
    for field_name, image in (("image_a", image_a), ("image_b", image_b)):
        data, name = read_image(image)
        files[field_name] = (name, data, image_media_type(data))
    return Call("POST", "/autoencode/interpolate", _json if format == "json" else _image,
                params={**_model(model, version), "steps": steps, "format": format},
                files=files)


def autoencode_sample(model: str | None, version: int | None, n: int | None, seed: int | None
                      ) -> Call:
    return Call("POST", "/autoencode/sample", _image,
                params={**_model(model, version), "n": n, "seed": seed})


def list_models() -> Call:
    return Call("GET", "/models")


def get_model(name: str) -> Call:
    return Call("GET", f"/models/{segment(name)}")


def get_model_version(name: str, version: int) -> Call:
    return Call("GET", f"/models/{segment(name)}/versions/{segment(version)}")


def activate_model_version(name: str, version: int) -> Call:
    return Call("POST", f"/models/{segment(name)}/activate", json={"version": version})


def rollback_model(name: str) -> Call:
    return Call("POST", f"/models/{segment(name)}/rollback")


def create_dataset(upload: Upload, task: str, name: str | None, dataset_id: str | None
                   ) -> Call:
    return Call("POST", "/datasets", params={"task": task, "name": name, "id": dataset_id},
                headers=upload.headers, upload=upload, ok=(201,))


def list_datasets(task: str | None) -> Call:
    return Call("GET", "/datasets", params={"task": task})


def get_dataset(dataset_id: str) -> Call:
    return Call("GET", f"/datasets/{segment(dataset_id)}")


def delete_dataset(dataset_id: str) -> Call:
    return Call("DELETE", f"/datasets/{segment(dataset_id)}", _nothing, ok=(204,))


def create_finetune_job(task: str, dataset_id: str, base: str, target_model: str,
                        hyperparameters: dict[str, Any] | None, auto_activate: bool,
                        webhook_url: str | None, idempotency_key: str | None) -> Call:
    body = drop_none({"task": task, "dataset_id": dataset_id, "base": base,
                      "target_model": target_model, "hyperparameters": hyperparameters or {},
                      "auto_activate": auto_activate, "webhook_url": webhook_url})
    headers = {"idempotency-key": idempotency_key} if idempotency_key else None
    return Call("POST", "/jobs/finetune", json=body, headers=headers, ok=(200, 201))


def list_jobs(status: str | None, task: str | None, limit: int | None, offset: int | None
              ) -> Call:
    return Call("GET", "/jobs", params={"status": status, "task": task, "limit": limit,
                                        "offset": offset})


def get_job(job_id: str) -> Call:
    return Call("GET", f"/jobs/{segment(job_id)}")


def cancel_job(job_id: str) -> Call:
    return Call("POST", f"/jobs/{segment(job_id)}/cancel")


def stream_job_events(job_id: str, after: int) -> Call:
    headers = {"accept": "text/event-stream"}
    if after:
        headers["last-event-id"] = str(after)
    return Call("GET", f"/jobs/{segment(job_id)}/events", params={"after": after or None},
                headers=headers)


def get_job_metrics(job_id: str) -> Call:
    return Call("GET", f"/jobs/{segment(job_id)}/metrics")


def list_job_samples(job_id: str) -> Call:
    return Call("GET", f"/jobs/{segment(job_id)}/samples")


def get_job_sample(job_id: str, name: str) -> Call:
    return Call("GET", f"/jobs/{segment(job_id)}/samples/{segment(name)}", _image)


def healthz() -> Call:
    return Call("GET", "/healthz")


def readyz() -> Call:
    # 503 carries the same body: not ready is an answer, not an error.
    return Call("GET", "/readyz", ok=(200, 503))


def metrics() -> Call:
    return Call("GET", "/metrics", _text)


# ----------------------------------------------------------------------------- SSE


class SSEDecoder:
    """The text/event-stream format, line by line (``id:``, ``event:``, ``data:``, comments)."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, line: str) -> tuple[str, str, str | None] | None:
        """A line without its end; (event, data, id) when a blank line ends a message."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = (self._event or "message", "\n".join(self._data), self._id)
            self._data, self._event = [], ""
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def job_event(event: str, data: str, event_id: str | None) -> JobEvent:
    """A message of the job stream as a JobEvent (the data is the event's JSON)."""
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError(f"unexpected event data: {data[:100]!r}")
    body.setdefault("kind", event)
    if event_id is not None and "id" not in body:
        body["id"] = int(event_id)
    return body  # type: ignore[return-value]
