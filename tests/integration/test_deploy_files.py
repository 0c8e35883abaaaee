"""The deployment files (Dockerfile, docker-compose.yml, docs/DEPLOY.md) agree with the code.

No Docker engine is needed: the compose file is validated by Debian's `docker-compose`
(v1.29, `apt-get install -y docker-compose`) when the binary exists, and both files are
parsed here to check the topology. In CI (CI=true) a missing `docker-compose` fails. The
S3 parts that can run without Docker run for real: the images' requirement lists are
computed by the Dockerfile's own commands and their dependency trees walked in this
environment, and DEPLOY.md's conditional-write probe runs against moto's S3 server (and
against a proxy in front of it that drops the conditional headers, as a store that
ignores them would).
"""

from __future__ import annotations

import http.client
import http.server
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.settings import Settings
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY_DOC = ROOT / "docs" / "DEPLOY.md"
S3_POLICY = ROOT / "deploy" / "s3-policy.json"

# The compose file's store: the bucket minio-init creates, under this prefix.
STORE_URL = "s3://toonforge/store"
MINIO_ENDPOINT = "http://minio:9000"
# Never in the API image, directly or through any dependency.
API_FORBIDDEN = {"torch", "mlflow", "mlflow-skinny", "tensorboard"}

# TOONFORGE_* variables a process would read directly (not through Settings), with the file
# that reads them; the test checks the file really does.
NON_SETTINGS_VARS: dict[str, Path] = {}  # none: every TOONFORGE_* variable is a Settings field

SETTINGS_VARS = {f"TOONFORGE_{name.upper()}" for name in Settings.model_fields}


# ---------------------------------------------------------------------------- compose


# Variables the compose file reads from the shell / .env: left out of its validation, so
# the defaults are what is checked.
COMPOSE_VAR_PREFIXES = ("POSTGRES_", "API_PORTS", "COMPOSE_", "AWS_", "MINIO_", "TRACKING_",
                        "MLFLOW_", "TENSORBOARD_")


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = ("docker-compose not found (Debian: apt-get install -y docker-compose); "
                   "the compose file was not validated")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _compose_config(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(COMPOSE_VAR_PREFIXES)}
    return subprocess.run([_docker_compose(), "-f", str(COMPOSE), *args, "config"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("profile", [None, "tracking"])
def test_compose_validates_with_docker_compose(profile):
    result = _compose_config(*(["--profile", profile] if profile else []))
    assert result.returncode == 0, result.stderr or result.stdout
    resolved = yaml.safe_load(result.stdout)["services"]
    # (v1's `config` lists every service; the profile decides what `up` starts)
    profiles = {name: service.get("profiles", []) for name, service in resolved.items()}
    assert profiles == {"redis": [], "postgres": [], "minio": [], "minio-init": [], "api": [],
                        "worker": [], "mlflow": ["tracking"], "tensorboard": ["tracking"]}


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


def _raw_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {k: str(v) for k, v in env.items()}


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of the service's named-volume (or bind) mounts."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) >= 2:
                out[parts[1]] = parts[0]
        elif volume.get("source"):
            out[volume["target"]] = volume["source"]
    return out


def _anonymous_volumes(service: dict[str, Any]) -> set[str]:
    return {v for v in service.get("volumes", []) if isinstance(v, str) and ":" not in v}


def test_api_and_worker_use_the_s3_store(compose):
    services = compose["services"]
    for name in ("api", "worker"):
        env, raw = _env(services[name]), _raw_env(services[name])
        assert env["TOONFORGE_STORE_URL"] == STORE_URL, name
        assert env["TOONFORGE_S3_ENDPOINT_URL"] == MINIO_ENDPOINT, name
        # credentials from the shell / .env, with local-only defaults
        assert raw["AWS_ACCESS_KEY_ID"].startswith("${AWS_ACCESS_KEY_ID:-"), name
        assert raw["AWS_SECRET_ACCESS_KEY"].startswith("${AWS_SECRET_ACCESS_KEY:-"), name
        # not before the bucket and the app's user exist
        assert (services[name]["depends_on"]["minio-init"]["condition"]
                == "service_completed_successfully"), name


def test_each_api_replica_and_worker_has_its_own_cache(compose):
    """With an S3 store, store_dir is private: an anonymous volume per container (Compose
    gives each replica its own), never a named volume two containers would share."""
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    for name in ("api", "worker"):
        store_dir = _env(services[name])["TOONFORGE_STORE_DIR"]
        assert store_dir in _anonymous_volumes(services[name]), name
        assert store_dir not in _named_volumes(services[name]), name
    assert "store" not in declared  # the old shared store volume is gone
    # the one named volume two services share is TensorBoard's log dir
    shared: dict[str, set[str]] = {}
    for name, service in services.items():
        for source in _named_volumes(service).values():
            if source in declared:
                shared.setdefault(source, set()).add(name)
    assert {v: s for v, s in shared.items() if len(s) > 1} == {
        "tensorboard": {"worker", "tensorboard"}}
    tensorboard_dir = _env(services["worker"])["TOONFORGE_TENSORBOARD_DIR"]
    assert _named_volumes(services["worker"])[tensorboard_dir] == "tensorboard"
    assert _named_volumes(services["tensorboard"])[tensorboard_dir] == "tensorboard"
    assert f"tensorboard:{tensorboard_dir}:ro" in services["tensorboard"]["volumes"]
    command = services["tensorboard"]["command"]
    assert command[command.index("--logdir") + 1] == tensorboard_dir


def _pinned(image: str, repository: str) -> str:
    name, _, tag = image.rpartition(":")
    assert name == repository, image
    assert tag and tag != "latest", image
    return tag


def _init_script(compose: dict[str, Any]) -> str:
    init = compose["services"]["minio-init"]
    command = init["command"]
    script = command[0] if isinstance(command, list) else command
    assert init["entrypoint"] == ["/bin/sh", "-c"]
    return script.replace("$$", "$")  # what the container's shell gets


def test_minio_and_its_init_service(compose):
    services = compose["services"]
    minio, init = services["minio"], services["minio-init"]
    assert re.fullmatch(r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ",
                        _pinned(minio["image"], "minio/minio"))
    assert re.fullmatch(r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ",
                        _pinned(init["image"], "minio/mc"))
    command = minio["command"]
    assert command[:2] == ["server", "/data"], command
    assert _named_volumes(minio)["/data"] in (compose.get("volumes") or {})
    assert "healthcheck" in minio and "ready" in minio["healthcheck"]["test"]
    for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert str(minio["environment"][key]).startswith("${" + key + ":-"), key
        assert init["environment"][key] == minio["environment"][key], key
    # the init service signs in as root and creates the app's user with the app's keys
    api_env = _raw_env(services["api"])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert init["environment"][key] == api_env[key], key
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert init.get("restart") == "no"
    # every published MinIO port is on the host's loopback only
    for port in minio["ports"]:
        assert str(port).startswith("127.0.0.1:"), port


def test_minio_init_creates_the_store_bucket_with_the_policy(compose):
    script = _init_script(compose)
    bucket = urlsplit(STORE_URL).netloc
    made = re.findall(r"mc mb --ignore-existing (\S+)/(\S+?);", script)
    assert [b for _, b in made] == [bucket], script
    mount = _named_volumes(compose["services"]["minio-init"])
    policy_in_container = next(t for t, s in mount.items() if s == "./deploy/s3-policy.json")
    assert f"policy create toonforge toonforge-store {policy_in_container};" in script
    assert "mc admin user add" in script and "mc admin policy attach" in script
    # valid POSIX shell as the container's /bin/sh gets it
    check = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True,
                           timeout=10)
    assert check.returncode == 0, check.stderr


def test_s3_policy_grants_what_the_store_needs():
    bucket = urlsplit(STORE_URL).netloc
    policy = json.loads(S3_POLICY.read_text())
    granted: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        resources = statement["Resource"]
        for action in [actions] if isinstance(actions, str) else actions:
            for resource in [resources] if isinstance(resources, str) else resources:
                granted.setdefault(resource, set()).add(action)
    assert granted[f"arn:aws:s3:::{bucket}"] == {"s3:ListBucket"}
    assert granted[f"arn:aws:s3:::{bucket}/*"] >= {"s3:GetObject", "s3:PutObject",
                                                   "s3:DeleteObject"}
    assert not any("*" in a for actions in granted.values() for a in actions)  # no wildcards
    assert set(granted) == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    text = DEPLOY_DOC.read_text()
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"):
        assert f"`{action}`" in text, action


def test_tracking_profile(compose):
    services = compose["services"]
    with_profiles = {n for n, s in services.items() if s.get("profiles")}
    assert with_profiles == {"mlflow", "tensorboard"}
    for name in with_profiles:
        assert services[name]["profiles"] == ["tracking"], name
        assert "healthcheck" in services[name], name
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), port
    _pinned(services["mlflow"]["image"], "ghcr.io/mlflow/mlflow")
    assert services["mlflow"]["command"][:2] == ["mlflow", "server"]
    assert services["tensorboard"]["build"]["target"] == "worker"  # the image with tensorboard
    # the workers track only when told to (empty by default), the api never
    raw = _raw_env(services["worker"])
    assert raw["TOONFORGE_MLFLOW_TRACKING_URI"] == "${TRACKING_URI:-}"
    assert not [k for k in _env(services["api"]) if "MLFLOW" in k or "TENSORBOARD" in k]


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
        assert settings.store_url == STORE_URL
        assert settings.s3_endpoint_url == MINIO_ENDPOINT
        from model_store.factory import is_remote, object_store

        assert is_remote(settings)
        objects = object_store(settings)  # a boto3 client; nothing is sent
        assert objects is not None
        assert (objects.location.bucket, objects.location.prefix) == ("toonforge", "store/")
        assert settings.store_cache_max_bytes == int(env["TOONFORGE_STORE_CACHE_MAX_BYTES"])
        # tracking is off with the compose defaults (TRACKING_URI unset: an empty string)
        assert not settings.mlflow_tracking_uri
        if name == "worker":
            from worker.training.tracking_sinks import build_sinks

            assert [s.name for s in build_sinks(settings)] == ["tensorboard"]


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


def _requirement_list(stage: str) -> list[str]:
    """The requirement list the stage installs, made by the stage's own command (the
    `python -c` that writes /tmp/requirements-<stage>.txt) run on this pyproject.toml."""
    runs = " ".join(_runs(_stages()[stage]))
    match = re.search(r'python -c "([^"]+)" > /tmp/requirements-' + stage + r"\.txt", runs)
    assert match, f"{stage}: no requirement-list command"
    code = match.group(1).replace("/tmp/pyproject.toml", str(ROOT / "pyproject.toml"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def _dependency_tree(requirements: list[str]) -> dict[str, str]:
    """Every distribution ``requirements`` pull in (name -> the one that pulled it), walked
    through the metadata of the distributions installed here, extras and markers honoured.
    One not installed here (onnxruntime-gpu) is a leaf."""
    pulled: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "the image") for r in requirements]
    while todo:
        requirement, parent = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        pulled.setdefault(name, parent)
        extras = {""} | {canonicalize_name(e) for e in requirement.extras}
        fresh = {e for e in extras if (name, e) not in seen}
        if not fresh:
            continue
        seen.update((name, e) for e in fresh)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for spec in requires:
            child = Requirement(spec)
            if child.marker is None:
                if "" in fresh:
                    todo.append((child, name))
            elif any(child.marker.evaluate({"extra": e}) for e in fresh):
                child.marker = None
                todo.append((child, name))
    return pulled


def test_api_image_has_boto3_and_no_torch_or_mlflow():
    requirements = _requirement_list("api")
    names = {canonicalize_name(Requirement(r).name) for r in requirements}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    s3 = {canonicalize_name(Requirement(r).name) for r in extras["s3"]}
    tracking = {canonicalize_name(Requirement(r).name) for r in extras["tracking"]}
    assert s3 <= names and "boto3" in s3
    assert "onnxruntime-gpu" in names and "onnxruntime" not in names
    assert not names & (tracking | API_FORBIDDEN)
    tree = _dependency_tree(requirements)
    assert {"boto3", "botocore", "fastapi"} <= set(tree)  # the walk does reach dependencies
    pulled = {name: tree[name] for name in API_FORBIDDEN & set(tree)}
    assert not pulled, f"the api image would install {pulled} (name: pulled in by)"


def test_worker_image_has_the_s3_and_tracking_extras():
    names = {canonicalize_name(Requirement(r).name) for r in _requirement_list("worker")}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra in ("worker", "s3", "tracking"):
        wanted = {canonicalize_name(Requirement(r).name) for r in extras[extra]}
        assert wanted <= names, (extra, sorted(wanted - names))
    assert {"torch", "boto3", "mlflow", "tensorboard"} <= names


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


def test_every_compose_variable_is_documented():
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    assert {"AWS_ACCESS_KEY_ID", "MINIO_ROOT_PASSWORD", "TRACKING_URI"} <= used
    text = DEPLOY_DOC.read_text()
    table = text[text.index("## Compose variables"):text.index("## Decisions")]
    listed = set(re.findall(r"^\| `([A-Z_][A-Z0-9_]*)` \|", table, re.M))
    assert used <= listed, f"not in DEPLOY.md's compose variables: {sorted(used - listed)}"


def _doc_section(title: str) -> str:
    text = DEPLOY_DOC.read_text()
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    following = text.find("\n### ", start + len(title))
    ends = [e for e in (end, following) if e != -1]
    return text[start:min(ends)] if ends else text[start:]


def test_multi_host_section_covers_the_topology():
    text = _doc_section("## Multi-host deployment")
    for needle in ("/readyz", "`replica`", "`reload`", "toonforge_model_served_version",
                   "TOONFORGE_STORE_CACHE_MAX_BYTES", "toonforge store push"):
        assert needle in DEPLOY_DOC.read_text(), needle
    assert "```" in text and "load balancer" in text  # the diagram


def test_doc_store_layout_matches_the_code():
    from model_store.datasets import INDEX_FILE, META_FILE, REPORT_FILE
    from model_store.objects import blob_key
    from model_store.s3_datasets import FILES_FILE, dataset_prefix
    from model_store.s3_models import active_key, manifest_key

    layout = _doc_section("### Store layout on S3")
    block = layout[layout.index("```"):layout.rindex("```")]
    keys = [blob_key("a" * 64).replace("a" * 64, "<hex>"),
            manifest_key("mmm", 7).replace("mmm", "<m>").replace("/7/", "/<n>/"),
            active_key("mmm").replace("mmm", "<m>"),
            (dataset_prefix("ddd") + FILES_FILE).replace("ddd", "<id>"),
            (dataset_prefix("ddd") + META_FILE).replace("ddd", "<id>"),
            (dataset_prefix("ddd") + f"{REPORT_FILE}, {INDEX_FILE}").replace("ddd", "<id>")]
    for key in keys:
        assert re.search(rf"^{re.escape(key)}\s", block, re.M), key


def _doc_probe() -> str:
    match = re.search(r"docker compose run --rm worker python -c '\n(.*?)\n'\n```",
                      DEPLOY_DOC.read_text(), re.S)
    assert match, "DEPLOY.md has no conditional-write probe"
    assert "'" not in match.group(1)  # it sits inside single quotes in the shell
    return match.group(1)


@pytest.fixture()
def drop_conditions_proxy(s3_server) -> Iterator[str]:
    """An S3 endpoint that ignores conditional writes, as some S3-compatible stores do: a
    loopback HTTP proxy in front of moto's server that forwards every request without its
    If-Match / If-None-Match headers."""
    upstream = urlsplit(s3_server.endpoint)
    dropped = {"if-match", "if-none-match", "host", "connection"}

    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port,
                                                    timeout=30)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            finally:
                connection.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length",
                             response.getheader("Content-Length", "0") if self.command == "HEAD"
                             else str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _run_probe(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TOONFORGE_", "AWS_"))}
    base.update(env, PYTHONPATH=str(ROOT), TOONFORGE_STORE_DIR=str(tmp_path / "store"),
                TOONFORGE_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-c", _doc_probe()], cwd=tmp_path, env=base,
                          capture_output=True, text=True, timeout=120)


def test_conditional_write_probe_passes_on_a_store_that_honours_them(s3_server, tmp_path):
    result = _run_probe(tmp_path, s3_server.env(s3_server.new_store_url()))
    assert result.returncode == 0, result.stderr or result.stdout
    assert result.stdout.strip() == "conditional writes are honoured"


def test_conditional_write_probe_fails_on_a_store_that_ignores_them(
        s3_server, drop_conditions_proxy, tmp_path):
    env = s3_server.env(s3_server.new_store_url())
    env["TOONFORGE_S3_ENDPOINT_URL"] = drop_conditions_proxy
    result = _run_probe(tmp_path, env)
    assert result.returncode == 1, result.stderr or result.stdout
    assert result.stdout.splitlines() == ["If-None-Match: * overwrote an existing object",
                                          "If-Match with a stale ETag overwrote the object"]


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
