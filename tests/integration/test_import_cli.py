"""``toonforge import`` as a user runs it: a subprocess on official-layout files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model_store.store import ModelStore
from tests.support.checkpoints import make_official_checkpoint

pytestmark = pytest.mark.local_store_only(
    "imports into the store directory that --store names")


def toonforge(store: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "--store", str(store), *args],
        capture_output=True, text=True, timeout=600,
    )


def assert_store_untouched(store: Path) -> None:
    models = store / "models"
    assert not models.exists() or not any(
        (m / "versions").exists() and any((m / "versions").iterdir()) for m in models.iterdir()
    ), "a refused import must write no version"


@pytest.mark.parametrize(
    ("task", "arch", "model"),
    [("matte", "u2netp", "matte-small"), ("cartoonize", "dctnet", "toon"),
     ("generate", "dcgan", "faces"), ("classify", "googlenet", "imagenet")],
)
def test_import_official_layout(task: str, arch: str, model: str, tmp_path: Path) -> None:
    parts = make_official_checkpoint(arch, tmp_path / "ckpt")
    args = ["import", "--task", task, "--arch", arch, "--model", model, "--activate"]
    args += ["--weights", str(parts.get("", parts.get("netg")))]
    if "netd" in parts:
        args += ["--netd", str(parts["netd"])]
    proc = toonforge(tmp_path / "store", *args)
    assert proc.returncode == 0, proc.stderr
    assert f"imported {model}@1" in proc.stdout

    store = ModelStore(tmp_path / "store")
    manifest = store.manifest(model, 1)
    assert store.active_version(model) == 1
    assert (manifest.task, manifest.arch) == (task, arch)
    assert manifest.parity.passed
    assert manifest.lineage.source == "import"
    assert set(manifest.lineage.checkpoint) == {p.name for p in parts.values()}
    assert {"model.onnx", "weights.pt"} <= set(manifest.files)
    if task == "classify":
        assert len(manifest.labels) == 1000 and manifest.labels[0] == "tench"

    listed = toonforge(tmp_path / "store", "store", "list")
    assert f"{model}\t{task}\tactive=1" in listed.stdout
    shown = json.loads(toonforge(tmp_path / "store", "store", "show", model, "1").stdout)
    assert shown["version"] == 1


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [("missing_key", "missing"), ("extra_key", "unexpected"), ("bad_shape", "shape"),
     ("truncated", "u2netp")],
)
def test_bad_checkpoint_is_refused_and_nothing_written(
    corrupt: str, expected: str, tmp_path: Path
) -> None:
    parts = make_official_checkpoint("u2netp", tmp_path / "ckpt", corrupt=corrupt)
    proc = toonforge(tmp_path / "store", "import", "--task", "matte", "--arch", "u2netp",
                     "--weights", str(parts[""]), "--model", "matte")
    assert proc.returncode == 1
    assert "toonforge: error:" in proc.stderr and expected in proc.stderr.lower()
    assert "Traceback" not in proc.stderr
    assert_store_untouched(tmp_path / "store")


def test_wrong_architecture_names_the_mismatched_keys(tmp_path: Path) -> None:
    parts = make_official_checkpoint("dcgan", tmp_path / "ckpt")
    proc = toonforge(tmp_path / "store", "import", "--task", "matte", "--arch", "u2netp",
                     "--weights", str(parts["netg"]), "--model", "matte")
    assert proc.returncode == 1
    assert "main.0.weight" in proc.stderr  # an unexpected key, named
    assert_store_untouched(tmp_path / "store")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--task", "classify", "--arch", "u2netp"], "does not serve task 'classify'"),
     (["--task", "generate", "--arch", "dcgan"], "--netd"),
     (["--task", "matte", "--arch", "resnet50"], "unknown architecture"),
     (["--task", "matte", "--arch", "u2netp", "--model", "Bad/Name"], "invalid model name")],
)
def test_refused_options(args: list[str], message: str, tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not used")
    if "--model" not in args:
        args = [*args, "--model", "m"]
    proc = toonforge(tmp_path / "store", "import", "--weights", str(weights), *args)
    assert proc.returncode == 1, proc.stdout
    assert message in proc.stderr
    assert_store_untouched(tmp_path / "store")


def test_store_commands_refuse_a_missing_store(tmp_path: Path) -> None:
    proc = toonforge(tmp_path / "nowhere", "store", "list")
    assert proc.returncode == 1
    assert "no model store" in proc.stderr and "TOONFORGE_STORE_DIR" in proc.stderr
    assert "--store" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "nowhere").exists()


def test_classifier_labels_must_match(tmp_path: Path) -> None:
    parts = make_official_checkpoint("googlenet", tmp_path / "ckpt")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    proc = toonforge(tmp_path / "store", "import", "--task", "classify", "--arch", "googlenet",
                     "--weights", str(parts[""]), "--model", "c", "--labels", str(labels))
    assert proc.returncode == 1
    assert "2 labels given" in proc.stderr
    assert_store_untouched(tmp_path / "store")


@pytest.mark.parametrize("names", [("cartoon_bg.pb", "cartoon_h.pb"),
                                   ("cartoon_anime_bg.pb", "cartoon_anime_h.pb")],
                         ids=["modelscope-names", "anime-names"])
def test_a_dctnet_release_folder_imports_as_one_compound_version(names, tmp_path: Path
                                                                 ) -> None:
    from tests.support.compound_release import write_release

    release = write_release(tmp_path / "release", names=names)
    proc = toonforge(tmp_path / "store", "import", "--task", "cartoonize", "--arch",
                     "dctnet-compound", "--weights", str(release), "--model", "toon")
    assert proc.returncode == 0, proc.stderr
    assert "imported toon@1 (cartoonize/dctnet-compound, inactive)" in proc.stdout
    manifest = ModelStore(tmp_path / "store").manifest("toon", 1)
    assert set(manifest.graphs) == {"main", "head"}
    assert [t.name for t in manifest.graphs["head"].outputs] == ["cartoon", "mask"]
    assert set(manifest.lineage.checkpoint) == {*names, "alpha.jpg"}
    assert manifest.preprocessing["short_side"] == 720


def test_a_release_folder_lacking_a_file_is_refused(tmp_path: Path) -> None:
    from tests.support.compound_release import write_release

    release = write_release(tmp_path / "release")
    (release / "alpha.jpg").unlink()
    proc = toonforge(tmp_path / "store", "import", "--task", "cartoonize", "--arch",
                     "dctnet-compound", "--weights", str(release), "--model", "toon")
    assert proc.returncode == 1
    assert "is not a dctnet-compound release folder: it lacks alpha.jpg" in proc.stderr
    flags = toonforge(tmp_path / "store", "import", "--task", "cartoonize", "--arch",
                      "dctnet-compound", "--weights", str(release), "--model", "toon",
                      "--head", str(release / "cartoon_h.pb"))
    assert flags.returncode == 1 and "is a release folder" in flags.stderr
    plain = toonforge(tmp_path / "store", "import", "--task", "cartoonize", "--arch",
                      "dctnet", "--weights", str(release), "--model", "toon")
    assert plain.returncode == 1 and "has no release folder layout" in plain.stderr
    assert_store_untouched(tmp_path / "store")
