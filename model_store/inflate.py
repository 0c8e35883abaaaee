"""Decompression that never holds more than a small, fixed amount of output at once.

The standard readers decompress whatever compressed bytes they have read in one call: 474
bytes of bzip2 become 512 MiB in memory before anyone can count them. ``InflatingReader``
asks its decoder for at most ``OUTPUT_STEP`` bytes per call (the decoders keep the rest of
their input and resume), and runs the caller's check on the running totals after every
step, so a bomb is refused within one step of passing a cap and peak memory is the
decoder's own state plus one step, whatever the archive.

Decoders: gzip, bzip2 and xz streams (concatenated streams too, as pigz, pbzip2 and pixz
write them), and the zip member methods stored, deflate, bzip2 and lzma. xz may declare a
dictionary of up to 4 GiB, which its decoder allocates: ``XZ_MEMLIMIT`` refuses those.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import BinaryIO, Protocol

from core.errors import public_reason
from model_store.errors import ArchiveTooLarge, NotAnArchive

# Most bytes one decompress call may produce (and one read() returns).
OUTPUT_STEP = 64 * 1024
# Compressed bytes read from the file at a time.
INPUT_STEP = 64 * 1024
# Most memory an xz (or zip lzma) decoder may take; `xz -9` needs 65 MiB.
XZ_MEMLIMIT = 80 * 1024 * 1024

STREAM_MAGIC = {"gz": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}
# zip compression methods this code reads (the others are refused before extraction).
ZIP_METHODS = {0: "stored", 8: "deflate", 12: "bzip2", 14: "lzma"}

Check = Callable[[int, int], None]


class Decoder(Protocol):
    """What ``bz2.BZ2Decompressor`` and ``lzma.LZMADecompressor`` offer."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _ZlibDecoder:
    """zlib's decompressobj behind the bz2/lzma interface (it keeps unconsumed input in
    ``unconsumed_tail`` instead of internally)."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self._tail = b""
        self._needs_input = True

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def needs_input(self) -> bool:
        return self._needs_input

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        out = self._d.decompress(self._tail + data, max(max_length, 0))
        self._tail = self._d.unconsumed_tail
        # A full step may leave output pending inside zlib with no input left over.
        self._needs_input = not self._tail and (max_length < 0 or len(out) < max_length)
        return out


class _StoredDecoder:
    """Stored zip entries: the bytes as they are, a step at a time."""

    def __init__(self) -> None:
        self._tail = b""

    eof = False
    unused_data = b""

    @property
    def needs_input(self) -> bool:
        return not self._tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        buf = self._tail + data
        n = len(buf) if max_length < 0 else max_length
        out, self._tail = buf[:n], buf[n:]
        return out


class _ZipLzmaDecoder:
    """A zip lzma entry: a 4-byte header (version, properties size), the LZMA1 properties,
    then raw LZMA1 data. The decoder is made once the properties have arrived."""

    def __init__(self) -> None:
        self._head = b""
        self._d: lzma.LZMADecompressor | None = None

    @property
    def eof(self) -> bool:
        return self._d is not None and self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data if self._d is not None else b""

    @property
    def needs_input(self) -> bool:
        return self._d is None or self._d.needs_input

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        if self._d is None:
            self._head += data
            if len(self._head) < 4:
                return b""
            size = int.from_bytes(self._head[2:4], "little")
            if len(self._head) < 4 + size:
                return b""
            props, data = self._head[4:4 + size], self._head[4 + size:]
            self._d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[_lzma1_filter(props)])
        return self._d.decompress(data, max_length)


def _lzma1_filter(props: bytes) -> dict[str, int]:
    if len(props) != 5 or props[0] >= 9 * 5 * 5:
        raise NotAnArchive("corrupt zip lzma entry: bad LZMA properties")
    dict_size = int.from_bytes(props[1:5], "little")
    if dict_size > XZ_MEMLIMIT:  # FORMAT_RAW takes no memlimit: the dictionary is the cost
        raise ArchiveTooLarge(f"a zip lzma entry needs a {dict_size}-byte dictionary; at most"
                              f" {XZ_MEMLIMIT} bytes of decoder memory are allowed")
    lc, rest = props[0] % 9, props[0] // 9
    return {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": rest % 5, "pb": rest // 5,
            "dict_size": dict_size}


def stream_decoder(kind: str) -> Decoder:
    """A decoder for one ``gz``, ``bz2`` or ``xz`` stream."""
    if kind == "gz":
        return _ZlibDecoder(16 + zlib.MAX_WBITS)
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    if kind == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
    raise ValueError(f"unknown stream kind {kind!r}")


def zip_decoder(method: int) -> Decoder:
    """A decoder for a zip entry's data (``method`` from ``ZIP_METHODS``)."""
    if method == 0:
        return _StoredDecoder()
    if method == 8:
        return _ZlibDecoder(-zlib.MAX_WBITS)
    if method == 12:
        return bz2.BZ2Decompressor()
    if method == 14:
        return _ZipLzmaDecoder()
    raise NotAnArchive(f"zip compression method {method} is not supported (use one of"
                       f" {', '.join(ZIP_METHODS.values())})")


class InflatingReader:
    """``read(n)`` over compressed data: at most ``min(n, OUTPUT_STEP)`` bytes per call.

    ``source`` yields the compressed bytes (``length`` of them, or to its end);
    ``check(produced, consumed)`` runs after every step with the bytes produced and the
    compressed bytes read so far, and raises to stop. ``magic``: when one stream ends and
    more data starting with it follows, a new stream is decoded (concatenated streams);
    anything else after a stream is ignored, like gzip and xz do.
    """

    def __init__(self, source: BinaryIO, new_decoder: Callable[[], Decoder], check: Check,
                 *, length: int | None = None, magic: bytes | None = None,
                 what: str = "compressed data") -> None:
        self._source, self._new, self._check = source, new_decoder, check
        self._left, self._magic, self._what = length, magic, what
        self._decoder = new_decoder()
        self.produced = self.consumed = 0
        self.finished = False  # the data ended (source exhausted or trailing bytes ignored)
        self.complete = False  # ... and the last stream reached its end marker

    def _fill(self) -> bytes:
        n = INPUT_STEP if self._left is None else min(INPUT_STEP, self._left)
        data = self._source.read(n) if n > 0 else b""
        self.consumed += len(data)
        if self._left is not None:
            self._left -= len(data)
        return data

    def _next_stream(self) -> bytes | None:
        """The data of the next concatenated stream, or None when there is none."""
        rest = self._decoder.unused_data
        while self._magic and len(rest) < len(self._magic) and (more := self._fill()):
            rest += more
        if not self._magic or not rest or not rest.startswith(self._magic):
            return None
        self._decoder = self._new()
        return rest

    def read(self, n: int = -1) -> bytes:
        step = OUTPUT_STEP if n < 0 else min(n, OUTPUT_STEP)
        while not self.finished and step > 0:
            if self._decoder.eof:
                data = self._next_stream()
                if data is None:
                    self.finished = self.complete = True
                    break
            elif self._decoder.needs_input:
                data = self._fill()
                if not data:
                    self.finished = True  # truncated: the caller's format notices
                    break
            else:
                data = b""
            out = self._decode(data, step)
            if out:
                self.produced += len(out)
                self._check(self.produced, self.consumed)
                return out
        return b""

    def _decode(self, data: bytes, step: int) -> bytes:
        try:
            return self._decoder.decompress(data, step)
        except lzma.LZMAError as exc:
            if "memory" in str(exc).lower():
                raise ArchiveTooLarge(f"the {self._what} needs more than {XZ_MEMLIMIT} bytes"
                                      " of decoder memory (its dictionary is too large)"
                                      ) from exc
            raise NotAnArchive(f"corrupt {self._what}: {public_reason(exc)}") from exc
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise NotAnArchive(f"corrupt {self._what}: {public_reason(exc)}") from exc


def ratio_check(max_bytes: int, max_ratio: float, grace: int, what: str) -> Check:
    """Refuse once the output passes ``max_bytes``, or ``max_ratio`` x the compressed
    bytes read (after ``grace`` bytes of output: small things may compress very well)."""

    def check(produced: int, consumed: int) -> None:
        if produced > max_bytes:
            raise ArchiveTooLarge(f"archive extracts to more than {max_bytes} bytes")
        if produced > grace and produced > max_ratio * max(consumed, 1):
            raise ArchiveTooLarge(f"{what} inflates more than {max_ratio:g}x (zip bomb?)")

    return check
