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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under TOONFORGE_TEST_STORE=s3 (tests/support/stores.py) the run is the S3 pass: the
    tests marked ``store`` run on moto's S3 server; those marked ``local_store_only`` and
    those that are not about the store skip, each with its reason."""
    from tests.support.stores import on_s3

    for item in items:
        # The SDK and CLI tests on the shared stack (tests/sdk/conftest.py) touch its store.
        if "sdk_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.store)
    if not on_s3():
        return
    for item in items:
        local = item.get_closest_marker("local_store_only")
        if local is not None:
            why = local.args[0] if local.args else local.kwargs.get("reason", "")
            item.add_marker(pytest.mark.skip(reason=f"local store only: {why}"))
        elif item.get_closest_marker("store") is None:
            item.add_marker(pytest.mark.skip(reason="not a store test (marker `store`): the"
                                                    " S3 pass runs those only"))
        elif getattr(item, "callspec", None) and item.callspec.params.get(
                "backend") == "redis-postgres":
            # The job backend is independent of the store: the S3 pass takes the embedded
            # one; Redis + PostgreSQL on S3 is tests/integration/test_topology_s3.py.
            item.add_marker(pytest.mark.skip(reason="S3 pass: the embedded job backend only"))


@pytest.fixture(scope="session", autouse=True)
def _test_store(request: pytest.FixtureRequest) -> None:
    """Under TOONFORGE_TEST_STORE=s3, the moto server every seeded bucket lives on (started
    once, only for that pass)."""
    from tests.support import stores

    if stores.on_s3():
        stores.use_server(request.getfixturevalue("s3_server"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """moto's standalone S3 server on 127.0.0.1 for the whole run (tests/support/s3.py).

    moto is a dev dependency, so this never skips: an S3 test that cannot get its server
    fails. Tests take a fresh bucket each (``s3_server.new_store_url()``)."""
    from tests.support.s3 import CREDENTIALS, S3Server

    for key, value in CREDENTIALS.items():  # boto3 in this process finds them here
        os.environ.setdefault(key, value)
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()
