"""Read one zip entry's data through ``InflatingReader`` (bounded output per step).

``zipfile`` reads the central directory well, but its entry reader decompresses bzip2 and
lzma data a whole read at a time and only then trims it to the declared size: an entry
declaring 100 bytes whose 500 compressed bytes hold 512 MiB of zeros takes 512 MiB of
memory. Here the local header is parsed by hand, the compressed bytes are read a step at a
time, and the entry may not produce a byte more than the central directory declared; its
CRC is checked at the end, like zipfile does.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from typing import BinaryIO

from model_store.errors import ArchiveUnsafe, NotAnArchive
from model_store.inflate import InflatingReader, zip_decoder

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # 30 bytes, as APPNOTE section 4.3.7
_LOCAL_MAGIC = b"PK\x03\x04"
_UTF8_FLAG = 0x800


def decode_name(raw: bytes, flags: int) -> str:
    """An entry name as zip defines it: UTF-8 with the flag, cp437 without.

    Raises ``ArchiveUnsafe`` for a name flagged UTF-8 that is not valid UTF-8."""
    if not flags & _UTF8_FLAG:
        return raw.decode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveUnsafe(raw.decode("utf-8", "backslashreplace"),
                            "the entry is flagged UTF-8 but its name is not valid UTF-8"
                            ) from None


class ZipMemberReader:
    """``read(n)`` of one entry's inflated bytes; raises ``NotAnArchive`` on a lie."""

    def __init__(self, fh: BinaryIO, info: zipfile.ZipInfo, archive_size: int) -> None:
        self.info = info
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL_HEADER.size)
        if len(head) < _LOCAL_HEADER.size or head[:4] != _LOCAL_MAGIC:
            raise self._corrupt("bad local header")
        name_len, extra_len = _LOCAL_HEADER.unpack(head)[10:12]
        # Decoded as zipfile decodes the central name: by the central directory's flag.
        if decode_name(fh.read(name_len), info.flag_bits) != info.orig_filename:
            # Entries whose local and central names differ (overlapping entries, a
            # classic way to multiply one compressed kernel) are refused, as zipfile does.
            raise self._corrupt("its local header names another file")
        fh.seek(extra_len, 1)
        if fh.tell() + info.compress_size > archive_size:
            raise self._corrupt("its data runs past the end of the archive")
        self._crc = 0
        self._inner = InflatingReader(
            fh, lambda: zip_decoder(info.compress_type), self._check,
            length=info.compress_size, what=f"zip entry {info.filename!r}")

    def _corrupt(self, why: str) -> NotAnArchive:
        return NotAnArchive(f"corrupt zip entry {self.info.filename!r}: {why}")

    def _check(self, produced: int, consumed: int) -> None:
        if produced > self.info.file_size:
            raise self._corrupt(f"it inflates past its declared {self.info.file_size} bytes")

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        if data:
            self._crc = zlib.crc32(data, self._crc)
            return data
        if self._inner.produced != self.info.file_size:
            raise self._corrupt(f"it inflates to {self._inner.produced} bytes, not the"
                                f" {self.info.file_size} it declares")
        if self._crc != self.info.CRC:
            raise self._corrupt("CRC mismatch")
        return b""
