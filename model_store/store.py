"""Versioned model store on a local directory (layout in docs/ARCHITECTURE.md).

    <root>/models/<model>/versions/<n>/{model.onnx, weights.pt, manifest.json, ...}
    <root>/models/<model>/active          the active version number (atomic replace)
    <root>/models/<model>/history.jsonl   every activation, for rollback and audit
    <root>/models/<model>/.staging/       versions being written (invisible to readers)

Versions are immutable. A version is complete before it is visible: it is written into
``.staging`` and renamed into ``versions/`` in one step. Activation and publication take
an exclusive file lock per model, so concurrent writers (API replicas, workers) never
interleave.

``S3ModelStore`` (model_store/s3_models.py) keeps the same rules on an object store: it
subclasses this class and replaces only the storage steps (listing, reading, ``publish``,
``_move_active``, ``_check_file``, ``local_version_dir``), so the rules built on them
(parity, task of a line, verification order, rollback, announcements) live here once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_store.errors import (
    ActivationRefused,
    InvalidName,
    ManifestCorrupt,
    ModelNotFound,
    StoreMissing,
    VersionCorrupt,
    VersionNotFound,
)
from model_store.files import MANIFEST_FILE
from model_store.manifest import FileEntry, Manifest, file_entries, parse_manifest, sha256_file
from model_store.notify import ActivationNotifier

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def validate_name(name: str, what: str = "model name") -> str:
    # No separators and no leading dot, so a name is never a path.
    if not NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid {what} {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def activation_entry(version: int, previous: int | None, rollback: bool) -> dict[str, Any]:
    """One line of a model's activation history (audit, ``rollback_target``)."""
    entry: dict[str, Any] = {"version": int(version), "previous": previous,
                             "at": datetime.now(UTC).isoformat()}
    if rollback:
        entry["rollback"] = True
    return entry


@dataclass(frozen=True)
class ModelSummary:
    name: str
    task: str
    versions: list[int]
    active: int | None


class ModelStore:
    def __init__(self, root: Path | str, *, create: bool = True,
                 notifier: ActivationNotifier | None = None) -> None:
        """The store at ``root``; ``create=False`` (commands that only read it) refuses a
        directory that does not exist instead of making an empty store there.
        ``notifier`` announces each activation to the API replicas (model_store/notify.py)."""
        self.root = Path(root)
        self.notifier = notifier
        self.models_dir = self.root / "models"
        if not create and not self.root.is_dir():
            raise StoreMissing(f"no model store at {self.root}: set TOONFORGE_STORE_DIR or"
                               " pass --store")
        self.models_dir.mkdir(parents=True, exist_ok=True)

    # ----- paths
    def model_dir(self, name: str) -> Path:
        return self.models_dir / validate_name(name)

    def version_dir(self, name: str, version: int) -> Path:
        return self.model_dir(name) / "versions" / str(int(version))

    def active_path(self, name: str) -> Path:
        return self.model_dir(name) / "active"

    # ----- reading
    def model_names(self) -> list[str]:
        return sorted(
            p.name for p in self.models_dir.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name)
        )

    def versions(self, name: str) -> list[int]:
        vdir = self.model_dir(name) / "versions"
        if not vdir.is_dir():
            raise ModelNotFound(f"model {name!r} does not exist")
        return sorted(int(p.name) for p in vdir.iterdir() if p.name.isdigit())

    def manifest(self, name: str, version: int) -> Manifest:
        path = self.version_dir(name, version) / MANIFEST_FILE
        if not path.is_file():
            self.versions(name)  # raises ModelNotFound first when the model is missing
            raise VersionNotFound(f"model {name!r} has no version {version}")
        return parse_manifest(path.read_bytes(), name, version)

    def active_version(self, name: str) -> int | None:
        try:
            text = self.active_path(name).read_text().strip()
        except FileNotFoundError:
            self.versions(name)
            return None
        return int(text) if text.isdigit() else None

    def task_of(self, name: str) -> str:
        """The task of the newest version whose manifest reads (a corrupt one is skipped:
        it must not hide the model; all corrupt: the newest one's ``ManifestCorrupt``)."""
        versions = self.versions(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} has no versions")
        first: ManifestCorrupt | None = None
        for version in reversed(versions):
            try:
                return self.manifest(name, version).task
            except ManifestCorrupt as exc:
                first = first or exc
        assert first is not None
        raise first

    def summary(self, name: str) -> ModelSummary:
        return ModelSummary(
            name=name,
            task=self.task_of(name),
            versions=self.versions(name),
            active=self.active_version(name),
        )

    def list_models(self, task: str | None = None) -> list[ModelSummary]:
        out = []
        for name in self.model_names():
            try:
                summary = self.summary(name)
            except ModelNotFound:
                continue  # a line whose first version is still being written
            except ManifestCorrupt as exc:  # every version corrupt: the others still list
                log.warning("model %r is left out of the list: %s", name, exc)
                continue
            if task is None or summary.task == task:
                out.append(summary)
        return out

    def history(self, name: str) -> list[dict[str, Any]]:
        path = self.model_dir(name) / "history.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # ----- writing
    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        mdir = self.model_dir(name)
        mdir.mkdir(parents=True, exist_ok=True)
        with open(mdir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield mdir
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _staging_root(self, name: str) -> Path:
        """Where versions of ``name`` are built (beside them, so publish is a rename)."""
        return self.model_dir(name) / ".staging"

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A private directory to build a version in; removed afterwards (a published one
        was renamed or uploaded away first)."""
        sdir = self._staging_root(name) / uuid.uuid4().hex
        sdir.mkdir(parents=True)
        try:
            yield sdir
        finally:
            shutil.rmtree(sdir, ignore_errors=True)

    def publish(self, name: str, staged: Path, manifest: Manifest) -> Manifest:
        """Give ``staged`` the next version number and make it visible in one rename.

        The manifest's ``model``, ``version`` and ``files`` are filled in here.
        """
        with self._locked(name) as mdir:
            vdir = mdir / "versions"
            vdir.mkdir(exist_ok=True)
            existing = sorted(int(p.name) for p in vdir.iterdir() if p.name.isdigit())
            if existing:
                self._check_task(name, existing[-1], manifest.task)
            number = (existing[-1] if existing else 0) + 1
            final = manifest.model_copy(
                update={"model": name, "version": number, "files": file_entries(staged)}
            )
            write_atomic(staged / MANIFEST_FILE, final.model_dump_json(indent=2).encode())
            os.rename(staged, vdir / str(number))
            return final

    def servable_manifest(self, name: str, version: int) -> Manifest:
        """The manifest of a version that may be served or activated: the one place the
        parity rule lives. ``ActivationRefused`` for a version that failed its ONNX parity
        check (it can never serve, by ``active`` or by ``?version=``)."""
        manifest = self.manifest(name, version)
        if not manifest.parity.passed:
            raise ActivationRefused(
                f"{name}@{version} failed its ONNX parity check and can never be active"
                f" ({manifest.parity.detail or 'see its manifest'})"
            )
        return manifest

    def verified_manifest(self, name: str, version: int) -> Manifest:
        """``servable_manifest``, after checking every file the manifest lists against its
        size and sha256 (and that each graph file is listed). ``VersionCorrupt`` names the
        first file that is missing or differs; the message carries no server path."""
        manifest = self.servable_manifest(name, version)
        ref = f"{name}@{int(version)}"
        if not manifest.files:
            raise VersionCorrupt(ref, None, "its manifest lists no files to verify")
        for graph in manifest.graphs.values():
            if graph.file not in manifest.files:
                raise VersionCorrupt(ref, graph.file, f"graph file {graph.file!r} is not"
                                     " listed with a sha256 in the manifest")
        for file, entry in sorted(manifest.files.items()):
            if "/" in file or file.startswith("."):
                raise VersionCorrupt(ref, file, f"{file} is missing")
            self._check_file(ref, name, version, file, entry)
        return manifest

    def _check_file(self, ref: str, name: str, version: int, file: str,
                    entry: FileEntry) -> None:
        """``VersionCorrupt`` unless ``file`` of the version matches ``entry`` (the local
        store hashes it: the files are right here)."""
        path = self.version_dir(name, version) / file
        if not path.is_file():
            raise VersionCorrupt(ref, file, f"{file} is missing")
        if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
            raise VersionCorrupt(ref, file, f"{file} does not match its sha256 in the"
                                 " manifest")

    def local_version_dir(self, name: str, version: int,
                          files: Collection[str] | None = None) -> Path:
        """A local directory holding the version's files (and its manifest.json), for
        readers that want paths (onnxruntime, torch.load). ``files``: only these are
        needed (a remote store fetches no others; the API never needs weights.pt). Here:
        the version directory itself. ``ModelNotFound`` / ``VersionNotFound`` when there
        is no such version."""
        self.manifest(name, version)
        return self.version_dir(name, version)

    def activate(self, name: str, version: int, *, rollback: bool = False) -> int | None:
        """Make ``version`` active; returns the previously active version. ``rollback``
        records the change as a step back (see ``rollback_target``).

        Every path that moves the pointer (the API, ``toonforge store activate``, the
        worker's auto-activation, rollback) comes through here, so here is where a version
        proves itself: its parity passed and its files match their hashes
        (``verified_manifest``). Versions are immutable, so the hashing runs before the
        lock is taken and does not hold up other writers."""
        self.verified_manifest(name, version)
        previous = self._move_active(name, int(version), rollback=rollback)
        if self.notifier is not None:  # after the move: replicas re-read the moved pointer
            self.notifier.announce(name, int(version))
        return previous

    def _move_active(self, name: str, version: int, *, rollback: bool) -> int | None:
        """Point ``active`` at ``version`` and append the history entry, as one step for
        every other writer; returns the version it pointed at before."""
        with self._locked(name) as mdir:
            self.servable_manifest(name, version)
            previous = self.active_version(name)
            write_atomic(mdir / "active", f"{int(version)}\n".encode())
            with open(mdir / "history.jsonl", "a") as fh:
                fh.write(json.dumps(activation_entry(version, previous, rollback)) + "\n")
        return previous

    def _check_task(self, name: str, latest: int, task: str) -> None:
        """A line serves one task: refuse a version of another task than ``latest``'s."""
        serves = self.manifest(name, latest).task
        if serves != task:
            raise ActivationRefused(f"model {name!r} serves task {serves!r}, not {task!r}")

    def rollback_target(self, name: str) -> int:
        """The version to step back to: the activation history replayed as a stack (an
        activation pushes, a rollback pops), so rolling back twice goes back two versions
        rather than toggling between the last two. Versions no longer in the store, and
        repeats of the current one, are skipped."""
        current = self.active_version(name)
        versions = set(self.versions(name))
        stack: list[int] = []
        for entry in self.history(name):
            version = int(entry["version"])
            if entry.get("rollback"):
                while stack and stack[-1] != version:
                    stack.pop()
                if not stack:
                    stack.append(version)
            elif not stack or stack[-1] != version:
                stack.append(version)
        for version in reversed(stack[:-1] if stack and stack[-1] == current else stack):
            if version != current and version in versions:
                return version
        raise ActivationRefused(f"model {name!r} has no earlier active version to roll back to")

    def rollback(self, name: str) -> int:
        """Re-activate the version that was active before the current one."""
        target = self.rollback_target(name)
        self.activate(name, target, rollback=True)
        return target
