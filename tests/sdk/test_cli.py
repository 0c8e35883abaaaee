"""The ``toonforge`` console script as a shell user runs it: a subprocess against the live
API (and its worker), checking outputs, messages and exit codes (docs/CLI.md)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.sdk.conftest import EPOCHS, NO_WEIGHTS_AE, REAL_AE, Stack
from tests.support.server import REPO
from tests.support.stores import remote_or_none

pytestmark = pytest.mark.timeout(180)

SCRIPT = Path(sys.executable).with_name("toonforge")
SERVER_MODULES = {"service", "worker", "jobs", "model_store", "torch"}


def toonforge(*args: str, url: str | None, cwd: Path | None = None, timeout: float = 120,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "TOONFORGE_URL"}, **(env or {})}
    if url is not None:
        env["TOONFORGE_URL"] = url
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


@pytest.fixture()
def cli(sdk_stack: Stack, tmp_path: Path):
    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return toonforge(*args, url=sdk_stack.url, cwd=tmp_path, timeout=timeout)

    return run


def write_images(folder: Path, photo: bytes) -> list[Path]:
    """Three images in a folder tree: PNG, JPEG, and a PNG in a sub-folder."""
    (folder / "sub").mkdir(parents=True)
    rgb = Image.open(io.BytesIO(photo)).convert("RGB")
    paths = [folder / "a.png", folder / "b.jpg", folder / "sub" / "c.png"]
    paths[0].write_bytes(photo)
    rgb.save(paths[1], format="JPEG")
    rgb.resize((48, 32)).save(paths[2], format="PNG")
    (folder / "notes.txt").write_text("not an image")
    return paths


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- packaging


def test_script_is_the_client_cli_with_admin_plugins() -> None:
    assert SCRIPT.exists(), "pip install -e '.[dev]' installs the toonforge script"
    proc = toonforge("--help", url=None)
    assert proc.returncode == 0
    for command in ("cartoonize", "matte", "infer", "classify", "generate", "autoencode",
                    "datasets", "finetune", "jobs", "models", "import", "store"):
        assert f"    {command} " in proc.stdout, command
    assert "exit codes:" in proc.stdout


def test_admin_store_runs_through_the_plugin_group(sdk_stack: Stack, tmp_path: Path) -> None:
    # The stack's store: its directory, or on S3 its bucket (the CLI with a dir of its own).
    remote = remote_or_none(sdk_stack.backend.store_dir)
    store = tmp_path / "cli-store" if remote else sdk_stack.backend.store_dir
    proc = toonforge("store", "--store", str(store), "list", url=None,
                     env=remote.env if remote else None)
    assert proc.returncode == 0, proc.stderr
    assert f"{REAL_AE}\tautoencode\tactive=1" in proc.stdout
    assert toonforge("import", "--help", url=None).stdout.startswith("usage: toonforge import")


def test_client_package_imports_no_server_module() -> None:
    check = ("import toonforge_client, toonforge_client.cli, sys; "
             f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_MODULES!r}); "
             "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_sdk_builds_a_client_only_distribution(tmp_path: Path) -> None:
    """``pip install ./sdk``'s wheel: toonforge_client only, httpx its only dependency."""
    source = tmp_path / "sdk"  # a copy: the build must not write build/ into the checkout
    shutil.copytree(REPO / "sdk", source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("toonforge_client-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = next(n for n in names if n.endswith("METADATA"))
        requires = [line for line in zf.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
        scripts = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {n.split("/")[0] for n in names if "dist-info" not in n} == {"toonforge_client"}
    assert [r.split()[1] for r in requires] == ["httpx>=0.27"]
    assert "toonforge = toonforge_client.cli:main" in scripts


def test_missing_admin_commands_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    """What a client-only install (no toonforge.admin entry points) answers: the torch-free
    commands point at the server package, the checkpoint readers at its worker extra."""
    from toonforge_client import cli

    monkeypatch.setattr(cli, "admin_commands", dict)
    for command in ("import", "pull"):
        assert cli.main([command, "x"]) == cli.EXIT_USAGE
        assert "install it with pip install 'toonforge[worker]'" in capsys.readouterr().err
    for command in ("keys", "store"):
        assert cli.main([command, "list"]) == cli.EXIT_USAGE
        message = capsys.readouterr().err
        assert "install it with pip install toonforge" in message, message
        assert "[worker]" not in message and "PyTorch" not in message
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "come with the server package" in capsys.readouterr().out


def assert_quiet_on_a_closed_pipe(*args: str, url: str | None = None) -> None:
    """The command's stdout is a pipe whose reader has gone (``| head`` that finished):
    no traceback, no BrokenPipeError, the exit status of a SIGPIPE."""
    env = {**os.environ, **({"TOONFORGE_URL": url} if url else {})}
    read, write = os.pipe()
    os.close(read)  # before the command writes a byte
    try:
        proc = subprocess.run([str(SCRIPT), *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=120)
    finally:
        os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.stderr == "" and proc.returncode == 141, (proc.returncode, proc.stderr)


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    assert_quiet_on_a_closed_pipe("pull", "--list")  # an admin command, through the CLI


# ---------------------------------------------------------------- inference


def test_cartoonize_a_folder(cli, photo: bytes, tmp_path: Path) -> None:
    write_images(tmp_path / "in", photo)
    proc = cli("cartoonize", "in", "-o", "out", "--progress", "-j", "3")
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.relative_to(tmp_path / "out").as_posix()
                     for p in (tmp_path / "out").rglob("*"))
    assert written == ["a.png", "b.png", "sub", "sub/c.png"]
    assert Image.open(tmp_path / "out" / "sub" / "c.png").size == (48, 32)
    assert "[########################] 3/3 100%" in proc.stderr  # the bar, forced on
    assert "cartoonize: 3 of 3 done (cartoon@1)" in proc.stderr


def test_portrait_one_file(cli, photo: bytes, tmp_path: Path) -> None:
    (tmp_path / "p.png").write_bytes(photo)
    proc = cli("portrait", "p.png", "--mode", "composite", "--crop", "none", "--sigma", "4",
               "--alpha", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "p.portrait.png").mode == "RGB"
    assert "(portrait@1)" in proc.stderr
    bad = cli("portrait", "p.png", "--alpha", "3")
    assert bad.returncode == 1 and "alpha" in bad.stderr


def test_matte_autoencode_one_file_and_default_names(cli, photo: bytes, tmp_path: Path
                                                     ) -> None:
    (tmp_path / "p.png").write_bytes(photo)
    proc = cli("matte", "p.png", "--mode", "cutout", "--model", "matte@2")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "p.matte.png").mode == "RGBA"
    assert "(matte@2)" in proc.stderr and "[#" not in proc.stderr  # no bar off a terminal

    proc = cli("autoencode", "p.png", "-o", "recon.png", "--size", "32")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "recon.png").size == (32, 32)

    write_images(tmp_path / "faces", photo)
    proc = cli("autoencode", "faces", "--model", REAL_AE)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "faces_autoencode").rglob("*.png"))) == 3


def test_classify_generate_interpolate_sample(cli, photo: bytes, tmp_path: Path) -> None:
    paths = write_images(tmp_path / "in", photo)
    proc = cli("classify", "in", "--top-k", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["file"]).name for r in lines] == [p.name for p in sorted(paths)]
    assert all(len(r["predictions"]) == 2 and r["model"] == "classify" for r in lines)
    text = cli("classify", "in/a.png")
    assert text.returncode == 0 and text.stdout.startswith("in/a.png\tlabel-")

    proc = cli("generate", "-n", "4", "--seed", "7", "-o", "grid.png")
    assert proc.returncode == 0 and "(anime-faces@1, seed 7)" in proc.stderr
    assert Image.open(tmp_path / "grid.png").format == "PNG"
    proc = cli("generate", "-n", "3", "--seed", "1", "--rank", "--separate", "-o", "each")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["000.png", "001.png",
                                                                     "002.png"]
    proc = cli("interpolate", "in/a.png", "in/b.jpg", "--steps", "3", "-o", "path.png")
    assert proc.returncode == 0 and (tmp_path / "path.png").exists()
    proc = cli("sample", "-n", "4", "--seed", "2")
    assert proc.returncode == 0 and "fitted latents" in proc.stderr
    assert (tmp_path / "samples.png").exists()


def test_one_refused_file_does_not_stop_the_folder(cli, photo: bytes, tmp_path: Path) -> None:
    write_images(tmp_path / "in", photo)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    proc = cli("cartoonize", "in", "-o", "out")
    assert proc.returncode == 1
    assert "broken.png: undecodable:" in proc.stderr
    assert "3 of 4 done (cartoon@1), 1 failed" in proc.stderr
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3


# ---------------------------------------------------------------- exit codes


def test_exit_codes(cli, sdk_stack: Stack, photo: bytes, tmp_path: Path) -> None:
    (tmp_path / "p.png").write_bytes(photo)
    refused = cli("models", "show", "no-such-model")
    assert refused.returncode == 1
    assert refused.stderr.startswith("toonforge: error: model_not_found: ")
    assert "Traceback" not in refused.stderr
    bad_param = cli("classify", "p.png", "--top-k", "0")
    assert bad_param.returncode == 1 and "invalid_parameter: top_k" in bad_param.stderr

    for usage in (cli("cartoonize"), cli("cartoonize", "missing.png"),
                  cli("models", "activate", "matte", "two"), cli("frobnicate"),
                  cli("generate", "--model", "x@y"), cli("finetune", "--task", "autoencode",
                                                         "--dataset", "d", "--base", "b",
                                                         "-p", "novalue")):
        assert usage.returncode == 2, (usage.args, usage.stderr)
        assert "Traceback" not in usage.stderr

    down = toonforge("models", "list", url=f"http://127.0.0.1:{closed_port()}", cwd=tmp_path)
    assert down.returncode == 3
    assert "cannot connect to http://127.0.0.1:" in down.stderr and "TOONFORGE_URL" in down.stderr
    flag = toonforge("--url", f"127.0.0.1:{closed_port()}", "cartoonize", "p.png", url=None,
                     cwd=tmp_path)
    assert flag.returncode == 3, flag.stderr


def test_infer_sends_any_task_to_the_generic_endpoint(cli, photo: bytes, tmp_path: Path
                                                      ) -> None:
    """``toonforge infer TASK`` reaches ``POST /infer/TASK`` (a plugin family's endpoint):
    the server's answer for a task without an image pipeline, or an unknown one, comes
    back as the error it is, per file."""
    (tmp_path / "p.png").write_bytes(photo)
    no_pipeline = cli("infer", "matte", "p.png")
    assert no_pipeline.returncode == 1 and "invalid_parameter" in no_pipeline.stderr
    unknown = cli("infer", "sketch", "p.png")
    assert unknown.returncode == 1 and "task_not_found" in unknown.stderr
    assert cli("infer", "matte").returncode == 2  # no input: a usage error


# ---------------------------------------------------------------- models, datasets, jobs


def test_models_commands(cli) -> None:
    listed = cli("models", "list")
    assert listed.returncode == 0
    assert any(line.split()[:3] == ["matte", "matte", "1"] for line in listed.stdout.splitlines())
    assert json.loads(cli("models", "list", "--json").stdout)[0]["name"]
    shown = cli("models", "show", "matte")
    assert shown.returncode == 0 and "matte (matte): active 1" in shown.stdout
    manifest = json.loads(cli("models", "show", "matte", "2").stdout)
    assert manifest["version"] == 2
    try:
        proc = cli("models", "activate", "matte", "2")
        assert proc.returncode == 0 and proc.stdout.strip() == "matte: active 1 -> 2"
        proc = cli("models", "rollback", "matte")
        assert proc.returncode == 0 and proc.stdout.strip() == "matte: active 2 -> 1"
    finally:
        assert cli("models", "activate", "matte", "1").returncode == 0


def test_datasets_commands(cli, sdk_stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "faces.zip").write_bytes(sdk_stack.dataset_zip)
    up = cli("datasets", "upload", "faces.zip", "--task", "autoencode", "--id", "cli-faces",
             "--name", "from the CLI", "--progress")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "cli-faces"
    size = len(sdk_stack.dataset_zip)
    assert "100%" in up.stderr and "upload [" in up.stderr, up.stderr
    assert "dataset cli-faces (autoencode): train" in up.stderr and size > 0

    listed = cli("datasets", "list", "--task", "autoencode")
    assert "cli-faces" in listed.stdout and "from the CLI" in listed.stdout
    assert json.loads(cli("datasets", "show", "cli-faces").stdout)["meta"]["id"] == "cli-faces"
    again = cli("datasets", "upload", "faces.zip", "--task", "autoencode", "--id", "cli-faces")
    assert again.returncode == 1 and "dataset_conflict" in again.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    invalid = cli("datasets", "upload", "empty", "--task", "autoencode")
    assert invalid.returncode == 1 and "dataset_invalid" in invalid.stderr
    assert cli("datasets", "delete", "cli-faces").returncode == 0
    assert cli("datasets", "show", "cli-faces").returncode == 1


def test_finetune_wait_and_jobs(cli, sdk_stack: Stack, dataset_id: str) -> None:
    sdk_stack.ready_worker()
    proc = cli("finetune", "--task", "autoencode", "--dataset", dataset_id, "--base", REAL_AE,
               "--target", "cli-ae", "-p", f"epochs={EPOCHS}", "-p", "early_stop_patience=null",
               "--hyperparameters", '{"batch_size": 4}', "--auto-activate", "--wait",
               "--progress")
    assert proc.returncode == 0, (proc.stderr, sdk_stack.logs())
    job_id = proc.stdout.split()[1]
    job = json.loads(cli("jobs", "show", job_id, "--json").stdout)
    # Whether the gate lets a 2-epoch version go live is the worker's call; the line says
    # which, and when not, the gate's reason and the command that activates it anyway.
    assert proc.stdout.strip() == f"job {job_id} succeeded: cli-ae@1" + (
        " (activated)" if job["activated"] else
        f" (not activated: {job['activation_reason']}; toonforge models activate cli-ae 1"
        " activates it)")
    assert f"job {job_id}: running" in proc.stderr
    assert f"[########################] {EPOCHS}/{EPOCHS} 100%" in proc.stderr
    assert "loss " in proc.stderr and "ETA " in proc.stderr

    listed = cli("jobs", "list", "--status", "succeeded")
    assert listed.returncode == 0 and job_id in listed.stdout
    shown = cli("jobs", "show", job_id)
    assert shown.returncode == 0 and f"epoch {EPOCHS}/{EPOCHS}" in shown.stdout
    assert f"published epoch {job['published_epoch']}: " in shown.stdout
    assert f"activation: {job['activation_reason']}" in shown.stdout
    assert json.loads(cli("jobs", "show", job_id, "--json").stdout)["id"] == job_id
    waited = cli("jobs", "wait", job_id)
    assert waited.returncode == 0 and "succeeded" in waited.stdout
    finished = cli("jobs", "cancel", job_id)
    assert finished.returncode == 1 and "job_conflict" in finished.stderr


def test_failed_and_cancelled_jobs_exit_4(cli, sdk_stack: Stack, dataset_id: str) -> None:
    sdk_stack.ready_worker()
    refused = cli("finetune", "--task", "autoencode", "--dataset", dataset_id, "--base",
                  "u2netp", "--target", "cli-bad", "-p", "epochs=1")
    assert refused.returncode == 1 and "invalid_parameter" in refused.stderr
    failed = cli("finetune", "--task", "autoencode", "--dataset", dataset_id, "--base",
                 NO_WEIGHTS_AE, "--target", "cli-bad", "-p", "epochs=1", "--wait")
    assert failed.returncode == 4, failed.stderr
    assert "failed" in failed.stdout and "toonforge: error: job" in failed.stderr
    failed_id = failed.stdout.split()[1]
    no_checkpoint = cli("jobs", "resume", failed_id)  # failed before its first checkpoint
    assert no_checkpoint.returncode == 1 and "job_conflict" in no_checkpoint.stderr

    queued = cli("finetune", "--task", "autoencode", "--dataset", dataset_id, "--base", REAL_AE,
                 "--target", "cli-cancel", "-p", "epochs=200")
    assert queued.returncode == 0
    job_id = queued.stdout.strip()
    timed_out = cli("jobs", "wait", job_id, "--wait-timeout", "0.5")
    assert timed_out.returncode == 5 and "goes on" in timed_out.stderr
    cancelled = cli("jobs", "cancel", job_id)
    assert cancelled.returncode == 0 and job_id in cancelled.stdout
    waited = cli("jobs", "wait", job_id)
    assert waited.returncode == 4 and "cancelled" in waited.stdout
    # A finished job has no ETA, in the API and in the CLI.
    assert json.loads(cli("jobs", "show", job_id, "--json").stdout)["eta_seconds"] is None
    shown = cli("jobs", "show", job_id)
    assert shown.returncode == 0 and "cancelled" in shown.stdout and "eta" not in shown.stdout
    # `toonforge jobs show ID | head`: the reader is gone before the output is written.
    assert_quiet_on_a_closed_pipe("jobs", "show", job_id, url=sdk_stack.url)
