"""Local inputs of a request: images (bytes, a path, an open file) and dataset archives
streamed in chunks (a folder is zipped on the fly)."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

UPLOAD_CHUNK = 256 * 1024

# What an image argument may be: the bytes, a path, or an open binary file.
ImageInput = bytes | str | os.PathLike[str] | IO[bytes]
# What a dataset argument may be: the bytes, an archive or folder path, an open binary file.
ArchiveInput = bytes | str | os.PathLike[str] | IO[bytes]
# (bytes sent so far, total bytes) after each chunk of an upload.
UploadProgress = Callable[[int, int], None]

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

    file: IO[bytes]
    size: int
    filename: str
    media_type: str
    on_progress: UploadProgress | None = None
    owned: bool = False  # close the file when the upload is done
    _sent: int = field(default=0, init=False)

    @classmethod
    def open(cls, source: ArchiveInput,
             on_progress: UploadProgress | None = None) -> Upload:
        """bytes, an archive file (zip / tar / tar.gz), a folder (zipped on the fly to a
        temporary file), or an open binary file positioned at its start."""
        owned = False
        if isinstance(source, bytes | bytearray):
            file: IO[bytes] = io.BytesIO(bytes(source))
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
