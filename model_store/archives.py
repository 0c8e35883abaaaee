"""Extract zip and tar archives safely.

Nothing here trusts the archive: the format is detected from magic bytes, every entry name
is checked before anything is written, only regular files and directories are created
(never links, devices or fifos), and the size caps count the bytes actually written, so a
header that lies about sizes gains nothing.

Refusals come as early as the format allows, so a bomb costs no disk: a zip's central
directory is read first and its declared sizes, per-entry compression ratios, file count and
staging bytes are checked before the first byte is written (CPython's zip reader never
yields more than an entry's declared size, so the declaration is a bound, and the CRC
catches a lie); a tar member's header size is checked against the running totals before
its data is copied, and a compressed tar may not declare more than ``max_ratio`` times the
archive's size. While writing, the running totals are checked again on every chunk.

Entries the caller's ``keep`` rule rejects (files the task's layout never reads) are not
extracted at all; they are counted, and a capped sample of their names is kept for the
intake report. Staging bytes are counted as disk blocks (``disk_cost``): a one-byte file
occupies a 4 KiB block, which is how 49,000 one-byte files once became 200 MB.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from core.errors import public_reason
from model_store.errors import ArchiveTooLarge, ArchiveUnsafe, NotAnArchive

CHUNK = 1024 * 1024
# Small entries may compress extremely well (a flat-colour BMP, a text file) and still be
# harmless, so the ratio cap only applies once an entry has produced this many bytes.
RATIO_GRACE_BYTES = 1024 * 1024
# Junk that archivers add; skipped silently, never written.
IGNORED_DIRS = frozenset({"__MACOSX"})
IGNORED_FILES = frozenset({"Thumbs.db", "desktop.ini"})
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
# Staging bytes are counted in blocks of this size (the usual file-system block).
DISK_BLOCK = 4096
# Names of ignored entries kept for the report, unless the limits say otherwise.
IGNORED_SAMPLE = 100
_MAX_COMPONENT = 255

_GZIP, _BZIP2, _XZ = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


# ---- detection and names
def detect_format(path: Path) -> str:
    """``zip``, ``tar``, ``tar.gz``, ``tar.bz2`` or ``tar.xz``, from the first bytes.

    For the compressed kinds, whether the stream holds a tar is only known once opened.
    """
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_ZIP_MAGICS):
        return "zip"
    for magic, kind in ((_GZIP, "tar.gz"), (_BZIP2, "tar.bz2"), (_XZ, "tar.xz")):
        if head.startswith(magic):
            return kind
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise NotAnArchive("the upload is not a zip or tar archive (checked by content)")


def safe_relative_path(name: str) -> PurePosixPath | None:
    """The relative path an entry may be written to, or None for junk to skip.

    Raises ``ArchiveUnsafe`` for absolute paths, ``..``, drive letters, backslashes, NULs.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # tarfile keeps undecodable bytes as surrogates
        raise ArchiveUnsafe(name.encode("utf-8", "backslashreplace").decode(),
                            "name is not valid UTF-8") from None
    if "\x00" in name:
        raise ArchiveUnsafe(name, "NUL byte in name")
    if "\\" in name:
        # A backslash is a separator on Windows: "..\\x" would escape there, and a name
        # with one means something different on each platform.
        raise ArchiveUnsafe(name, "backslash in path")
    if name.startswith("/"):
        raise ArchiveUnsafe(name, "absolute path")
    if _DRIVE_RE.match(name):
        raise ArchiveUnsafe(name, "drive letter in path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveUnsafe(name, "'..' component in path")
    if any(len(p.encode()) > _MAX_COMPONENT for p in parts):
        raise ArchiveUnsafe(name, "path component too long")
    if not parts:
        return None
    if any(p in IGNORED_DIRS or p.startswith(".") for p in parts) or parts[-1] in IGNORED_FILES:
        return None
    return PurePosixPath(*parts)


# ---- extraction
def disk_cost(size: int) -> int:
    """What a file of ``size`` bytes occupies on disk: whole blocks, at least one."""
    return max(1, -(-max(size, 0) // DISK_BLOCK)) * DISK_BLOCK


KeepRule = Callable[[PurePosixPath], bool]


@dataclass(frozen=True)
class ExtractLimits:
    max_entries: int  # entries of any kind, ignored ones included
    max_bytes: int  # bytes the archive may inflate to (everything it decompresses)
    max_ratio: float  # inflated bytes / compressed bytes, per zip entry or compressed tar
    max_files: int | None = None  # files written (those ``keep`` accepts)
    max_staging_bytes: int | None = None  # disk bytes written (``disk_cost`` per file/dir)
    keep: KeepRule | None = None  # which files to write; None: every file
    ignored_sample: int = IGNORED_SAMPLE


@dataclass
class ExtractStats:
    entries: int = 0
    files: int = 0
    bytes: int = 0  # inflated bytes (written or skipped over)
    staged: int = 0  # disk bytes written, counted with disk_cost
    ignored: int = 0  # files not extracted because ``keep`` rejected them
    ignored_names: list[str] = field(default_factory=list)  # the first few of those


class _Extractor:
    """Creates files and directories under ``dest`` and keeps the running totals."""

    def __init__(self, dest: Path, limits: ExtractLimits) -> None:
        self.dest, self.limits, self.stats = dest, limits, ExtractStats()
        self.seen: set[str] = set()
        # Set for compressed tars: the ratio is then total output / compressed input read.
        self.stream: _CountingReader | None = None
        dest.mkdir(parents=True, exist_ok=True)

    def count_entry(self) -> None:
        self.stats.entries += 1
        if self.stats.entries > self.limits.max_entries:
            raise ArchiveTooLarge(f"archive has more than {self.limits.max_entries} entries")

    def keeps(self, rel: PurePosixPath) -> bool:
        return self.limits.keep is None or self.limits.keep(rel)

    def keeps_dir(self, rel: PurePosixPath) -> bool:
        # A folder is made when a file in it could be kept (layout folders stay visible).
        return self.keeps(rel / "x.png")

    def ignore(self, rel: PurePosixPath) -> None:
        self.stats.ignored += 1
        if len(self.stats.ignored_names) < self.limits.ignored_sample:
            self.stats.ignored_names.append(rel.as_posix())

    def admit(self, name: str, size: int) -> None:
        """Refuse a file of declared ``size`` before it is written if it would pass a cap."""
        lim = self.limits
        if lim.max_files is not None and self.stats.files + 1 > lim.max_files:
            raise ArchiveTooLarge(f"archive has more than {lim.max_files} files the task's"
                                  " layout uses")
        if self.stats.bytes + size > lim.max_bytes:
            raise ArchiveTooLarge(f"archive extracts to more than {lim.max_bytes} bytes")
        self._stage(disk_cost(size), check_only=True)

    def _stage(self, cost: int, *, check_only: bool = False) -> None:
        cap = self.limits.max_staging_bytes
        if cap is not None and self.stats.staged + cost > cap:
            raise ArchiveTooLarge(f"archive needs more than {cap} bytes of disk (counted in"
                                  f" {DISK_BLOCK}-byte blocks) to extract")
        if not check_only:
            self.stats.staged += cost

    def target(self, name: str, rel: PurePosixPath) -> Path:
        key = rel.as_posix()
        if key in self.seen:
            # A second entry with the same name would overwrite the first (or turn a
            # checked file into something else); no honest archive needs that.
            raise ArchiveUnsafe(name, "duplicate entry")
        self.seen.add(key)
        return self.dest.joinpath(*rel.parts)

    def make_dir(self, name: str, rel: PurePosixPath) -> None:
        path = self.target(name, rel)
        if path.is_dir():
            return
        self._stage(DISK_BLOCK)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ArchiveUnsafe(name, "path conflicts with a file entry") from exc

    def write_file(self, name: str, rel: PurePosixPath, src: IO[bytes], packed: int | None) -> None:
        """Copy ``src`` to the entry's path; ``packed`` is its compressed size for the ratio."""
        path = self.target(name, rel)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL and O_NOFOLLOW: never overwrite, never write through a link.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise ArchiveUnsafe(name, "path conflicts with another entry") from exc
        self.stats.files += 1
        written = 0
        self._stage(DISK_BLOCK)  # the file's first block (an empty file still costs one)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                before = disk_cost(written)
                written += len(chunk)
                self.stats.bytes += len(chunk)
                if self.stats.bytes > self.limits.max_bytes:
                    raise ArchiveTooLarge(
                        f"archive extracts to more than {self.limits.max_bytes} bytes"
                    )
                self._stage(disk_cost(written) - before)
                self.check_ratio(name, written, packed)
                out.write(chunk)

    def check_ratio(self, name: str, produced: int, packed: int | None) -> None:
        if packed is None and self.stream is not None:
            name, produced = "<compressed tar stream>", self.stats.bytes
            packed = self.stream.consumed
        if packed is None or produced <= RATIO_GRACE_BYTES:
            return
        if produced > self.limits.max_ratio * max(packed, 1):
            raise ArchiveTooLarge(
                f"entry {name!r} inflates more than {self.limits.max_ratio:g}x (zip bomb?)"
            )


def _zip_is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def _extract_zip(path: Path, ex: _Extractor) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NotAnArchive(f"unreadable zip: {_zip_reason(exc)}") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > ex.limits.max_entries:
            raise ArchiveTooLarge(f"archive has more than {ex.limits.max_entries} entries")
        # CPython's reader stops at file_size (then the CRC fails), so the declared sizes
        # bound what can be written: check them all before writing anything.
        if sum(i.file_size for i in infos) > ex.limits.max_bytes:
            raise ArchiveTooLarge(f"archive declares more than {ex.limits.max_bytes} bytes")
        # A lying compress_size cannot make the ratio look small: real data fits the file.
        archive_size = path.stat().st_size
        plan = _plan_zip(infos, ex, archive_size)
        for info, rel in plan:
            if info.is_dir():
                ex.make_dir(info.filename, rel)
                continue
            ex.admit(info.filename, info.file_size)
            try:
                with zf.open(info) as src:
                    ex.write_file(
                        info.filename, rel, src, min(info.compress_size, archive_size)
                    )
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise NotAnArchive(
                    f"corrupt zip entry {info.filename!r}: {_zip_reason(exc)}") from exc


def _plan_zip(infos: list[zipfile.ZipInfo], ex: _Extractor, archive_size: int
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


class _CountingReader:
    """Counts compressed bytes consumed, for the ratio of a compressed tar stream."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.consumed = fh, 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.consumed += len(data)
        return data


def _tar_rule(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "fifo"
    if not (member.isfile() or member.isdir()):
        return f"unsupported entry type {member.type!r}"
    return None


def _extract_tar(path: Path, ex: _Extractor, compressed: bool) -> None:
    raw = open(path, "rb")  # noqa: SIM115 - closed below, after the tar stream
    counter = _CountingReader(raw)
    ex.stream = counter if compressed else None
    # A compressed stream cannot inflate past max_ratio x the archive without being a bomb:
    # checked on each member's declared size before its data is read.
    inflate_cap = ex.limits.max_ratio * max(path.stat().st_size, 1) if compressed else None
    try:
        # Stream mode ("r|*"): members are read one by one and never all kept in memory.
        with tarfile.open(fileobj=counter, mode="r|*") as tf:  # type: ignore[call-overload]
            for member in tf:
                ex.count_entry()
                rel = safe_relative_path(member.name)
                rule = _tar_rule(member)
                size = max(member.size, 0)
                if (inflate_cap is not None and ex.stats.bytes + size > inflate_cap
                        and ex.stats.bytes + size > RATIO_GRACE_BYTES):
                    raise ArchiveTooLarge(
                        f"entry {member.name!r} inflates more than {ex.limits.max_ratio:g}x"
                        " (zip bomb?)")
                if rel is None:
                    # Skipping still decompresses the data: count it against the cap.
                    ex.stats.bytes += size
                    continue
                if rule:
                    raise ArchiveUnsafe(member.name, rule)
                if member.isdir():
                    if ex.keeps_dir(rel):
                        ex.make_dir(member.name, rel)
                    continue
                if not ex.keeps(rel):
                    ex.ignore(rel)
                    ex.stats.bytes += size
                    if ex.stats.bytes > ex.limits.max_bytes:
                        raise ArchiveTooLarge(
                            f"archive extracts to more than {ex.limits.max_bytes} bytes")
                    continue
                ex.admit(member.name, size)
                src = tf.extractfile(member)
                if src is None:
                    raise ArchiveUnsafe(member.name, "unreadable entry")
                ex.write_file(member.name, rel, src, None)
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real I/O failure (disk full), not a bad archive
        if isinstance(exc, tarfile.ReadError) and ex.stats.entries == 0:
            raise NotAnArchive("the upload is not a zip or tar archive") from exc
        raise NotAnArchive(f"corrupt tar archive: {public_reason(exc)}") from exc
    finally:
        raw.close()


def extract_archive(path: Path, dest: Path, limits: ExtractLimits) -> ExtractStats:
    """Extract ``path`` into ``dest`` (created). The caller removes ``dest`` on error."""
    ex = _Extractor(dest, limits)
    kind = detect_format(path)
    if kind == "zip":
        _extract_zip(path, ex)
    else:
        _extract_tar(path, ex, compressed=kind != "tar")
    return ex.stats
