"""Where archive entries may go and how many bytes they may take: entry names, the caps,
and ``Extractor``, which writes files and folders while keeping the running totals.

``model_store.archives`` reads zip and tar formats and hands every entry here. Entry names
are checked before anything is written; only regular files and folders are created; the
size caps count the bytes actually written, so a header that lies about sizes gains
nothing. With ``dry_run`` the same checks run on declared sizes without touching the disk.

Entries the caller's ``keep`` rule rejects (files the task's layout never reads) are not
extracted at all; they are counted, and a capped sample of their names is kept for the
intake report. Staging bytes are counted as disk blocks (``disk_cost``): a one-byte file
occupies a 4 KiB block, which is how 49,000 one-byte files once became 200 MB.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from model_store.errors import ArchiveTooLarge, ArchiveUnsafe

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


# ---- names
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


class Source(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class Extractor:
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

    def write_file(self, name: str, rel: PurePosixPath, src: Source | None,
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
