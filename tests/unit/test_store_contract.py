"""One contract for both store backends: the local directory and S3 (moto's real server).

Every test takes ``backend`` (params "local" and "s3") and asserts what callers rely on,
whichever store they were given: numbered immutable versions, the task of a line, parity
and hash refusals, the active pointer with its history and rollback, writers racing in
threads and in processes, readers never seeing half a version, local files of a version,
datasets, job files, and the copy of a local store into S3.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobs.artifacts import (
    InvalidSampleName,
    JobArtifacts,
    S3JobArtifacts,
    SampleNotFound,
)
from model_store.dataset_schema import DatasetIndex, DatasetMeta, IntakeReport
from model_store.datasets import DatasetStore
from model_store.errors import (
    ActivationRefused,
    DatasetExists,
    DatasetInUse,
    DatasetNotFound,
    InvalidName,
    ModelNotFound,
    VersionCorrupt,
    VersionNotFound,
)
from model_store.manifest import GraphSpec, Lineage, Manifest, ParityReport, TensorSpec
from model_store.migrate import push_local_store
from model_store.objects import ObjectStore, blob_key
from model_store.s3_datasets import S3DatasetStore
from model_store.s3_models import S3ModelStore
from model_store.store import ModelStore

CACHE_BYTES = 64 * 1024 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- backends

Spec = tuple[str, str, str]  # ("local", root, "") or ("s3", url, endpoint): picklable


def open_models(spec: Spec, cache: Path) -> ModelStore:
    """The model store ``spec`` names, as another process or host would open it."""
    kind, where, endpoint = spec
    if kind == "local":
        return ModelStore(where)
    return S3ModelStore(ObjectStore.from_url(where, endpoint_url=endpoint), cache,
                        cache_max_bytes=CACHE_BYTES)


def open_datasets(spec: Spec, cache: Path) -> DatasetStore:
    kind, where, endpoint = spec
    if kind == "local":
        return DatasetStore(where)
    return S3DatasetStore(ObjectStore.from_url(where, endpoint_url=endpoint), cache,
                          cache_max_bytes=CACHE_BYTES)


def open_artifacts(spec: Spec, cache: Path) -> JobArtifacts:
    kind, where, endpoint = spec
    if kind == "local":
        return JobArtifacts(where)
    return S3JobArtifacts(ObjectStore.from_url(where, endpoint_url=endpoint), cache)


@dataclass
class Backend:
    kind: str
    spec: Spec
    tmp: Path
    models: ModelStore
    datasets: DatasetStore
    artifacts: JobArtifacts

    def host(self, name: str) -> tuple[ModelStore, DatasetStore, JobArtifacts]:
        """The same store seen from another host (S3: its own empty cache directory)."""
        cache = self.tmp / f"host-{name}"
        return (open_models(self.spec, cache), open_datasets(self.spec, cache),
                open_artifacts(self.spec, cache))

    def damage(self, name: str, version: int, file: str, how: str) -> None:
        """Break one stored file: "flip" (same size), "truncate" or "delete"."""
        entry = self.models.manifest(name, version).files[file]
        if self.kind == "local":
            path = self.models.version_dir(name, version) / file
            data = path.read_bytes()
            if how == "delete":
                path.unlink()
            else:
                path.write_bytes(_damaged(data, how))
            return
        objects = _objects(self.models)
        key = blob_key(entry.sha256)
        if how == "delete":
            objects.delete(key)
        else:
            objects.put(key, _damaged(objects.get(key) or b"", how))


def _damaged(data: bytes, how: str) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:] if how == "flip" else data[: len(data) // 2]


def _objects(store: ModelStore | DatasetStore) -> ObjectStore:
    assert isinstance(store, S3ModelStore | S3DatasetStore)
    return store.objects


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        spec: Spec = ("local", str(tmp_path / "store"), "")
    else:
        server = request.getfixturevalue("s3_server")
        spec = ("s3", server.new_store_url(), server.endpoint)
    cache = tmp_path / "host-main"
    return Backend(request.param, spec, tmp_path, open_models(spec, cache),
                   open_datasets(spec, cache), open_artifacts(spec, cache))


# ----------------------------------------------------------------------------- versions


def _manifest(task: str = "matte", passed: bool = True) -> Manifest:
    graph = GraphSpec(file="model.onnx",
                      inputs=[TensorSpec(name="image", shape=["batch", 3, 320, 320])],
                      outputs=[TensorSpec(name="mask", shape=["batch", 1, 320, 320])],
                      opset=17)
    return Manifest(model="x", version=0, task=task, arch="u2netp", graphs={"main": graph},
                    parity=ParityReport(passed=passed, tolerance=1e-4,
                                        detail="" if passed else "too far"),
                    lineage=Lineage(source="import"))


def _publish(store: ModelStore, name: str, payload: bytes = b"onnx",
             extra: dict[str, bytes] | None = None, **kw: Any) -> Manifest:
    with store.staging(name) as staged:
        (staged / "model.onnx").write_bytes(payload)
        for file, data in (extra or {}).items():
            (staged / file).write_bytes(data)
        return store.publish(name, staged, _manifest(**kw))


def test_publish_numbers_versions_and_records_files(backend: Backend) -> None:
    store = backend.models
    first = _publish(store, "matte", b"a", {"weights.pt": b"w" * 10})
    second = _publish(store, "matte", b"bb")
    assert (first.version, second.version, first.model) == (1, 2, "matte")
    assert store.versions("matte") == [1, 2] and store.model_names() == ["matte"]
    stored = store.manifest("matte", 1)
    assert stored == first
    assert {f: (e.sha256, e.bytes) for f, e in stored.files.items()} == {
        "model.onnx": (_sha(b"a"), 1), "weights.pt": (_sha(b"w" * 10), 10)}
    assert store.manifest("matte", 2).files["model.onnx"].bytes == 2
    assert store.task_of("matte") == "matte"
    _publish(store, "labels", b"c", task="classify")
    assert [(s.name, s.task, s.versions, s.active) for s in store.list_models()] == [
        ("labels", "classify", [1], None), ("matte", "matte", [1, 2], None)]
    assert [s.name for s in store.list_models("classify")] == ["labels"]
    # Another host sees the same store.
    other, _, _ = backend.host("other")
    assert other.versions("matte") == [1, 2] and other.manifest("matte", 2) == second


def test_failed_staging_and_bad_names_leave_nothing(backend: Backend) -> None:
    store = backend.models
    with pytest.raises(RuntimeError), store.staging("matte") as staged:
        (staged / "model.onnx").write_bytes(b"half")
        raise RuntimeError("export crashed")
    with pytest.raises(ModelNotFound):
        store.versions("matte")
    with pytest.raises(ModelNotFound):
        store.active_version("matte")
    assert store.list_models() == [] and store.history("matte") == []
    for bad in ("../etc", "UPPER", ".hidden", "a/b"):
        with pytest.raises(InvalidName):
            store.versions(bad)
    _publish(store, "matte")
    with pytest.raises(VersionNotFound):
        store.manifest("matte", 9)
    with pytest.raises(VersionNotFound):
        store.activate("matte", 9)
    with pytest.raises(VersionNotFound):
        store.local_version_dir("matte", 9)
    with pytest.raises(ModelNotFound):
        store.local_version_dir("nope", 1)


def test_a_line_serves_one_task(backend: Backend) -> None:
    _publish(backend.models, "matte")
    with pytest.raises(ActivationRefused, match="serves task 'matte', not 'classify'"):
        _publish(backend.models, "matte", task="classify")
    assert backend.models.versions("matte") == [1]


def test_parity_failure_can_never_be_active(backend: Backend) -> None:
    store = backend.models
    _publish(store, "matte", passed=False)
    with pytest.raises(ActivationRefused, match="parity"):
        store.activate("matte", 1)
    with pytest.raises(ActivationRefused, match="parity"):
        store.servable_manifest("matte", 1)
    assert store.active_version("matte") is None and store.history("matte") == []


def test_activate_history_and_rollback(backend: Backend) -> None:
    store = backend.models
    for _ in range(4):
        _publish(store, "matte")
    assert store.activate("matte", 1) is None
    assert store.activate("matte", 2) == 1
    assert store.activate("matte", 3) == 2
    assert store.rollback("matte") == 2
    assert store.rollback("matte") == 1  # a second rollback steps further back
    with pytest.raises(ActivationRefused, match="no earlier active version"):
        store.rollback("matte")
    store.activate("matte", 4)
    assert store.rollback("matte") == 1
    history = store.history("matte")
    assert [(h["version"], h["previous"], h.get("rollback", False)) for h in history] == [
        (1, None, False), (2, 1, False), (3, 2, False), (2, 3, True), (1, 2, True),
        (4, 1, False), (1, 4, True)]
    assert all(isinstance(h["at"], str) for h in history)
    assert store.active_version("matte") == 1
    assert store.summary("matte").active == 1
    assert backend.host("other")[0].active_version("matte") == 1


def test_activation_announces_after_the_pointer_moved(backend: Backend) -> None:
    seen: list[tuple[str, int, int | None]] = []
    kind, where, endpoint = backend.spec

    class Recorder:
        def announce(self, model: str, version: int) -> None:
            seen.append((model, version, reader.active_version(model)))

    if kind == "local":
        store: ModelStore = ModelStore(where, notifier=Recorder())
    else:
        store = S3ModelStore(ObjectStore.from_url(where, endpoint_url=endpoint),
                             backend.tmp / "notifying", notifier=Recorder(),
                             cache_max_bytes=CACHE_BYTES)
    reader = backend.host("reader")[0]
    _publish(store, "matte")
    store.activate("matte", 1)
    assert seen == [("matte", 1, 1)]  # a replica told of it reads the moved pointer


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_file_is_refused(backend: Backend, damage: str) -> None:
    """A version whose stored file was damaged never serves: the local store refuses to
    activate it (it hashes the files), the S3 store when the blob's size is wrong or it is
    missing, and, for bytes that changed at the same size, when the blob is fetched and
    hashed for loading (``local_version_dir``). The error names the file, no path."""
    store = backend.models
    _publish(store, "matte", b"good")
    _publish(store, "matte", b"also")
    store.activate("matte", 1)
    backend.damage("matte", 2, "model.onnx", damage)
    loader = backend.host("loader")[0]
    refused: list[VersionCorrupt] = []
    if backend.kind == "s3" and damage == "flip":
        store.activate("matte", 2)  # the sizes match: refused where the bytes are read
        with pytest.raises(VersionCorrupt, match="model.onnx") as caught:
            loader.local_version_dir("matte", 2)
        refused.append(caught.value)
    else:
        with pytest.raises(VersionCorrupt, match="model.onnx") as caught:
            store.activate("matte", 2)
        refused.append(caught.value)
        assert store.active_version("matte") == 1 and len(store.history("matte")) == 1
        if backend.kind == "s3":
            with pytest.raises(VersionCorrupt, match="model.onnx") as caught:
                loader.local_version_dir("matte", 2)
            refused.append(caught.value)
    for error in refused:
        assert error.code == "version_corrupt" and error.http_status == 409
        assert error.details == {"version": "matte@2", "file": "model.onnx"}
        assert str(backend.tmp) not in str(error)
    assert (loader.local_version_dir("matte", 1) / "model.onnx").read_bytes() == b"good"


def test_local_version_dir_holds_the_files_and_manifest(backend: Backend) -> None:
    files = {"weights.pt": os.urandom(3000), "latent_stats.npz": b"stats"}
    published = _publish(backend.models, "matte", b"graph", files)
    for store in (backend.models, backend.host("fresh")[0]):
        vdir = store.local_version_dir("matte", 1)
        assert sorted(p.name for p in vdir.iterdir()) == [
            "latent_stats.npz", "manifest.json", "model.onnx", "weights.pt"]
        assert (vdir / "model.onnx").read_bytes() == b"graph"
        for file, data in files.items():
            assert (vdir / file).read_bytes() == data
        assert Manifest.model_validate_json((vdir / "manifest.json").read_bytes()) == published
        assert store.local_version_dir("matte", 1) == vdir  # stable for the same version


def test_a_reader_of_some_files_fetches_only_those(backend: Backend) -> None:
    # The API asks for everything but weights.pt: on S3 that blob never reaches its disk.
    _publish(backend.models, "matte", b"graph", {"weights.pt": os.urandom(5000)})
    store = backend.host("api")[0]
    vdir = store.local_version_dir("matte", 1, ["model.onnx"])
    assert (vdir / "model.onnx").read_bytes() == b"graph"
    full = store.local_version_dir("matte", 1)
    assert (full / "weights.pt").stat().st_size == 5000
    if backend.kind == "s3":
        assert not (vdir / "weights.pt").exists() and vdir != full
        assert (vdir / "model.onnx").read_bytes() == b"graph"  # not undone by the full tree
    else:
        assert vdir == full  # the version directory itself


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_publishes_in_threads_lose_nothing(backend: Backend) -> None:
    payloads = [os.urandom(16) for _ in range(12)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def publish(mine: list[bytes]) -> None:
        try:
            barrier.wait()
            for payload in mine:
                _publish(backend.models, "matte", payload)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(payloads[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    store = backend.models
    assert store.versions("matte") == list(range(1, 13))
    stored = [store.manifest("matte", v).files["model.onnx"].sha256 for v in range(1, 13)]
    assert sorted(stored) == sorted(_sha(p) for p in payloads)  # each payload exactly once


def test_concurrent_activations_keep_every_history_entry(backend: Backend) -> None:
    store = backend.models
    _publish(store, "matte")
    _publish(store, "matte")
    barrier = threading.Barrier(4)

    def activate() -> None:
        barrier.wait()
        for version in [1, 2] * 5:
            store.activate("matte", version)

    threads = [threading.Thread(target=activate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = store.history("matte")
    assert len(history) == 40
    # Every move saw the pointer the one before it left: no write was lost in between.
    assert [h["previous"] for h in history[1:]] == [h["version"] for h in history[:-1]]
    assert store.active_version("matte") == history[-1]["version"]


def _write_from_a_process(spec: Spec, cache: str, task: str, out: str) -> None:
    store = open_models(spec, Path(cache))
    if task == "publish":
        published = []
        for _ in range(4):
            payload = os.urandom(16)
            _publish(store, "matte", payload)
            published.append(_sha(payload))
        Path(out).write_text(json.dumps(published))
    else:
        for version in [1, 2] * 8:
            store.activate("matte", version)


def test_writers_in_processes_never_corrupt(backend: Backend) -> None:
    """Two processes publish while two activate; meanwhile this process reads. Every
    number is used once, no version or activation is lost, and each version a reader
    can see is complete (its files all verify)."""
    store = backend.models
    _publish(store, "matte", b"one")
    _publish(store, "matte", b"two")
    store.activate("matte", 1)
    ctx = mp.get_context("spawn")
    outs = [backend.tmp / f"published-{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_write_from_a_process,
                         args=(backend.spec, str(backend.tmp / f"proc-{i}"), task, str(out)))
             for i, (task, out) in enumerate([("publish", outs[0]), ("publish", outs[1]),
                                              ("activate", ""), ("activate", "")])]
    for p in procs:
        p.start()
    seen_active: set[int | None] = set()
    checked = 0
    while any(p.is_alive() for p in procs):
        seen_active.add(store.active_version("matte"))
        newest = store.versions("matte")[-1]
        store.verified_manifest("matte", newest)  # visible means complete
        checked += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert checked > 0 and seen_active <= {1, 2}
    assert store.versions("matte") == list(range(1, 11))
    published = [sha for out in outs for sha in json.loads(out.read_text())]
    stored = [store.manifest("matte", v).files["model.onnx"].sha256 for v in range(3, 11)]
    assert sorted(stored) == sorted(published)
    history = store.history("matte")
    assert len(history) == 1 + 2 * 16
    assert [h["previous"] for h in history[1:]] == [h["version"] for h in history[:-1]]


def test_a_reader_never_sees_half_a_version(backend: Backend) -> None:
    store = backend.models
    done = threading.Event()
    problems: list[str] = []

    def read() -> None:
        reader = backend.host("reader")[0]
        while not done.is_set():
            try:
                versions = reader.versions("matte")
            except ModelNotFound:
                continue
            for version in versions:
                try:
                    manifest = reader.verified_manifest("matte", version)
                    vdir = reader.local_version_dir("matte", version)
                    if sorted(manifest.files) != ["a.bin", "b.bin", "model.onnx"]:
                        problems.append(f"v{version} lists {sorted(manifest.files)}")
                    for file, entry in manifest.files.items():
                        if _sha((vdir / file).read_bytes()) != entry.sha256:
                            problems.append(f"v{version}: {file} differs")
                except Exception as exc:  # a half-written version would land here
                    problems.append(f"v{version}: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(6):
            _publish(store, "matte", os.urandom(64),
                     {"a.bin": os.urandom(2000), "b.bin": os.urandom(5000)})
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert store.versions("matte") == list(range(1, 7))


# ----------------------------------------------------------------------------- S3 cache


def test_the_cache_stays_under_its_bound(s3_server: Any, tmp_path: Path) -> None:
    """Blobs beyond the byte cap go least recently used first, never one the current call
    needs; a version whose blob went is fetched again on its next use."""
    objects = ObjectStore.from_url(s3_server.new_store_url(), endpoint_url=s3_server.endpoint)
    publisher = S3ModelStore(objects, tmp_path / "publisher", cache_max_bytes=CACHE_BYTES)
    payloads = {v: os.urandom(20_000) for v in (1, 2, 3)}
    for version in (1, 2, 3):
        _publish(publisher, "matte", payloads[version])
    cap = 50_000  # two versions fit (20 kB graph + a ~1 kB manifest each), three do not
    store = S3ModelStore(objects, tmp_path / "small", cache_max_bytes=cap)
    first = store.local_version_dir("matte", 1)
    time.sleep(0.02)  # mtimes order the blobs
    store.local_version_dir("matte", 2)
    assert (first / "model.onnx").is_file() and store.cache.bytes_used() <= cap
    time.sleep(0.02)
    store.local_version_dir("matte", 3)
    assert store.cache.bytes_used() <= cap
    assert not (first / "model.onnx").is_file()  # version 1 was least recently used
    again = store.local_version_dir("matte", 1)  # rebuilt: fetched and linked again
    assert (again / "model.onnx").read_bytes() == payloads[1]
    assert store.cache.bytes_used() <= cap
    tiny = S3ModelStore(objects, tmp_path / "tiny", cache_max_bytes=1000)
    vdir = tiny.local_version_dir("matte", 2)  # bigger than the cap: what it needs stays
    assert (vdir / "model.onnx").read_bytes() == payloads[2]


# ----------------------------------------------------------------------------- datasets


def _stage_dataset(staged: Path, dataset_id: str,
                   images: dict[str, bytes]) -> tuple[DatasetMeta, IntakeReport, DatasetIndex]:
    for rel, data in images.items():
        path = staged / "data" / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    samples = [{"path": f"images/{rel}", "width": 8, "height": 8} for rel in sorted(images)]
    counts = {"train": len(samples) - 1, "val": 1}
    index = DatasetIndex(task="autoencode",
                         splits={"train": samples[:-1], "val": samples[-1:]})
    report = IntakeReport(task="autoencode", can_train=True, counts=counts,
                          files_seen=len(images), files_accepted=len(images))
    meta = DatasetMeta(id=dataset_id, task="autoencode", name=dataset_id,
                       bytes=sum(len(d) for d in images.values()), filename="up.zip",
                       counts=counts)
    return meta, report, index


def _images(n: int = 4) -> dict[str, bytes]:
    return {f"{i}.png": os.urandom(100 + i) for i in range(n)} | {
        "nested/deep.png": os.urandom(50)}


def _publish_dataset(store: DatasetStore, dataset_id: str,
                     images: dict[str, bytes]) -> tuple[DatasetMeta, DatasetIndex]:
    with store.staging() as staged:
        meta, report, index = _stage_dataset(staged, dataset_id, images)
        store.publish(staged, meta, report, index)
    return meta, index


def test_datasets_publish_list_read_and_delete(backend: Backend) -> None:
    store = backend.datasets
    images = _images()
    meta, index = _publish_dataset(store, "faces", images)
    _publish_dataset(store, "more", _images(2))
    assert store.ids() == ["faces", "more"]
    assert [m.id for m in store.list_datasets("autoencode")] == ["faces", "more"]
    assert store.list_datasets("matte") == []
    assert store.get("faces") == meta and store.index("faces") == index
    assert store.report("faces").counts == {"train": 4, "val": 1}
    with pytest.raises(DatasetExists):
        _publish_dataset(store, "faces", images)
    _, other, _ = backend.host("trainer")
    data = other.data_dir("faces")
    assert data.name == "data" and store.path("faces").name == "faces"
    for rel, content in images.items():
        assert (data / "images" / rel).read_bytes() == content
    # Beside data/: the index and report, as a trainer reads them (load_index).
    assert DatasetIndex.model_validate_json((data.parent / "index.json").read_bytes()) == index
    assert (data.parent / "report.json").is_file()
    with pytest.raises(DatasetInUse):
        store.delete("faces", in_use=lambda dataset_id: dataset_id == "faces")
    assert store.get("faces") == meta
    store.delete("faces")
    for read in (store.get, store.index, store.report, store.data_dir, other.get):
        with pytest.raises(DatasetNotFound):
            read("faces")
    with pytest.raises(DatasetNotFound):
        store.delete("faces")
    assert store.ids() == ["more"]
    with pytest.raises(InvalidName):
        store.get("../etc")
    # The id can be used again, and a host that had the old files sees only the new ones.
    fresh = {"0.png": b"new", "1.png": b"newer", "2.png": b"newest"}
    _publish_dataset(store, "faces", fresh)
    data = other.data_dir("faces")
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png")) == [
        f"images/{rel}" for rel in sorted(fresh)]
    assert (data / "images" / "1.png").read_bytes() == b"newer"


def test_same_dataset_id_race_has_one_winner(backend: Backend) -> None:
    store = backend.datasets
    contenders = {i: {f"{j}.png": os.urandom(64) for j in range(3 + i)} for i in range(4)}
    staged: dict[int, tuple[Path, DatasetMeta, IntakeReport, DatasetIndex]] = {}
    stacks = []
    for i, images in contenders.items():
        ctx = store.staging()
        path = ctx.__enter__()
        stacks.append(ctx)
        staged[i] = (path, *_stage_dataset(path, "shared", images))
    barrier = threading.Barrier(len(staged))
    outcome: dict[int, str] = {}

    def publish(i: int) -> None:
        path, meta, report, index = staged[i]
        barrier.wait()
        try:
            store.publish(path, meta, report, index)
            outcome[i] = "won"
        except DatasetExists:
            outcome[i] = "exists"

    threads = [threading.Thread(target=publish, args=(i,)) for i in staged]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ctx in stacks:
        ctx.__exit__(None, None, None)
    winners = [i for i, result in outcome.items() if result == "won"]
    assert len(winners) == 1 and len(outcome) == len(staged)
    won = winners[0]
    # The dataset is the winner's alone: its index, and its files under data/.
    assert store.index("shared") == staged[won][3]
    data = backend.host("reader")[1].data_dir("shared")
    assert {p.name: p.read_bytes() for p in (data / "images").iterdir()} == contenders[won]


# ----------------------------------------------------------------------------- job files


def test_job_artifacts_push_pull_and_samples(backend: Backend) -> None:
    artifacts = backend.artifacts
    work = artifacts.work_dir("job1")
    (work / "samples").mkdir(parents=True)
    (work / "checkpoint.pt").write_bytes(b"ckpt-1")
    (work / "best.pt").write_bytes(b"best-1")
    (work / "samples" / "ae_epoch_002.png").write_bytes(b"two")
    (work / "samples" / "ae_epoch_001.png").write_bytes(b"one")
    (work / "samples" / "notes.txt").write_bytes(b"not a sample")
    if backend.kind == "s3":
        assert artifacts.list_samples("job1") == []  # written locally, not pushed yet
    artifacts.push("job1", work)
    api = backend.host("api")[2]
    assert [(s.name, s.epoch, s.bytes) for s in api.list_samples("job1")] == [
        ("ae_epoch_001.png", 1, 3), ("ae_epoch_002.png", 2, 3)]
    assert api.sample_path("job1", "ae_epoch_002.png").read_bytes() == b"two"
    for bad in ("../checkpoint.pt", "x.txt", "../../etc/passwd.png", "a/b.png"):
        with pytest.raises(InvalidSampleName):
            api.sample_path("job1", bad)
    with pytest.raises(SampleNotFound):
        api.sample_path("job1", "ae_epoch_003.png")
    assert api.list_samples("nobody") == [] and not api.has_checkpoint("nobody")
    assert api.has_checkpoint("job1")
    # A later epoch: only what changed goes up, and a new host resumes from it.
    (work / "checkpoint.pt").write_bytes(b"ckpt-2")
    (work / "samples" / "ae_epoch_003.png").write_bytes(b"three")
    artifacts.push("job1", work)
    assert [s.name for s in api.list_samples("job1")][-1] == "ae_epoch_003.png"
    resumer = backend.host("resumer")[2]
    resumer.copy_checkpoint("job1", "job2")
    assert resumer.has_checkpoint("job2")
    target = resumer.work_dir("job2")
    target.mkdir(parents=True, exist_ok=True)
    resumer.pull("job2", target)
    assert (target / "checkpoint.pt").read_bytes() == b"ckpt-2"
    assert (target / "best.pt").read_bytes() == b"best-1"
    resumer.discard("job2")
    assert not api.has_checkpoint("job2") and api.has_checkpoint("job1")


# ----------------------------------------------------------------------------- migration


@pytest.fixture()
def local_store(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "old-store"
    store = ModelStore(root)
    for payload in (b"m1", b"m2", b"m3"):
        _publish(store, "matte", payload, {"weights.pt": payload * 100})
    for version in (1, 2, 3):
        store.activate("matte", version)
    store.rollback("matte")  # active 2, and the next rollback goes to 1
    _publish(store, "labels", b"c1", task="classify")
    _publish_dataset(DatasetStore(root), "faces", _images())
    yield root


def test_push_copies_a_local_store_into_s3(local_store: Path, s3_server: Any,
                                           tmp_path: Path) -> None:
    url = s3_server.new_store_url()
    spec: Spec = ("s3", url, s3_server.endpoint)
    models = open_models(spec, tmp_path / "pusher")
    datasets = open_datasets(spec, tmp_path / "pusher")
    assert isinstance(models, S3ModelStore) and isinstance(datasets, S3DatasetStore)
    summary = push_local_store(local_store, models, datasets)
    assert sorted(summary.versions_copied) == ["labels@1", "matte@1", "matte@2", "matte@3"]
    assert sorted(summary.pointers_copied) == ["matte"]
    assert summary.datasets_copied == ["faces"] and summary.corrupt_files == []
    old, old_datasets = ModelStore(local_store), DatasetStore(local_store)
    s3, s3_datasets = open_models(spec, tmp_path / "reader"), open_datasets(
        spec, tmp_path / "reader")
    assert s3.model_names() == old.model_names()
    for name in old.model_names():
        assert s3.versions(name) == old.versions(name)
        assert s3.active_version(name) == old.active_version(name)
        assert s3.history(name) == old.history(name)
        for version in old.versions(name):
            assert s3.manifest(name, version) == old.manifest(name, version)
            mine, theirs = old.local_version_dir(name, version), s3.local_version_dir(
                name, version)
            assert {p.name: p.read_bytes() for p in mine.iterdir() if p.is_file()} == {
                p.name: p.read_bytes() for p in theirs.iterdir()}
    assert s3.rollback_target("matte") == old.rollback_target("matte") == 1
    assert s3_datasets.get("faces") == old_datasets.get("faces")
    assert s3_datasets.index("faces") == old_datasets.index("faces")
    data = s3_datasets.data_dir("faces")
    for path in old_datasets.data_dir("faces").rglob("*.png"):
        rel = path.relative_to(old_datasets.data_dir("faces"))
        assert (data / rel).read_bytes() == path.read_bytes()
    # The copy carries on as a store: a new version takes the next number.
    assert _publish(s3, "matte", b"m4").version == 4
    # Again: everything is there already, nothing is overwritten (not even the pointer).
    s3.activate("matte", 4)
    again = push_local_store(local_store, models, datasets)
    assert again.versions_copied == [] and again.datasets_copied == []
    assert sorted(again.versions_skipped) == sorted(summary.versions_copied)
    assert again.pointers_skipped == ["matte"] and again.datasets_skipped == ["faces"]
    assert s3.active_version("matte") == 4


def test_push_never_launders_a_damaged_version(local_store: Path, s3_server: Any,
                                               tmp_path: Path) -> None:
    old = ModelStore(local_store)
    graph = old.version_dir("matte", 2) / "model.onnx"
    graph.write_bytes(b"M2")  # same size, other bytes
    spec: Spec = ("s3", s3_server.new_store_url(), s3_server.endpoint)
    models = open_models(spec, tmp_path / "pusher")
    datasets = open_datasets(spec, tmp_path / "pusher")
    assert isinstance(models, S3ModelStore) and isinstance(datasets, S3DatasetStore)
    summary = push_local_store(local_store, models, datasets)
    assert summary.corrupt_files == ["matte@2: model.onnx"]
    with pytest.raises(VersionCorrupt, match="model.onnx"):
        old.activate("matte", 2)
    with pytest.raises(VersionCorrupt, match="model.onnx"):
        models.activate("matte", 2)
