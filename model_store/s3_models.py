"""The versioned model store on an S3-compatible object store (``TOONFORGE_STORE_URL``).

    blobs/sha256/<hex>                          every file's bytes, content-addressed
    models/<m>/versions/<n>/manifest.json       the version: written LAST, If-None-Match: *
    models/<m>/active.json                      {"version": n | null, "history": [...]}

Same rules as the local store (model_store/store.py), kept without a lock server:

- A version is visible once its manifest exists, and its manifest is written after every
  blob it lists, so a reader never sees half a version. The manifest write is a
  conditional create: it *claims* number n, and a publisher that loses the race re-reads
  the line and tries n + 1, so two publishers never share a number or lose a version.
- ``active.json`` holds the pointer and the whole activation history in one object, moved
  by compare-and-swap (If-Match on the ETag that was read, If-None-Match: * for the first
  activation) and retried on a lost race, so no activation is lost and the history is the
  order the pointer really moved in.

``root`` is this process's private working directory (staging, the blob cache): never
shared between hosts. Readers that want files get a directory of links into the cache
(``local_version_dir``); blobs are verified against their sha256 when they arrive there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from pathlib import Path
from typing import Any

from model_store.cache import BlobCache
from model_store.errors import ManifestInvalid, ModelNotFound, VersionCorrupt, VersionNotFound
from model_store.files import MANIFEST_FILE
from model_store.manifest import FileEntry, Manifest, file_entries, parse_manifest
from model_store.notify import ActivationNotifier
from model_store.objects import BlobCorrupt, Conflict, ObjectStore, ObjectStoreUnavailable, blob_key
from model_store.store import NAME_RE, ModelStore, activation_entry, validate_name, write_atomic

CACHE_DIR = "cache"
STAGING_DIR = "staging"
JSON = "application/json"
# A lost conditional write is retried this many times (each retry re-reads first). Losing
# this often means many writers hammer one model line: the caller gets Conflict (409).
PUBLISH_ATTEMPTS = 64
ACTIVATE_ATTEMPTS = 64
_MANIFEST_MEMO = 1024  # manifests kept in memory (versions are immutable)


def models_prefix(name: str) -> str:
    return f"models/{validate_name(name)}/"


def manifest_key(name: str, version: int) -> str:
    return f"{models_prefix(name)}versions/{int(version)}/{MANIFEST_FILE}"


def active_key(name: str) -> str:
    return f"{models_prefix(name)}active.json"


def backoff(attempt: int) -> None:
    """A short random pause before retrying a lost conditional write, growing with the
    attempt, so losers do not collide again in lockstep."""
    time.sleep(random.uniform(0, 0.005 * min(attempt + 1, 20)))


def put_bytes_blob(objects: ObjectStore, data: bytes, scratch: Path) -> str:
    """Store ``data`` as a content-addressed blob (through a temporary file in
    ``scratch``, since blobs are uploaded from files); returns its sha256."""
    digest = hashlib.sha256(data).hexdigest()
    if objects.has_blob(digest, len(data)):
        return digest
    scratch.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=scratch, prefix=".blob.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        objects.put_blob(Path(tmp), digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return digest


_caches: dict[Path, BlobCache] = {}
_caches_lock = threading.Lock()


def shared_cache(directory: Path, objects: ObjectStore, max_bytes: int) -> BlobCache:
    """One ``BlobCache`` per cache directory in a process: the model and the dataset store
    of one process share its blobs, its byte cap and its lock (two caches on one directory
    would evict each other's blobs between a fetch and its use)."""
    key = Path(directory).resolve()
    with _caches_lock:
        cache = _caches.get(key)
        if (cache is None or cache.max_bytes != max_bytes
                or cache.objects.location != objects.location):
            cache = _caches[key] = BlobCache(key, objects, max_bytes)
        return cache


class S3ModelStore(ModelStore):
    def __init__(self, objects: ObjectStore, cache_dir: Path | str, *,
                 notifier: ActivationNotifier | None = None, cache_max_bytes: int) -> None:
        """The store in ``objects``; ``cache_dir`` is this process's own working directory
        (``self.root``: staging and the bounded blob cache, ``cache_max_bytes``)."""
        self.root = Path(cache_dir)
        self.notifier = notifier
        self.objects = objects
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache = shared_cache(self.root / CACHE_DIR, objects, cache_max_bytes)
        self.staging_dir = self.root / STAGING_DIR / "models"
        self._manifests: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._memo_lock = threading.Lock()

    # ----- paths: there is no model directory, only the local cache of one
    def model_dir(self, name: str) -> Path:
        raise NotImplementedError("an S3 model store has no local model directory")

    def active_path(self, name: str) -> Path:
        raise NotImplementedError("an S3 model store has no local active file")

    def version_dir(self, name: str, version: int) -> Path:
        """``local_version_dir``: fetches the version's files into the cache."""
        return self.local_version_dir(name, version)

    # ----- reading
    def model_names(self) -> list[str]:
        return [n for n in self.objects.children("models/") if NAME_RE.fullmatch(n)]

    def _numbers(self, name: str) -> list[int]:
        found = self.objects.children(f"{models_prefix(name)}versions/")
        return sorted(int(n) for n in found if n.isdigit())

    def versions(self, name: str) -> list[int]:
        numbers = self._numbers(name)
        if not numbers:
            raise ModelNotFound(f"model {name!r} does not exist")
        return numbers

    def _manifest_bytes(self, name: str, version: int) -> bytes:
        key = (validate_name(name), int(version))
        with self._memo_lock:
            data = self._manifests.get(key)
        if data is None:
            data = self.objects.get(manifest_key(name, version))
            if data is None:
                self.versions(name)  # raises ModelNotFound first when the model is missing
                raise VersionNotFound(f"model {name!r} has no version {version}")
            self._remember(key, data)
        return data

    def _remember(self, key: tuple[str, int], data: bytes) -> None:
        with self._memo_lock:
            self._manifests[key] = data
            self._manifests.move_to_end(key)
            while len(self._manifests) > _MANIFEST_MEMO:
                self._manifests.popitem(last=False)

    def manifest(self, name: str, version: int) -> Manifest:
        return parse_manifest(self._manifest_bytes(name, version), name, version)

    def _active_state(self, name: str) -> tuple[dict[str, Any], str] | None:
        """active.json and its ETag, or None before the first activation."""
        found = self.objects.get_tagged(active_key(name))
        if found is None:
            return None
        data, etag = found
        try:
            state = json.loads(data)
            if not isinstance(state, dict) or not isinstance(state.get("history", []), list):
                raise ValueError("not an object with a history list")
        except ValueError as exc:
            raise ManifestInvalid(f"model {name!r}: active.json is invalid ({exc})") from None
        return state, etag

    def active_version(self, name: str) -> int | None:
        found = self._active_state(name)
        if found is None:
            self.versions(name)
            return None
        version = found[0].get("version")
        return version if isinstance(version, int) and not isinstance(version, bool) else None

    def history(self, name: str) -> list[dict[str, Any]]:
        found = self._active_state(name)
        return [] if found is None else list(found[0].get("history", []))

    # ----- writing
    def _staging_root(self, name: str) -> Path:
        """Versions are built in this process's own directory (``publish`` uploads them)."""
        return self.staging_dir / validate_name(name)

    def publish(self, name: str, staged: Path, manifest: Manifest) -> Manifest:
        """Upload ``staged``'s files as blobs, then claim the next number by creating its
        manifest (If-None-Match: *); a lost claim re-reads the line and tries again.

        The manifest's ``model``, ``version`` and ``files`` are filled in here, and it is
        also kept as a blob so ``local_version_dir`` can lay it beside the files."""
        validate_name(name)
        files = file_entries(staged)
        for file, entry in files.items():
            self.objects.put_blob(staged / file, entry.sha256)
        for attempt in range(PUBLISH_ATTEMPTS):
            existing = self._numbers(name)
            if existing:
                # Checking the version just below the one claimed keeps the whole line on
                # one task: whoever claimed that one checked the one below it, and so on.
                self._check_task(name, existing[-1], manifest.task)
            number = (existing[-1] if existing else 0) + 1
            final = manifest.model_copy(update={"model": name, "version": number,
                                                "files": files})
            data = final.model_dump_json(indent=2).encode()
            write_atomic(staged / MANIFEST_FILE, data)
            self.objects.put_blob(staged / MANIFEST_FILE)
            try:
                self.objects.put(manifest_key(name, number), data, if_absent=True,
                                 content_type=JSON)
            except Conflict:
                backoff(attempt)
                continue
            self._remember((name, number), data)
            return final
        raise Conflict(f"publishing to model {name!r}: lost {PUBLISH_ATTEMPTS} races to"
                       " other publishers; try again")

    def verified_manifest(self, name: str, version: int) -> Manifest:
        """``servable_manifest``, after checking that every file the manifest lists (each
        graph file among them) has its blob in the object store with the listed size.

        The sha256 is not recomputed here (that would download every file into whichever
        process activates): a blob is hashed when it is fetched into a cache
        (``local_version_dir``), which refuses one that differs with ``VersionCorrupt``.
        Blobs are written once under their own hash, so a size that matches means the
        upload completed."""
        return super().verified_manifest(name, version)

    def _check_file(self, ref: str, name: str, version: int, file: str,
                    entry: FileEntry) -> None:
        try:
            key = blob_key(entry.sha256)
        except ValueError:
            raise VersionCorrupt(ref, file, f"{file} has no valid sha256 in the manifest"
                                 ) from None
        size = self.objects.size(key)
        if size is None:
            raise VersionCorrupt(ref, file, f"{file} is missing")
        if size != entry.bytes:
            raise VersionCorrupt(ref, file, f"{file} does not match its size in the manifest")

    def _move_active(self, name: str, version: int, *, rollback: bool) -> int | None:
        """Compare-and-swap of active.json: read it with its ETag, write the moved pointer
        and the longer history only if nobody wrote in between, else re-read and retry."""
        key = active_key(name)
        for attempt in range(ACTIVATE_ATTEMPTS):
            found = self._active_state(name)
            state, etag = found if found is not None else ({}, None)
            previous = state.get("version")
            history = [*state.get("history", []),
                       activation_entry(version, previous, rollback)]
            data = json.dumps({"version": int(version), "history": history}).encode()
            try:
                if etag is None:
                    self.objects.put(key, data, if_absent=True, content_type=JSON)
                else:
                    self.objects.put(key, data, if_match=etag, content_type=JSON)
            except Conflict:
                backoff(attempt)
                continue
            return previous if isinstance(previous, int) else None
        raise Conflict(f"activating {name}@{version}: lost {ACTIVATE_ATTEMPTS} races to"
                       " other activations; try again")

    # ----- local files
    def local_version_dir(self, name: str, version: int,
                          files: Collection[str] | None = None) -> Path:
        """A local directory of the version's files and its manifest.json: symlinks into
        the blob cache (``BlobCache.tree``), fetched and hashed on first use.

        A blob that is missing from the object store or whose bytes do not match its
        sha256 raises ``VersionCorrupt`` naming the file, as the local store's
        ``verified_manifest`` does."""
        data = self._manifest_bytes(name, version)
        manifest = self.manifest(name, version)
        ref = f"{name}@{int(version)}"
        wanted_names = None if files is None else set(files)
        tree_files: dict[str, str] = {}
        for file, entry in manifest.files.items():
            if "/" in file or file.startswith(".") or file == MANIFEST_FILE:
                raise VersionCorrupt(ref, file, f"{file} is not a plain file name")
            if wanted_names is None or file in wanted_names:
                tree_files[file] = entry.sha256
        digest = hashlib.sha256(data).hexdigest()
        if not (self.cache.blobs / digest).is_file():
            # Versions copied in by older tools may lack the manifest's own blob.
            put_bytes_blob(self.objects, data, self.staging_dir)
        tree_files[MANIFEST_FILE] = digest
        wanted = frozenset(tree_files.values())
        for file, sha in sorted(tree_files.items()):
            try:
                self.cache.blob(sha, protect=wanted)
            except BlobCorrupt:
                raise VersionCorrupt(ref, file, f"{file} does not match its sha256 in the"
                                     " manifest") from None
            except (ObjectStoreUnavailable, ValueError):
                try:
                    present = self.objects.has_blob(sha)
                except ValueError:
                    present = False
                if not present:
                    raise VersionCorrupt(ref, file, f"{file} is missing") from None
                raise
        # One tree per set of files, so a reader of a subset (the API: no weights.pt)
        # and a reader of all of them never rebuild each other's directory.
        subset = "all" if wanted_names is None else hashlib.sha256(
            "\n".join(sorted(tree_files)).encode()).hexdigest()[:12]
        return self.cache.tree(f"models/{name}/{int(version)}/{subset}", tree_files)
