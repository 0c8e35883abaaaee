"""Model store rules: immutable numbered versions, atomic active pointer, locked writers."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from model_store.errors import (
    ActivationRefused,
    InvalidName,
    ModelNotFound,
    VersionCorrupt,
    VersionNotFound,
)
from model_store.manifest import GraphSpec, Lineage, Manifest, ParityReport, TensorSpec
from model_store.store import ModelStore


def _manifest(task: str = "matte", passed: bool = True) -> Manifest:
    graph = GraphSpec(
        file="model.onnx",
        inputs=[TensorSpec(name="image", shape=["batch", 3, 320, 320])],
        outputs=[TensorSpec(name="mask", shape=["batch", 1, 320, 320])],
        opset=17,
    )
    return Manifest(
        model="x",
        version=0,
        task=task,
        arch="u2netp",
        graphs={"main": graph},
        parity=ParityReport(passed=passed, tolerance=1e-4, detail="" if passed else "too far"),
        lineage=Lineage(source="import"),
    )


def _publish(store: ModelStore, name: str, payload: bytes = b"onnx", **kw) -> Manifest:
    with store.staging(name) as staged:
        (staged / "model.onnx").write_bytes(payload)
        return store.publish(name, staged, _manifest(**kw))


def test_publish_numbers_versions_and_hashes_files(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    first = _publish(store, "matte", b"a")
    second = _publish(store, "matte", b"b")
    assert (first.version, second.version) == (1, 2)
    assert store.versions("matte") == [1, 2]
    on_disk = store.manifest("matte", 2)
    assert on_disk.files["model.onnx"].bytes == 1
    assert on_disk.files["model.onnx"].sha256 != store.manifest("matte", 1).files[
        "model.onnx"].sha256
    assert not any((tmp_path / "models" / "matte" / ".staging").iterdir())


def test_failed_staging_leaves_nothing_visible(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(RuntimeError), store.staging("matte") as staged:
        (staged / "model.onnx").write_bytes(b"half")
        raise RuntimeError("export crashed")
    with pytest.raises(ModelNotFound):
        store.versions("matte")
    assert store.list_models() == []


def test_activate_rollback_and_history(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for _ in range(3):
        _publish(store, "matte")
    assert store.active_version("matte") is None
    assert store.activate("matte", 1) is None
    assert store.activate("matte", 3) == 1
    assert store.rollback("matte") == 1
    assert store.active_version("matte") == 1
    assert [h["version"] for h in store.history("matte")] == [1, 3, 1]
    summary = store.list_models()[0]
    assert (summary.name, summary.task, summary.active) == ("matte", "matte", 1)


def test_rollback_walks_back_through_the_history(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for _ in range(4):
        _publish(store, "matte")
    for version in (1, 2, 3):
        store.activate("matte", version)
    assert store.rollback("matte") == 2
    assert store.rollback("matte") == 1  # not back to 3: a second rollback steps further
    with pytest.raises(ActivationRefused, match="no earlier active version"):
        store.rollback("matte")
    # A new activation starts a new step: rolling back from it returns to where it came from.
    store.activate("matte", 4)
    assert store.rollback("matte") == 1
    assert [h.get("rollback", False) for h in store.history("matte")] == [
        False, False, False, True, True, False, True]


def test_parity_failure_can_never_be_active(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _publish(store, "matte", passed=False)
    with pytest.raises(ActivationRefused, match="parity"):
        store.activate("matte", 1)
    assert store.active_version("matte") is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_every_activation_path_verifies_the_files(tmp_path: Path, damage: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A version whose file no longer matches its sha256 is refused by the store itself,
    so the API, the CLI and any code calling activate() all refuse it; nothing moves."""
    store = ModelStore(tmp_path)
    _publish(store, "matte", b"good")
    _publish(store, "matte", b"also")
    store.activate("matte", 1)
    graph = store.version_dir("matte", 2) / "model.onnx"
    if damage == "flip":
        graph.write_bytes(b"alsO")  # same size, other bytes
    elif damage == "truncate":
        graph.write_bytes(b"al")
    else:
        graph.unlink()
    with pytest.raises(VersionCorrupt, match="model.onnx") as caught:
        store.activate("matte", 2)
    assert caught.value.code == "version_corrupt" and caught.value.http_status == 409
    assert caught.value.details == {"version": "matte@2", "file": "model.onnx"}
    assert str(tmp_path) not in str(caught.value)
    assert store.active_version("matte") == 1 and len(store.history("matte")) == 1

    from worker.cli import main  # the `toonforge store activate` command

    assert main(["--store", str(tmp_path), "store", "activate", "matte", "2"]) == 1
    err = capsys.readouterr().err
    assert "matte@2 is corrupt" in err and "model.onnx" in err and str(tmp_path) not in err
    assert store.active_version("matte") == 1
    assert main(["--store", str(tmp_path), "store", "activate", "matte", "1"]) == 0


def test_errors_name_the_problem(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _publish(store, "matte")
    with pytest.raises(ModelNotFound):
        store.versions("nope")
    with pytest.raises(VersionNotFound):
        store.activate("matte", 9)
    with pytest.raises(InvalidName):
        store.model_dir("../etc")
    with pytest.raises(ActivationRefused, match="serves task"):
        _publish(store, "matte", task="classify")
    with pytest.raises(ActivationRefused, match="roll back"):
        store.rollback("matte")


def _activate_many(root: str, versions: list[int]) -> None:
    store = ModelStore(root)
    for v in versions:
        store.activate("matte", v)


def _publish_many(root: str, count: int) -> None:
    store = ModelStore(root)
    for _ in range(count):
        _publish(store, "matte")


def test_concurrent_writers_never_corrupt(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _publish(store, "matte")
    _publish(store, "matte")
    store.activate("matte", 1)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_activate_many, args=(str(tmp_path), [1, 2] * 40))
             for _ in range(3)]
    procs += [ctx.Process(target=_publish_many, args=(str(tmp_path), 5)) for _ in range(2)]
    for p in procs:
        p.start()
    seen = set()
    while any(p.is_alive() for p in procs):
        seen.add(store.active_version("matte"))  # never empty or half-written
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert seen <= {1, 2}
    assert store.versions("matte") == list(range(1, 13))
    assert len(store.history("matte")) == 241
