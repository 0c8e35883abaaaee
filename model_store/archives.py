"""Extract zip and tar archives safely.

Nothing here trusts the archive: the format is detected from magic bytes, every entry name
is checked before anything is written, only regular files and directories are created
(never links, devices or fifos), and the size caps count the bytes actually written, so a
header that lies about sizes gains nothing.

Refusals come before anything is written, so a bomb costs no disk: a zip's central
directory is read first and its declared sizes, per-entry compression ratios, file count and
staging bytes are checked before the first byte is written (an entry may not inflate a byte
past its declared size, so the declaration is a bound, and the CRC catches a lie). A tar is
read twice: a first pass reads every header (and, compressed, inflates the stream without
keeping it) and checks the same caps on the declared sizes without writing; only then does
the second pass write. A compressed tar may not declare more than ``max_ratio`` times the
archive's size. While writing, the running totals are checked again on every chunk.

Memory stays small whatever the archive: all decompression goes through
``model_store.inflate`` (at most ``OUTPUT_STEP`` bytes per step, the caps checked after
every step), and tar metadata headers (pax, GNU long names), which tarfile reads whole into
memory, may not be larger than ``MAX_TAR_META_BYTES``.

Entries the caller's ``keep`` rule rejects (files the task's layout never reads) are not
extracted at all; they are counted, and a capped sample of their names is kept for the
intake report. Staging bytes are counted as disk blocks (``disk_cost``): a one-byte file
occupies a 4 KiB block, which is how 49,000 one-byte files once became 200 MB.
"""

from __future__ import annotations

import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

from core.errors import public_reason
from model_store.errors import ArchiveTooLarge, ArchiveUnsafe, NotAnArchive
from model_store.inflate import (
    STREAM_MAGIC,
    ZIP_METHODS,
    InflatingReader,
    ratio_check,
    stream_decoder,
)
from model_store.zip_members import ZipMemberReader, check_directory

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
# Longest entry name (Linux's PATH_MAX): names are kept while intake runs.
MAX_PATH_BYTES = 4096

# A pax or GNU long-name header's payload (names, attributes) is read whole into memory.
MAX_TAR_META_BYTES = 64 * 1024
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
    for suffix, magic in STREAM_MAGIC.items():
        if head.startswith(magic):
            return f"tar.{suffix}"
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
    if len(name.encode()) > MAX_PATH_BYTES:
        raise ArchiveUnsafe(name[:100] + "...", f"name longer than {MAX_PATH_BYTES} bytes")
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


class _Source(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Extractor:
    """Creates files and directories under ``dest`` and keeps the running totals.

    With ``dry_run`` nothing is created: the same checks run on the declared sizes (the
    first pass over a tar), so a refusal comes before the first byte is written."""

    def __init__(self, dest: Path, limits: ExtractLimits, *, dry_run: bool = False) -> None:
        self.dest, self.limits, self.stats = dest, limits, ExtractStats()
        self.dry_run = dry_run
        self.seen: set[str] = set()
        self.files_at: set[PurePosixPath] = set()  # paths of file entries
        self.dirs_at: set[PurePosixPath] = set()  # every folder an entry makes or implies
        if not dry_run:
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

    def skip(self, size: int) -> None:
        """Data read over without writing (skipping still decompresses it)."""
        self.stats.bytes += size
        if self.stats.bytes > self.limits.max_bytes:
            raise ArchiveTooLarge(f"archive extracts to more than {self.limits.max_bytes} bytes")

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

    def target(self, name: str, rel: PurePosixPath, *, is_dir: bool) -> Path:
        key = rel.as_posix()
        if key in self.seen:
            # A second entry with the same name would overwrite the first (or turn a
            # checked file into something else); no honest archive needs that.
            raise ArchiveUnsafe(name, "duplicate entry")
        parents = [p for p in rel.parents if p.parts]
        # Known from the names, so the dry pass refuses it too: a file where a folder
        # must be, or the other way round.
        if any(p in self.files_at for p in parents) or (not is_dir and rel in self.dirs_at):
            raise ArchiveUnsafe(name, "path conflicts with another entry")
        self.seen.add(key)
        self.dirs_at.update(parents)
        (self.dirs_at if is_dir else self.files_at).add(rel)
        return self.dest.joinpath(*rel.parts)

    def make_dir(self, name: str, rel: PurePosixPath) -> None:
        existed = rel in self.dirs_at  # made already as the folder of an earlier entry
        path = self.target(name, rel, is_dir=True)
        if existed:
            return
        self._stage(DISK_BLOCK)
        if self.dry_run:
            return
        try:
            path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ArchiveUnsafe(name, "path conflicts with a file entry") from exc

    def write_file(self, name: str, rel: PurePosixPath, src: _Source | None,
                   packed: int | None, size: int) -> None:
        """Copy ``src`` to the entry's path; ``size`` is its declared size (all a dry run
        counts) and ``packed`` its compressed size for the ratio (zip)."""
        path = self.target(name, rel, is_dir=False)
        self.stats.files += 1
        if self.dry_run or src is None:
            self.stats.bytes += size  # admit() checked the caps for this size
            self.stats.staged += disk_cost(size)
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL and O_NOFOLLOW: never overwrite, never write through a link.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise ArchiveUnsafe(name, "path conflicts with another entry") from exc
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
        # A compressed tar's ratio is checked on the whole stream by its InflatingReader.
        if packed is None or produced <= RATIO_GRACE_BYTES:
            return
        if produced > self.limits.max_ratio * max(packed, 1):
            raise ArchiveTooLarge(
                f"entry {name!r} inflates more than {self.limits.max_ratio:g}x (zip bomb?)"
            )


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


def _extract_zip(path: Path, ex: _Extractor) -> None:
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


# pax headers and GNU long names/links: their payload is read into memory whole.
_TAR_META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, b"X", tarfile.GNUTYPE_LONGNAME,
                   tarfile.GNUTYPE_LONGLINK)


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a metadata header's payload at once, however large its header says it
    is (a 1 GiB "long name" is 1 GiB of memory): refuse big ones before they are read.
    ``_proc_member`` is the hook tarfile documents for subclasses."""

    def _proc_member(self, tarfile: tarfile.TarFile) -> Any:
        if self.type in _TAR_META_TYPES and self.size > MAX_TAR_META_BYTES:
            raise ArchiveTooLarge(f"a tar metadata header (pax or long name) of {self.size}"
                                  f" bytes; at most {MAX_TAR_META_BYTES} are read")
        return super()._proc_member(tarfile)  # type: ignore[misc]


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


def _walk_tar(path: Path, ex: _Extractor, kind: str) -> None:
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


def _tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, ex: _Extractor,
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
        ex = _Extractor(dest, limits)
        _extract_zip(path, ex)
        return ex.stats
    # A tar announces nothing up front: a first pass checks every cap on the declared
    # sizes, writing nothing, before the second one writes.
    _walk_tar(path, _Extractor(dest, limits, dry_run=True), kind)
    ex = _Extractor(dest, limits)
    _walk_tar(path, ex, kind)
    return ex.stats
