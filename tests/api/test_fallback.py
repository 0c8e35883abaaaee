"""Last good version: a pointer naming a version that cannot load never takes a
model (or readiness) down while an earlier good version exists.

The broken pointer is written the way the old CLI did it (pointer file + history line,
no verification), since ``ModelStore.activate`` itself now refuses a corrupt version.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image

from model_store.files import MAIN_GRAPH
from model_store.store import ModelStore
from tests.api.conftest import encode
from tests.api.tiny_models import build_tiny_store, publish_tiny

pytestmark = pytest.mark.local_store_only(
    "damages version files in the store directory")

BODY = encode(Image.new("RGB", (64, 48), "teal"), "PNG")


def corrupt_graph(store: ModelStore, name: str, version: int) -> None:
    path = store.version_dir(name, version) / MAIN_GRAPH
    path.chmod(0o644)
    with path.open("ab") as fh:
        fh.write(b"tampered")


def point_at(store: ModelStore, name: str, version: int) -> None:
    """Move the pointer without any check, and record it in the history."""
    mdir = store.model_dir(name)
    previous = store.active_version(name)
    (mdir / "active").write_text(f"{version}\n")
    with (mdir / "history.jsonl").open("a") as fh:
        fh.write(json.dumps({"version": version, "previous": previous,
                             "at": datetime.now(UTC).isoformat()}) + "\n")


def served_by(http: httpx.Client) -> str:
    response = http.post("/matte", content=BODY, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


def readiness(http: httpx.Client) -> tuple[int, dict[str, dict]]:
    response = http.get("/readyz")
    return response.status_code, {m["name"]: m for m in response.json()["models"]}


def test_a_broken_active_version_falls_back_to_the_last_good_one(start_server, tmp_path):
    root = tmp_path / "store"
    store = build_tiny_store(root)  # matte: v1 active, v2
    store.activate("matte", 2)  # history: 1, 2
    broken = publish_tiny(store, "matte", seed=3, activate=False)
    running = start_server(root)
    with running.client() as http:
        assert served_by(http) == "matte@2"
        corrupt_graph(store, "matte", broken)
        point_at(store, "matte", broken)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, models = readiness(http)
            if models["matte"]["error"]:
                break
            time.sleep(0.1)
        # The running API keeps serving what it had, and says so; still ready.
        assert status == 200
        matte = models["matte"]
        assert (matte["active_version"], matte["loaded_version"]) == (broken, 2)
        assert matte["fallback"] is True and matte["ready"] is True
        assert "sha256" in matte["error"]
        assert not any(m["fallback"] for name, m in models.items() if name != "matte")
        assert served_by(http) == "matte@2"

    # A fresh API on that store: nothing loaded yet, it serves the newest loadable version
    # of the activation history (2, not the older good 1) instead of nothing.
    fresh = start_server(root)
    with fresh.client() as http:
        status, models = readiness(http)
        assert status == 200, models
        assert models["matte"]["loaded_version"] == 2 and models["matte"]["fallback"] is True
        assert "sha256" in models["matte"]["error"]
        assert served_by(http) == "matte@2"
    assert "fallback" in fresh.log()

    # The pointer moves back to a good version: the fallback ends.
    store.activate("matte", 2)
    with running.client() as http:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, models = readiness(http)
            if models["matte"]["active_version"] == 2 and not models["matte"]["error"]:
                break
            time.sleep(0.1)
        assert status == 200
        assert models["matte"]["fallback"] is False and models["matte"]["error"] is None


def test_a_model_with_nothing_servable_makes_readyz_503(start_server, tmp_path: Path):
    root = tmp_path / "store"
    store = build_tiny_store(root)
    corrupt_graph(store, "classify", 1)  # its only version, the only one in its history
    server = start_server(root)
    with server.client() as http:
        status, models = readiness(http)
        assert status == 503
        classify = models["classify"]
        assert classify["ready"] is False and classify["fallback"] is False
        assert classify["loaded_version"] is None and "sha256" in classify["error"]
        assert models["matte"]["ready"] is True  # the others still serve
        assert served_by(http) == "matte@1"
        refused = http.post("/classify", content=BODY, headers={"content-type": "image/png"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_not_ready"
