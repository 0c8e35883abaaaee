"""model_store/inflate.py and the zip entry reader on real compressed data: output comes in
bounded steps, caps are checked on every step, concatenated streams and every supported
zip method read back exactly, and a zip's directory is bounded before zipfile reads it."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile
from pathlib import Path

import pytest

from core.settings import Settings
from model_store.errors import ArchiveTooLarge, ArchiveUnsafe, NotAnArchive
from model_store.inflate import (
    OUTPUT_STEP,
    STREAM_MAGIC,
    XZ_MEMLIMIT,
    InflatingReader,
    ratio_check,
    stream_decoder,
)
from model_store.intake import ingest_upload
from model_store.zip_members import check_directory
from tests.support.archives import good_files, write_tar, write_zip
from tests.support.bombs import zip_directory_of

MiB = 1024 * 1024
COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


def _no_check(produced: int, consumed: int) -> None:
    pass


def _reader(kind: str, data: bytes, check=_no_check) -> InflatingReader:
    return InflatingReader(io.BytesIO(data), lambda: stream_decoder(kind), check,
                           magic=STREAM_MAGIC[kind])


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_steps_are_bounded_and_concatenated_streams_are_read(kind: str) -> None:
    """Two streams back to back (pigz/pbzip2/pixz write them): 8 MiB of zeros each, never
    more than one step per read however much a read asks for."""
    part = bytes(8 * MiB)
    reader = _reader(kind, COMPRESS[kind](part) + COMPRESS[kind](part))
    sizes = []
    while chunk := reader.read(4 * MiB):
        assert chunk == bytes(len(chunk))
        sizes.append(len(chunk))
    assert max(sizes) <= OUTPUT_STEP and sum(sizes) == 16 * MiB
    assert reader.complete


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_the_ratio_stops_a_bomb_within_a_step(kind: str) -> None:
    data = COMPRESS[kind](bytes(64 * MiB))
    check = ratio_check(1 << 40, 200.0, MiB, "the stream")
    reader = _reader(kind, data, check)
    with pytest.raises(ArchiveTooLarge, match="inflates more than 200x"):
        while reader.read(MiB):
            pass
    assert reader.produced <= max(MiB, 200 * len(data)) + OUTPUT_STEP


def test_the_byte_cap_is_checked_on_every_step() -> None:
    reader = _reader("gz", gzip.compress(bytes(4 * MiB)), ratio_check(MiB, 1e9, 0, "x"))
    with pytest.raises(ArchiveTooLarge, match=f"more than {MiB} bytes"):
        while reader.read(MiB):
            pass
    assert reader.produced <= MiB + OUTPUT_STEP


def test_an_xz_dictionary_past_the_memory_limit_is_refused() -> None:
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 2 * XZ_MEMLIMIT}]
    data = lzma.compress(b"hello" * 1000, filters=filters)
    with pytest.raises(ArchiveTooLarge, match="decoder memory"):
        _reader("xz", data).read()


def test_trailing_garbage_after_a_stream_is_ignored() -> None:
    reader = _reader("gz", gzip.compress(b"abc" * 100) + b"garbage")
    assert reader.read() == b"abc" * 100 and reader.read() == b""


def test_corrupt_data_is_not_an_archive() -> None:
    data = bz2.compress(bytes(range(256)) * 100)
    reader = _reader("bz2", data[:4] + bytes(len(data) - 4))  # the header, then zeros
    with pytest.raises(NotAnArchive, match="corrupt"):
        while reader.read():
            pass


# ---- through intake
@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                    zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA],
                         ids=["stored", "deflate", "bzip2", "lzma"])
def test_every_supported_zip_method_reads_back(method: int, tmp_path: Path) -> None:
    files = good_files("generate")
    path = write_zip(tmp_path / "ds.zip", files, method)
    result = ingest_upload(tmp_path / "store", "generate", path, "ds.zip",
                           Settings(_env_file=None))
    assert result.report.can_train and result.report.counts == {"train": 5, "val": 1}


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_a_concatenated_tar_stream_reads_back(kind: str, tmp_path: Path) -> None:
    """A tar compressed as several streams (parallel compressors split it so)."""
    plain = write_tar(tmp_path / "ds.tar", good_files("generate")).read_bytes()
    cut = len(plain) // 2
    path = tmp_path / f"ds.tar.{kind}"
    path.write_bytes(COMPRESS[kind](plain[:cut]) + COMPRESS[kind](plain[cut:]))
    result = ingest_upload(tmp_path / "store", "generate", path, path.name,
                           Settings(_env_file=None))
    assert result.report.can_train


def test_a_zip_name_flagged_utf8_that_is_not_is_unsafe(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bad.zip", {**good_files("generate"), "images/bad_.png": b"x"})
    raw = bytearray(path.read_bytes())
    name = b"images/bad_.png"
    for at in (raw.find(name), raw.rfind(name)):  # local header, central directory
        raw[at + len(name) - 5] = 0xFF
        flags = at - (30 - 6) if raw[at - 30:at - 26] == b"PK\x03\x04" else at - (46 - 8)
        raw[flags + 1] |= 0x08  # bit 11 (0x800): the name is UTF-8
    path.write_bytes(bytes(raw))
    with pytest.raises(ArchiveUnsafe, match="not valid UTF-8"):
        ingest_upload(tmp_path / "store", "generate", path, "bad.zip", Settings(_env_file=None))


# ---- the zip directory, before zipfile parses it
def test_a_zip_directory_holding_more_records_than_it_declares_is_refused(tmp_path: Path
                                                                          ) -> None:
    path = zip_directory_of(tmp_path / "d.zip", 20)  # declares 1 entry, holds 20 records
    check_directory(path, 20)
    with pytest.raises(ArchiveTooLarge, match="more than 19 entries"):
        check_directory(path, 19)


def test_a_zip_directory_larger_than_its_allowance_is_refused(tmp_path: Path) -> None:
    path = zip_directory_of(tmp_path / "d.zip", 100)  # 4,700 bytes
    with pytest.raises(ArchiveTooLarge, match="central directory is 4700 bytes"):
        check_directory(path, 4)  # 4 x CD_BYTES_PER_ENTRY


def test_a_zip_declaring_too_many_entries_is_refused_through_intake(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "ds.zip", good_files("generate"))
    s = Settings(_env_file=None, dataset_max_entries=5)
    with pytest.raises(ArchiveTooLarge, match="more than 5 entries"):
        ingest_upload(tmp_path / "store", "generate", path, "ds.zip", s)
    check_directory(path, 6)  # the six real entries pass
