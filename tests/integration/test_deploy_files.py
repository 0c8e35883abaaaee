"""The deployment files (Dockerfile, docker-compose.yml, docs/DEPLOY.md) agree with the code.

No Docker engine is needed: the compose file is validated by Debian's `docker-compose`
(v1.29, `apt-get install -y docker-compose`) when the binary exists, and both files are
parsed here to check the topology. In CI (CI=true) a missing `docker-compose` fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import Settings
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY_DOC = ROOT / "docs" / "DEPLOY.md"

# TOONFORGE_* variables a process would read directly (not through Settings), with the file
# that reads them; the test checks the file really does.
NON_SETTINGS_VARS: dict[str, Path] = {}  # none: every TOONFORGE_* variable is a Settings field

SETTINGS_VARS = {f"TOONFORGE_{name.upper()}" for name in Settings.model_fields}


# ---------------------------------------------------------------------------- compose


def test_compose_validates_with_docker_compose():
    binary = shutil.which("docker-compose")
    if binary is None:
        message = ("docker-compose not found (Debian: apt-get install -y docker-compose); "
                   "the compose file was not validated")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POSTGRES_", "API_PORTS", "COMPOSE_"))}
    result = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr or result.stdout


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR} with an empty environment."""
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", value)
    return value.replace("$$", "$")


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _interpolate(str(v)) for k, v in env.items()}


def _volume_sources(service: dict[str, Any], target: str) -> set[str]:
    sources = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) >= 2 and parts[1] == target:
                sources.add(parts[0])
        elif volume.get("target") == target:
            sources.add(volume["source"])
    return sources


def test_compose_services(compose):
    assert {"redis", "postgres", "api", "worker"} <= set(compose["services"])
    assert compose["services"]["api"]["build"]["target"] == "api"
    assert compose["services"]["worker"]["build"]["target"] == "worker"
    assert compose["services"]["api"]["deploy"]["replicas"] == 2


def test_worker_reserves_an_nvidia_gpu(compose):
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               and (d.get("count") or d.get("device_ids")) for d in devices)


def test_api_and_worker_share_the_store_volume(compose):
    services = compose["services"]
    store = _env(services["api"])["TOONFORGE_STORE_DIR"]
    assert store == _env(services["worker"])["TOONFORGE_STORE_DIR"]
    api_sources = _volume_sources(services["api"], store)
    worker_sources = _volume_sources(services["worker"], store)
    assert api_sources and api_sources == worker_sources
    # a named volume (declared at the top level), not a per-container anonymous one
    assert api_sources <= set(compose.get("volumes") or {})


def test_api_and_worker_use_redis_and_postgres(compose):
    services = compose["services"]
    for name in ("api", "worker"):
        env = _env(services[name])
        assert env["TOONFORGE_BROKER_URL"].startswith("redis://redis:6379/"), name
        assert env["TOONFORGE_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert "@postgres:5432/" in env["TOONFORGE_DATABASE_URL"], name
        depends = services[name]["depends_on"]
        for dependency in ("redis", "postgres"):
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)
    assert _env(services["api"])["TOONFORGE_HOST"] == "0.0.0.0"
    providers = json.loads(_env(services["api"])["TOONFORGE_PROVIDERS"])
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_redis_and_postgres_persist_and_have_healthchecks(compose):
    redis, postgres = compose["services"]["redis"], compose["services"]["postgres"]
    command = redis["command"]
    command = " ".join(command) if isinstance(command, list) else command
    assert re.search(r"--appendonly\s+yes", command)
    assert _volume_sources(redis, "/data")
    assert _volume_sources(postgres, "/var/lib/postgresql/data")
    assert "healthcheck" in redis
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    postgres_env = postgres["environment"]
    for key in ("POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"):
        assert "${" + key + ":-" in str(postgres_env[key]), key  # from the env, with a default


def test_every_toonforge_variable_is_a_setting(compose):
    text = COMPOSE.read_text()
    used = set(re.findall(r"\bTOONFORGE_[A-Z0-9_]+", text))
    assert used, "the compose file sets no TOONFORGE_ variable"
    unknown = used - SETTINGS_VARS - set(NON_SETTINGS_VARS)
    assert not unknown, f"not Settings fields: {sorted(unknown)}"
    for var, reader in NON_SETTINGS_VARS.items():
        assert var in reader.read_text(), f"{var} is no longer read by {reader}"


def test_compose_values_parse_as_settings(compose, monkeypatch):
    for name in ("api", "worker"):
        for key in [k for k in os.environ if k.startswith("TOONFORGE_")]:
            monkeypatch.delenv(key)
        env = {k: v for k, v in _env(compose["services"][name]).items() if k in SETTINGS_VARS}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        assert str(settings.store_dir) == env["TOONFORGE_STORE_DIR"]
        assert settings.broker_url == env["TOONFORGE_BROKER_URL"]


# ------------------------------------------------------------------------- Dockerfile


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _stages() -> dict[str, dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for keyword, args in _instructions():
        if keyword == "FROM":
            words = args.split()
            image = next(w for w in words if not w.startswith("--"))
            name = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else None
            current = {"from": image, "instructions": []}
            stages[name or f"#{len(stages)}"] = current
        elif current is not None:
            current["instructions"].append((keyword, args))
    return stages


def _ancestry(stages: dict[str, dict[str, Any]], name: str) -> list[str]:
    chain = [name]
    while stages[chain[-1]]["from"] in stages:
        chain.append(stages[chain[-1]]["from"])
    return chain


def _runs(stage: dict[str, Any]) -> list[str]:
    return [args for keyword, args in stage["instructions"] if keyword == "RUN"]


def test_dockerfile_targets():
    stages = _stages()
    assert {"base", "api", "worker"} <= set(stages)
    assert re.fullmatch(r"python:(3\.11|\$\{PYTHON_VERSION\})-slim", stages["base"]["from"])
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", DOCKERFILE.read_text(), re.M)
    assert "worker" not in _ancestry(stages, "api")


def test_api_stage_never_installs_torch():
    stages = _stages()
    for name in _ancestry(stages, "api"):
        for run in _runs(stages[name]):
            assert "torch" not in run.lower(), (name, run)
    # what it copies from other stages (the app wheel) comes from torch-free stages too
    for keyword, args in stages["api"]["instructions"]:
        if keyword == "COPY" and "--from=" in args:
            source = re.search(r"--from=(\S+)", args).group(1)
            for name in _ancestry(stages, source):
                for run in _runs(stages[name]):
                    assert "torch" not in run.lower(), (name, run)
    runs = " ".join(_runs(stages["api"]))
    assert "onnxruntime-gpu" in runs
    assert "--no-deps" in runs  # the app wheel, so its CPU onnxruntime requirement is skipped


def test_worker_stage_installs_cuda_torch_matching_pyproject():
    stages = _stages()
    runs = " ".join(_runs(stages["worker"]))
    assert "download.pytorch.org/whl" in runs or "TORCH_INDEX_URL" in runs
    assert "https://download.pytorch.org/whl/${TORCH_CUDA}" in DOCKERFILE.read_text()
    args = dict(a.split("=", 1) for k, a in stages["worker"]["instructions"]
                if k == "ARG" and "=" in a)
    worker_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["worker"]
    pin = next(r for r in worker_extra if r.replace(" ", "").startswith("torch=="))
    assert args["TORCH_VERSION"] == pin.split("==", 1)[1].strip()


def test_both_targets_run_as_non_root_with_a_healthcheck():
    stages = _stages()
    commands = {"api": ["python", "-m", "service"], "worker": ["python", "-m", "worker"]}
    for name in ("api", "worker"):
        instructions = stages[name]["instructions"]
        users = [args for keyword, args in instructions if keyword == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), name
        checks = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
        assert checks and "CMD" in checks[-1], name
        # exec form: valid JSON, and valid Python where it is `python -c`
        cmd = json.loads(checks[-1][checks[-1].index("CMD") + 3:])
        if cmd[:2] == ["python", "-c"]:
            compile(cmd[2], f"{name}-healthcheck", "exec")
        cmds = [json.loads(args) for keyword, args in instructions if keyword == "CMD"]
        assert cmds and cmds[-1] == commands[name], name
    assert "/healthz" in " ".join(a for k, a in stages["api"]["instructions"] if k == "HEALTHCHECK")
    assert re.search(r"useradd .*--uid 10001", DOCKERFILE.read_text())


def test_dockerfile_copies_every_package():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]
    copied = " ".join(args for keyword, args in _stages()["wheel"]["instructions"]
                      if keyword == "COPY")
    for pattern in find["include"]:
        package = pattern.rstrip("*")
        # A package lives under one of the `where` roots ("." or "sdk"): copy that root.
        root = next(w for w in find.get("where", ["."]) if (ROOT / w / package).is_dir())
        expected = f"{package}/" if root == "." else f"{root}/"
        assert expected in copied, package
    assert "README.md" in copied  # pyproject's `readme`


# ------------------------------------------------------------------------- DEPLOY.md


def test_deploy_doc_lists_every_setting():
    text = DEPLOY_DOC.read_text()
    listed = set(re.findall(r"^\| `(TOONFORGE_[A-Z0-9_]+)` \|", text, re.M))
    assert listed == SETTINGS_VARS | set(NON_SETTINGS_VARS), (
        f"missing: {sorted(SETTINGS_VARS - listed)}, "
        f"stale: {sorted(listed - SETTINGS_VARS - set(NON_SETTINGS_VARS))}")


def _healthcheck(stage: str) -> list[str]:
    checks = [a for k, a in _stages()[stage]["instructions"] if k == "HEALTHCHECK"]
    return json.loads(checks[-1][checks[-1].index("CMD") + 3:])


def test_worker_healthcheck_sees_a_busy_worker(tmp_path):
    """The worker image's healthcheck, run against this code: healthy while this host's
    worker holds a job with a fresh heartbeat (the solo pool cannot answer pings then), not
    when that heartbeat is older than the lease (and no worker answers a ping)."""
    from datetime import timedelta

    from jobs.records import JobRecord, utcnow
    from worker.runtime import WorkerRuntime

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", store_dir=tmp_path / "store",
                        database_url=None, broker_url=None)
    runtime = WorkerRuntime.create(settings)  # the worker_id format a real worker uses
    with runtime.db.sessions() as session:
        session.add(JobRecord(task="matte", dataset_id="d", base="matte", target_model="m",
                              request_hash="x", status="running", worker_id=runtime.worker_id,
                              heartbeat_at=utcnow()))
        session.commit()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOONFORGE_")}
    env.update(PYTHONPATH=str(ROOT), TOONFORGE_DATA_DIR=str(tmp_path / "data"),
               TOONFORGE_STORE_DIR=str(tmp_path / "store"))
    command = _healthcheck("worker")
    assert command[:2] == ["python", "-c"]
    command = [sys.executable, *command[1:]]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60)

    busy = run()
    assert busy.returncode == 0, busy.stderr
    with runtime.db.sessions() as session:
        job = session.query(JobRecord).one()
        job.heartbeat_at = utcnow() - timedelta(seconds=settings.job_lease_s + 1)
        session.commit()
    stale = run()  # the embedded broker has no remote control: the ping gets no answer
    assert stale.returncode == 1, stale.stderr
    runtime.db.dispose()


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state():
    patterns = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text()
                .splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", ".env", "data", ".git"} <= patterns
    copied = [args.split()[0].rstrip("/") for keyword, args in _stages()["wheel"]["instructions"]
              if keyword == "COPY" and not args.startswith("--")]
    copied = [path for args in copied for path in args.split()]
    for path in [*copied, "pyproject.toml", "README.md"]:
        assert path not in patterns, f".dockerignore drops {path}, which the build copies"
