"""Read zip and tar archives safely into an ``Extractor`` (model_store/extractor.py).

The format is detected from magic bytes. Refusals come before anything is written, so a
bomb costs no disk: a zip's central directory is read first and its declared sizes,
per-entry compression ratios, file count and staging bytes are checked before the first
byte is written (an entry may not inflate a byte past its declared size, so the
declaration is a bound, and the CRC catches a lie). A tar is read twice: a first pass
reads every header (and, compressed, inflates the stream without keeping it) and checks
the same caps on the declared sizes without writing; only then does the second pass write.
A compressed tar may not declare more than ``max_ratio`` times the archive's size. While
writing, the running totals are checked again on every chunk.

Memory stays small whatever the archive: all decompression goes through
``model_store.inflate`` (at most ``OUTPUT_STEP`` bytes per step, the caps checked after
every step), a zip's directory is bounded before zipfile parses it, and tar metadata
headers (pax, GNU long names), which tarfile reads whole into memory, may not be larger
than ``MAX_TAR_META_BYTES``.
"""

from __future__ import annotations

import lzma
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from core.errors import public_reason
from model_store.errors import ArchiveTooLarge, ArchiveUnsafe, NotAnArchive
from model_store.extractor import (
    CHUNK,
    DISK_BLOCK,
    RATIO_GRACE_BYTES,
    ExtractLimits,
    Extractor,
    ExtractStats,
    disk_cost,
    safe_relative_path,
)
from model_store.inflate import (
    STREAM_MAGIC,
    ZIP_METHODS,
    InflatingReader,
    ratio_check,
    stream_decoder,
)
from model_store.zip_members import ZipMemberReader, check_directory

__all__ = [
    "CHUNK",
    "DISK_BLOCK",
    "MAX_TAR_META_BYTES",
    "ExtractLimits",
    "ExtractStats",
    "detect_format",
    "extract_archive",
    "safe_relative_path",
]

# A pax or GNU long-name header's payload (names, attributes) is read whole into memory.
MAX_TAR_META_BYTES = 64 * 1024
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


# ---- detection
def detect_format(path: Path) -> str:
    """``zip``, ``tar``, ``tar.gz``, ``tar.bz2`` or ``tar.xz``, from the first bytes.

    For the compressed kinds, whether the stream holds a tar is only known once opened.
    """
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_ZIP_MAGICS):
        return "zip"
    for suffix, magic in STREAM_MAGIC.items():
        if head.startswith(magic):
            return f"tar.{suffix}"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise NotAnArchive("the upload is not a zip or tar archive (checked by content)")


# ---- zip
def _zip_is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NotAnArchive(f"unreadable zip: {_zip_reason(exc)}") from exc
    except UnicodeDecodeError as exc:  # a name flagged UTF-8 that is not
        raw = exc.object if isinstance(exc.object, bytes) else b""
        raise ArchiveUnsafe(raw.decode("utf-8", "backslashreplace"),
                            "the entry is flagged UTF-8 but its name is not valid UTF-8"
                            ) from None


def _extract_zip(path: Path, ex: Extractor) -> None:
    check_directory(path, ex.limits.max_entries)
    with _open_zip(path) as zf:
        infos = zf.infolist()
        if len(infos) > ex.limits.max_entries:
            raise ArchiveTooLarge(f"archive has more than {ex.limits.max_entries} entries")
        # No entry may inflate past its declared size (ZipMemberReader), so the declared
        # sizes bound what can be written: check them all before writing anything.
        if sum(i.file_size for i in infos) > ex.limits.max_bytes:
            raise ArchiveTooLarge(f"archive declares more than {ex.limits.max_bytes} bytes")
        # A lying compress_size cannot make the ratio look small: real data fits the file.
        archive_size = path.stat().st_size
        plan = _plan_zip(infos, ex, archive_size)
    with open(path, "rb") as fh:
        for info, rel in plan:
            if info.is_dir():
                ex.make_dir(info.filename, rel)
                continue
            ex.admit(info.filename, info.file_size)
            ex.write_file(info.filename, rel, ZipMemberReader(fh, info, archive_size),
                          min(info.compress_size, archive_size), info.file_size)


def _plan_zip(infos: list[zipfile.ZipInfo], ex: Extractor, archive_size: int
              ) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Check every entry's name and declarations; the entries to extract, in order.

    Everything here reads the central directory only, so each refusal costs no disk."""
    plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    files = staged = 0
    for info in infos:
        ex.count_entry()
        rel = safe_relative_path(info.filename)
        if rel is None:
            continue
        if _zip_is_symlink(info):
            raise ArchiveUnsafe(info.filename, "symbolic link")
        if info.flag_bits & 0x1:
            raise ArchiveUnsafe(info.filename, "encrypted entry")
        if info.is_dir():
            if ex.keeps_dir(rel):
                plan.append((info, rel))
            continue
        if not ex.keeps(rel):
            ex.ignore(rel)
            continue
        if info.compress_type not in ZIP_METHODS:
            raise NotAnArchive(f"zip entry {info.filename!r} uses compression method"
                               f" {info.compress_type}; supported: "
                               + ", ".join(ZIP_METHODS.values()))
        packed = max(min(info.compress_size, archive_size), 1)
        if info.file_size > RATIO_GRACE_BYTES and info.file_size > ex.limits.max_ratio * packed:
            raise ArchiveTooLarge(f"entry {info.filename!r} inflates more than"
                                  f" {ex.limits.max_ratio:g}x (zip bomb?)")
        files += 1
        staged += disk_cost(info.file_size)
        if ex.limits.max_files is not None and files > ex.limits.max_files:
            raise ArchiveTooLarge(f"archive has more than {ex.limits.max_files} files the"
                                  " task's layout uses")
        cap = ex.limits.max_staging_bytes
        if cap is not None and staged > cap:
            raise ArchiveTooLarge(f"archive declares more than {cap} bytes of disk (counted"
                                  f" in {DISK_BLOCK}-byte blocks) for the files it keeps")
        plan.append((info, rel))
    # Many entries each under the grace size add up: the whole archive may not inflate
    # past max_ratio x its own size either.
    declared = sum(info.file_size for info, _ in plan)
    if declared > RATIO_GRACE_BYTES and declared > ex.limits.max_ratio * max(archive_size, 1):
        raise ArchiveTooLarge(f"archive inflates more than {ex.limits.max_ratio:g}x its size"
                              " (zip bomb?)")
    return plan


def _zip_reason(exc: BaseException) -> str:
    """The zip library's complaint without file paths or object reprs."""
    return public_reason(exc)


# ---- tar
# pax headers and GNU long names/links: their payload is read into memory whole.
_TAR_META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, b"X", tarfile.GNUTYPE_LONGNAME,
                   tarfile.GNUTYPE_LONGLINK)


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a metadata header's payload at once, however large its header says it
    is (a 1 GiB "long name" is 1 GiB of memory): refuse big ones before they are read.
    ``_proc_member`` is the hook tarfile documents for subclasses."""

    def _proc_member(self, tf: tarfile.TarFile) -> Any:
        if self.type in _TAR_META_TYPES and self.size > MAX_TAR_META_BYTES:
            raise ArchiveTooLarge(f"a tar metadata header (pax or long name) of {self.size}"
                                  f" bytes; at most {MAX_TAR_META_BYTES} are read")
        return super()._proc_member(tf)  # type: ignore[misc]


def _tar_rule(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "fifo"
    if member.issparse():  # holes would be written as zeros, a bomb without compression
        return "sparse file"
    if not (member.isfile() or member.isdir()):
        return f"unsupported entry type {member.type!r}"
    return None


def _tar_source(raw: BinaryIO, kind: str, limits: ExtractLimits) -> BinaryIO | InflatingReader:
    """The tar bytes of ``raw``: itself, or its stream inflated a step at a time with the
    inflated-bytes cap and the stream's ratio checked after every step."""
    if kind == "tar":
        return raw
    suffix = kind.removeprefix("tar.")
    check = ratio_check(limits.max_bytes, limits.max_ratio, RATIO_GRACE_BYTES,
                        "the compressed tar stream")
    return InflatingReader(raw, lambda: stream_decoder(suffix), check,
                           magic=STREAM_MAGIC[suffix], what=f"{kind} stream")


def _walk_tar(path: Path, ex: Extractor, kind: str) -> None:
    """One pass over a tar: checks every member and, unless ``ex.dry_run``, writes it."""
    compressed = kind != "tar"
    # A compressed stream cannot inflate past max_ratio x the archive without being a bomb:
    # checked on each member's declared size before its data is read.
    inflate_cap = ex.limits.max_ratio * max(path.stat().st_size, 1) if compressed else None
    with open(path, "rb") as raw:
        # A plain tar's first pass seeks over the data ("r:"); everything else streams
        # ("r|"), and stream mode never holds a member's data.
        mode = "r:" if ex.dry_run and not compressed else "r|"
        try:
            with tarfile.open(fileobj=_tar_source(raw, kind, ex.limits), mode=mode,  # type: ignore[call-overload]
                              tarinfo=_BoundedTarInfo) as tf:
                while (member := tf.next()) is not None:
                    _tar_member(tf, member, ex, inflate_cap)
                    # TarFile keeps every member it read; none is needed again here.
                    tf.members.clear()
        except (tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a real I/O failure (disk full), not a bad archive
            if isinstance(exc, tarfile.ReadError) and ex.stats.entries == 0:
                raise NotAnArchive("the upload is not a zip or tar archive") from exc
            raise NotAnArchive(f"corrupt tar archive: {public_reason(exc)}") from exc


def _tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, ex: Extractor,
                inflate_cap: float | None) -> None:
    ex.count_entry()
    rel = safe_relative_path(member.name)
    rule = _tar_rule(member)
    size = max(member.size, 0)
    if (inflate_cap is not None and ex.stats.bytes + size > inflate_cap
            and ex.stats.bytes + size > RATIO_GRACE_BYTES):
        raise ArchiveTooLarge(f"entry {member.name!r} inflates more than"
                              f" {ex.limits.max_ratio:g}x (zip bomb?)")
    if rel is None:
        ex.skip(size)
        return
    if rule:
        raise ArchiveUnsafe(member.name, rule)
    if member.isdir():
        if ex.keeps_dir(rel):
            ex.make_dir(member.name, rel)
        return
    if not ex.keeps(rel):
        ex.ignore(rel)
        ex.skip(size)
        return
    ex.admit(member.name, size)
    src = None
    if not ex.dry_run:
        src = tf.extractfile(member)
        if src is None:
            raise ArchiveUnsafe(member.name, "unreadable entry")
    ex.write_file(member.name, rel, src, None, size)


def extract_archive(path: Path, dest: Path, limits: ExtractLimits) -> ExtractStats:
    """Extract ``path`` into ``dest`` (created). The caller removes ``dest`` on error."""
    kind = detect_format(path)
    if kind == "zip":
        ex = Extractor(dest, limits)
        _extract_zip(path, ex)
        return ex.stats
    # A tar announces nothing up front: a first pass checks every cap on the declared
    # sizes, writing nothing, before the second one writes.
    _walk_tar(path, Extractor(dest, limits, dry_run=True), kind)
    ex = Extractor(dest, limits)
    _walk_tar(path, ex, kind)
    return ex.stats
