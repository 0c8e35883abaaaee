"""Decompression bombs: tiny archives that inflate to hundreds of MiB of zeros.

Every bomb is written streaming (the zeros never sit in memory here) and is small, but
compressing 512 MiB takes seconds: ``Bomb.build`` keeps each one in a cache folder (pytest's
cache, so a second run sends the same bytes without rebuilding them).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MiB = 1024 * 1024
_ZEROS = bytes(MiB)


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _CompressingWriter:
    """A write-only file that compresses into ``path`` (what tarfile's "w|" mode needs)."""

    def __init__(self, path: Path, compressor: _Compressor) -> None:
        self._out = path.open("wb")
        self._c = compressor

    def write(self, data: bytes) -> int:
        self._out.write(self._c.compress(data))
        return len(data)

    def close(self) -> None:
        self._out.write(self._c.flush())
        self._out.close()


class _Zeros:
    """``n`` zero bytes as a readable file, a MiB at a time."""

    def __init__(self, n: int) -> None:
        self.left = n

    def read(self, size: int = -1) -> bytes:
        k = min(self.left, MiB if size < 0 else size, MiB)
        self.left -= k
        return _ZEROS[:k]


def _compressor(kind: str) -> _Compressor:
    if kind == "gz":
        return zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    if kind == "bz2":
        return bz2.BZ2Compressor(9)
    if kind == "xz":
        return lzma.LZMACompressor(preset=0)  # fast to make; still ~6,800:1 on zeros
    raise ValueError(kind)


def tar_of_zeros(path: Path, kind: str, members: int, each: int) -> Path:
    """A compressed tar of ``members`` entries of ``each`` zero bytes, all with honest
    headers (the layout's images/ folder, so intake would keep them)."""
    writer = _CompressingWriter(path, _compressor(kind))
    with tarfile.open(fileobj=writer, mode="w|") as tf:  # type: ignore[call-overload]
        for i in range(members):
            info = tarfile.TarInfo(f"images/zeros{i:05d}.png")
            info.size = each
            tf.addfile(info, _Zeros(each))
    writer.close()
    return path


def zip_of_zeros(path: Path, method: int, inflated: int, claimed: int) -> Path:
    """One zip entry of ``inflated`` zero bytes whose local and central headers claim
    ``claimed`` bytes (under every declared cap)."""
    with zipfile.ZipFile(path, "w", method) as zf, zf.open("images/zeros.png", "w") as out:
        for _ in range(inflated // MiB):
            out.write(_ZEROS)
    raw = bytearray(path.read_bytes())
    eocd = raw.rfind(b"PK\x05\x06")
    central = struct.unpack_from("<I", raw, eocd + 16)[0]
    assert raw[:4] == b"PK\x03\x04" and raw[central:central + 4] == b"PK\x01\x02"
    struct.pack_into("<I", raw, 22, claimed)  # local header: uncompressed size
    struct.pack_into("<I", raw, central + 24, claimed)  # central directory entry
    path.write_bytes(bytes(raw))
    return path


def zip_directory_of(path: Path, records: int) -> Path:
    """A zip of one empty entry whose directory holds ``records`` records for it (47 bytes
    each) under an end record declaring one entry: zipfile makes an object per record."""
    local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"a"
    record = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0,
                         1, 0, 0, 0, 0, 0, 0) + b"a"
    directory = record * records
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(local), 0)
    path.write_bytes(local + directory + end)
    return path


@dataclass(frozen=True)
class Bomb:
    name: str  # also its file name in the cache
    content_type: str
    make: Callable[[Path], Path]
    inflated: int  # bytes it holds (inflated data, or directory records)
    cached: bool = True  # False: quick to make but large, so made afresh each time

    def build(self, cache: Path) -> bytes:
        path = cache / self.name
        if not self.cached:
            tmp = self.make(cache / f"{self.name}.tmp")
            try:
                return tmp.read_bytes()
            finally:
                tmp.unlink()
        if not path.exists():
            tmp = cache / f"{self.name}.partial"
            self.make(tmp)
            tmp.rename(path)
        return path.read_bytes()


def _tar(kind: str, members: int, each: int) -> Callable[[Path], Path]:
    return lambda p: tar_of_zeros(p, kind, members, each)


def _zip(method: int, inflated: int) -> Callable[[Path], Path]:
    return lambda p: zip_of_zeros(p, method, inflated, claimed=100)


BOMBS = [
    # The shape of the report: one member of 512 MiB zeros (the .tar.bz2 is ~500 bytes).
    Bomb("zeros-512MiB.tar.bz2", "application/x-bzip2", _tar("bz2", 1, 512 * MiB), 512 * MiB),
    Bomb("zeros-512MiB.tar.xz", "application/x-xz", _tar("xz", 1, 512 * MiB), 512 * MiB),
    Bomb("zeros-512MiB.tar.gz", "application/gzip", _tar("gz", 1, 512 * MiB), 512 * MiB),
    # Honest headers, each member under the ratio's grace size: only the stream's running
    # ratio can tell.
    Bomb("zeros-1024x512KiB.tar.bz2", "application/x-bzip2", _tar("bz2", 1024, MiB // 2),
         512 * MiB),
    # A zip entry claiming 100 bytes (every declared check passes) holding 256 MiB.
    Bomb("zeros-256MiB-bzip2.zip", "application/zip", _zip(zipfile.ZIP_BZIP2, 256 * MiB),
         256 * MiB),
    Bomb("zeros-256MiB-lzma.zip", "application/zip", _zip(zipfile.ZIP_LZMA, 256 * MiB),
         256 * MiB),
    Bomb("zeros-256MiB-deflate.zip", "application/zip", _zip(zipfile.ZIP_DEFLATED, 256 * MiB),
         256 * MiB),
    # 2 million directory records in 94 MB (under the 1 GiB upload cap), no data at all.
    Bomb("directory-2M-records.zip", "application/zip",
         lambda p: zip_directory_of(p, 2_000_000), 2_000_000 * 47, cached=False),
]
