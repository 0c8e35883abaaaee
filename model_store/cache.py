"""A process's local, content-addressed, bounded cache of blobs from the object store.

    <cache>/blobs/<sha256>                  one file per blob, verified when it arrived
    <cache>/trees/<name>/<file> -> blob     a version (or dataset) laid out as a directory
                                            of symlinks, for readers that want paths

A blob is downloaded once, hashed before it gets its name (``ObjectStore.get_blob``), and
shared by every tree that lists it (weights unchanged between versions are one file). The
blobs are bounded by ``max_bytes``: after each fetch the least recently used ones (by
mtime, touched on every use) go first, never one the current call needs, so a replica can
start with an empty disk and never fills it. A tree whose blob was evicted is rebuilt on
its next use. onnxruntime reads a graph once at load, so evicting the blob of a graph that
is being served costs nothing until it is loaded again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

from model_store.objects import ObjectStore


class BlobCache:
    def __init__(self, directory: Path | str, objects: ObjectStore, max_bytes: int) -> None:
        self.dir = Path(directory).resolve()
        self.blobs = self.dir / "blobs"
        self.trees = self.dir / "trees"
        self.objects = objects
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.trees.mkdir(parents=True, exist_ok=True)

    def blob(self, sha256: str, *, protect: frozenset[str] = frozenset()) -> Path:
        """The local path of blob ``sha256``, fetched (and verified) if it is not here."""
        path = self.blobs / sha256
        with self._lock, contextlib.suppress(FileNotFoundError):  # evicted meanwhile: fetch
            if path.is_file():
                os.utime(path)
                return path
        self.objects.get_blob(sha256, path)  # outside the lock: downloads may be long
        with self._lock:
            self.evict(protect | {sha256})
        return path

    def tree(self, name: str, files: Mapping[str, str]) -> Path:
        """A directory ``trees/<name>/`` whose entries (``files``: relative path -> sha256)
        are symlinks into the blob cache; built in a temporary directory and renamed into
        place, so a reader sees a whole tree or none. Fetches what is missing."""
        target = self.trees / name
        wanted = frozenset(files.values())
        for sha in wanted:  # fetched first: each one protected from the evictions after
            self.blob(sha, protect=wanted)
        with self._lock:
            if target.is_dir() and all((target / rel).resolve() == self.blobs / sha
                                       and (target / rel).is_file()
                                       for rel, sha in files.items()) and sum(
                    1 for p in target.rglob("*") if not p.is_dir()) == len(files):
                # (the count: a tree of an earlier dataset of the same id had other files)
                for sha in wanted:
                    os.utime(self.blobs / sha)
                return target
            staging = self.trees / f".{name.replace('/', '_')}.{uuid.uuid4().hex}"
            for rel, sha in files.items():
                link = staging / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(self.blobs / sha, link)
            staging.mkdir(parents=True, exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                doomed = self.trees / f".old.{uuid.uuid4().hex}"
                os.rename(target, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            os.rename(staging, target)
            return target

    def drop_tree(self, name: str) -> None:
        with self._lock:
            target = self.trees / name
            if target.is_dir():
                doomed = self.trees / f".old.{uuid.uuid4().hex}"
                os.rename(target, doomed)
                shutil.rmtree(doomed, ignore_errors=True)

    def bytes_used(self) -> int:
        total = 0
        for path in self.blobs.iterdir():
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def evict(self, protect: frozenset[str] | set[str] = frozenset()) -> int:
        """Remove least recently used blobs until the cache fits ``max_bytes``; returns
        how many bytes were freed. Blobs in ``protect`` stay even when the cap is passed
        (what one call needs is kept, however large)."""
        with self._lock:
            entries = []
            for path in self.blobs.iterdir():
                if path.name.startswith("."):
                    continue  # a download in progress
                with contextlib.suppress(FileNotFoundError):
                    stat = path.stat()
                    entries.append((stat.st_mtime, stat.st_size, path))
            used = sum(size for _, size, _ in entries)
            freed = 0
            for _, size, path in sorted(entries):
                if used - freed <= self.max_bytes:
                    break
                if path.name in protect:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    freed += size
            return freed
