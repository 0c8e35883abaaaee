"""Read a zip's directory within bounds, and one entry's data through ``InflatingReader``.

``zipfile.ZipFile`` reads the whole central directory into memory and makes an object per
record before anyone can count them: a 1 GiB upload of 46-byte records is 20 million
objects, several GB. ``check_directory`` finds the directory the way zipfile does (the end
record, zip64 included) and refuses one larger than ``CD_BYTES_PER_ENTRY`` per allowed
entry, or holding more records than entries are allowed, before zipfile parses it.

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
from pathlib import Path
from typing import BinaryIO

from model_store.errors import ArchiveTooLarge, ArchiveUnsafe, NotAnArchive
from model_store.inflate import InflatingReader, zip_decoder

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # 30 bytes, as APPNOTE section 4.3.7
_LOCAL_MAGIC = b"PK\x03\x04"
_UTF8_FLAG = 0x800
# Central directory bytes allowed per allowed entry (a record is 46 bytes plus its name,
# extra field and comment; real ones are well under this).
CD_BYTES_PER_ENTRY = 1024
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record, 22 bytes
_EOCD_MAGIC = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_CD_MAGIC = b"PK\x01\x02"
_MAX_COMMENT = 1 << 16


def _directory_extent(fh: BinaryIO, size: int) -> tuple[int, int, int] | None:
    """(start, size, declared entries) of the central directory, located as zipfile's
    reader locates it; None when there is no end record (zipfile then refuses the file)."""
    if size < _EOCD.size:
        return None
    tail_start = max(size - _MAX_COMMENT - _EOCD.size, 0)
    fh.seek(tail_start)
    tail = fh.read()
    if tail[-_EOCD.size:-_EOCD.size + 4] == _EOCD_MAGIC and tail[-2:] == b"\0\0":
        at = len(tail) - _EOCD.size
    else:
        at = tail.rfind(_EOCD_MAGIC)
        if at < 0 or len(tail) - at < _EOCD.size:
            return None
    fields = _EOCD.unpack_from(tail, at)
    entries, cd_size, location = fields[4], fields[5], tail_start + at
    start = location - cd_size
    locator_at = location - _ZIP64_LOCATOR.size
    if locator_at - _ZIP64_EOCD.size >= 0:
        fh.seek(locator_at)
        if _ZIP64_LOCATOR.unpack(fh.read(_ZIP64_LOCATOR.size))[0] == b"PK\x06\x07":
            fh.seek(locator_at - _ZIP64_EOCD.size)
            record = _ZIP64_EOCD.unpack(fh.read(_ZIP64_EOCD.size))
            if record[0] == b"PK\x06\x06":
                entries, cd_size = record[7], record[8]
                start = locator_at - _ZIP64_EOCD.size - cd_size
    return start, cd_size, entries


def check_directory(path: Path, max_entries: int) -> None:
    """Refuse a zip whose central directory would take more than a bounded amount of
    memory to parse: declared entries, its size, and the records it really holds."""
    cap = max_entries * CD_BYTES_PER_ENTRY
    with open(path, "rb") as fh:
        extent = _directory_extent(fh, path.stat().st_size)
        if extent is None:
            return
        start, cd_size, entries = extent
        if entries > max_entries:
            raise ArchiveTooLarge(f"archive has more than {max_entries} entries")
        if cd_size > cap:
            raise ArchiveTooLarge(f"the zip's central directory is {cd_size} bytes; at most"
                                  f" {cap} are read ({CD_BYTES_PER_ENTRY} per allowed entry)")
        # The declared count is not what zipfile trusts: it parses records until the
        # directory's bytes run out. Count the record signatures in those bytes instead.
        if _count_records(fh, max(start, 0), cd_size) > max_entries:
            raise ArchiveTooLarge(f"archive has more than {max_entries} entries")


def _count_records(fh: BinaryIO, start: int, size: int) -> int:
    """Central directory signatures in ``size`` bytes from ``start``, a MiB at a time."""
    fh.seek(start)
    count, carry, left = 0, b"", size
    while left > 0 and (chunk := fh.read(min(left, 1 << 20))):
        left -= len(chunk)
        buf = carry + chunk
        count += buf.count(_CD_MAGIC)
        carry = buf[-3:]  # a signature may span two reads; 3 bytes never hold a whole one
    return count


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
