"""Shared fixtures: a model store built through the real import path, once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
# Publishing builds no INT8 variant in the suite unless a test asks for one
# (publish_version(int8=True): tests/unit/test_quantize.py): quantizing every full-size
# test model would add ~10 s per version, and served answers stay fp32 where tests compare
# them with PyTorch. Worker and API subprocesses inherit this.
os.environ.setdefault("TOONFORGE_INT8_VARIANTS", "0")


@pytest.fixture(scope="session")
def populated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store root: every task's default model at v1 active, matte with an inactive v2.

    Read-only for tests; copy it (``store_copy``) before mutating.
    """
    from tests.support.store import build_test_store  # imports torch: only when needed

    root = tmp_path_factory.mktemp("store")
    build_test_store(root, tmp_path_factory.mktemp("checkpoints"))
    return root


@pytest.fixture()
def store_copy(populated_store: Path, tmp_path: Path) -> Path:
    """A private copy of the populated store for tests that activate or publish."""
    dest = tmp_path / "store"
    shutil.copytree(populated_store, dest)
    return dest
