"""The lock pins every dependency the project names, and this environment installed exactly
what it pins (``make test`` installs with ``-c requirements/lock.txt``)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock.txt"
# Installed into their own environments, never beside the project (pyproject.toml says why).
NOT_LOCKED_EXTRAS = {"bench"}


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        if extra not in NOT_LOCKED_EXTRAS:
            names += requirements
    return [Requirement(r) for r in names if not r.startswith("toonforge")]


def test_every_direct_dependency_is_pinned_within_its_range():
    pins = _pins()
    for requirement in _project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (
            f"{name}=={pins[name]} in the lock is outside pyproject's {requirement}")


def test_the_environment_holds_exactly_the_locked_versions():
    mismatched = {}
    for name, pinned in _pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # the GPU image's packages (onnxruntime-gpu, CUDA wheels)
        # A local build label (torch's +cpu) is the same release.
        if Version(installed).public != Version(pinned).public:
            mismatched[name] = (installed, pinned)
    assert not mismatched, f"installed vs locked: {mismatched}"


def test_the_worker_image_torch_pin_matches_the_lock():
    assert "+" not in _pins()["torch"], "the lock's torch pin must not name a build (+cpu)"


def test_the_lock_pins_only_released_versions_never_a_path():
    # A `name @ file://...` line (pip-compile's pin of the project's own self-reference)
    # can only be satisfied in the checkout that made the lock: a fresh clone fails to install.
    requirement_lines = [line for line in LOCK.read_text().splitlines()
                         if line and not line.startswith((" ", "#"))]
    not_pinned = [line for line in requirement_lines
                  if not re.match(r"^[A-Za-z0-9._-]+==\S+$", line)]
    assert not not_pinned, f"lines of {LOCK.name} that are not name==version: {not_pinned}"
