"""The model catalogue, activation, readiness, and the 404/409/503 answers around them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.settings import Settings
from core.wire import FinetuneRequest, JobStatus
from jobs.db import Database
from jobs.repository import JobRepository, ProgressUpdate
from model_store.files import MAIN_GRAPH
from model_store.store import ModelStore
from tasks import get_task
from tests.api.conftest import encode
from tests.api.test_inputs import assert_error
from tests.api.tiny_models import build_tiny_store, publish_tiny
from tests.support.stores import store_at

# Runs again on S3 (TOONFORGE_TEST_STORE=s3): the store is built as a directory before the
# server starts, then read back through store_at (the bucket's store on S3).
pytestmark = pytest.mark.store

@pytest.fixture()
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    build_tiny_store(root)
    return root


def matte_file(image) -> dict:
    return {"image": ("cat.jpg", encode(image, "JPEG"), "image/jpeg")}


def test_health_and_catalogue(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    models = {m["name"]: m for m in client.get("/models").json()}
    assert models["matte"] == {"name": "matte", "task": "matte", "versions": [1, 2],
                               "active": 1, "is_default": True}
    assert set(models) == {"cartoon", "matte", "portrait", "classify", "anime-faces", "faces-ae"}

    detail = client.get("/models/matte").json()
    assert detail["loaded_version"] == 1
    assert [v["version"] for v in detail["version_summaries"]] == [1, 2]
    assert all(v["parity_passed"] for v in detail["version_summaries"])

    manifest = client.get("/models/matte/versions/2").json()
    assert (manifest["model"], manifest["version"], manifest["task"]) == ("matte", 2, "matte")
    assert "model.onnx" in manifest["files"]


def test_catalogue_errors(client):
    assert_error(client.get("/models/nope"), 404, "model_not_found")
    assert_error(client.get("/models/matte/versions/9"), 404, "version_not_found")
    assert_error(client.get("/models/matte/versions/x"), 422, "invalid_parameter")
    assert_error(client.post("/models/matte/activate", json={"version": 9}),
                 404, "version_not_found")
    assert_error(client.post("/models/nope/activate", json={"version": 1}),
                 404, "model_not_found")
    assert_error(client.post("/models/matte/activate", json={"v": 1}), 422, "invalid_parameter")


def test_readyz_lists_every_model(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200 and body["ready"] is True
    by_name = {m["name"]: m for m in body["models"]}
    assert by_name["matte"]["loaded_version"] == by_name["matte"]["active_version"] == 1
    assert by_name["matte"]["providers"] == ["CPUExecutionProvider"]
    assert all(m["error"] is None for m in body["models"])


def test_activation_swaps_before_answering(start_server, store_root, chelsea):
    server = start_server(store_root, reload_poll_s="30")  # only the route can swap here
    with server.client() as http:
        response = http.post("/models/matte/activate", json={"version": 2})
        assert response.json() == {"name": "matte", "active": 2, "previous": 1}
        assert http.post("/matte", files=matte_file(chelsea)).headers["x-model-version"] == \
            "matte@2"
        assert http.get("/models/matte").json()["active"] == 2
        back = http.post("/models/matte/activate", json={"version": 1}).json()
        assert back["previous"] == 2
        assert http.post("/matte", files=matte_file(chelsea)).headers["x-model-version"] == \
            "matte@1"
    assert store_at(store_root).active_version("matte") == 1
    assert "retired matte@2" in server.log()


def test_rollback_returns_to_the_previous_active_version(start_server, store_root, chelsea):
    server = start_server(store_root, reload_poll_s="30")
    with server.client() as http:
        # The detail says beforehand what a rollback would do (the web page's button).
        assert http.get("/models/matte").json()["rollback_target"] is None
        assert_error(http.post("/models/matte/rollback"), 409, "activation_refused")
        http.post("/models/matte/activate", json={"version": 2})
        assert http.get("/models/matte").json()["rollback_target"] == 1
        assert http.post("/models/matte/rollback").json() == {
            "name": "matte", "active": 1, "previous": 2}
        assert http.get("/models/matte").json()["rollback_target"] is None
        assert http.post("/matte", files=matte_file(chelsea)).headers["x-model-version"] == \
            "matte@1"
        assert_error(http.post("/models/nope/rollback"), 404, "model_not_found")


def test_rollback_walks_back_through_the_activation_history(start_server, store_root,
                                                            chelsea):
    """v1 -> v2 -> v3, then rollback: v2, rollback: v1 (not a toggle between the last two);
    each step is served before the route answers, and the store records it as a rollback."""
    assert publish_tiny(ModelStore(store_root), "matte", seed=2, activate=False) == 3
    server = start_server(store_root, reload_poll_s="30")  # only the routes can swap here
    with server.client() as http:
        for version in (2, 3):
            assert http.post("/models/matte/activate", json={"version": version}
                             ).status_code == 200
        for active, previous in ((2, 3), (1, 2)):
            assert http.post("/models/matte/rollback").json() == {
                "name": "matte", "active": active, "previous": previous}
            assert http.post("/matte", files=matte_file(chelsea)).headers[
                "x-model-version"] == f"matte@{active}"
        assert_error(http.post("/models/matte/rollback"), 409, "activation_refused")
    history = store_at(store_root).history("matte")
    assert [(e["version"], bool(e.get("rollback"))) for e in history[-4:]] == [
        (2, False), (3, False), (2, True), (1, True)]


def test_parity_failed_version_is_refused(start_server, store_root, chelsea):
    publish_tiny(ModelStore(store_root), "matte", seed=3, activate=False, parity=False)
    server = start_server(store_root)
    with server.client() as http:
        error = assert_error(http.post("/models/matte/activate", json={"version": 3}),
                             409, "activation_refused")
        assert "parity" in error["message"]
        assert_error(http.post("/matte?version=3", files=matte_file(chelsea)),
                     409, "activation_refused")
        assert http.get("/models/matte").json()["active"] == 1


def test_empty_store(start_server, tmp_path, chelsea):
    server = start_server(tmp_path / "empty")
    with server.client() as http:
        body = http.get("/readyz").json()
        assert (body["ready"], body["models"]) == (True, [])
        assert body["reload"] == {"mode": "poll", "connected": False}  # no Redis set
        assert http.get("/models").json() == []
        error = assert_error(http.post("/matte", files=matte_file(chelsea)),
                             503, "no_active_version")
        assert "toonforge import --task matte --arch u2net --weights <file> --model matte" \
            " --activate` (architectures: u2net, u2netp)" in error["message"]
        # Each task's own import example, never another task's.
        message = assert_error(http.post("/generate"), 503, "no_active_version")["message"]
        assert message.startswith("no model serves 'generate' yet; import weights with")
        assert "--task generate --arch dcgan" in message and "matte" not in message


def test_model_without_active_version(start_server, store_root, chelsea):
    publish_tiny(ModelStore(store_root), "matte", model="matte-draft", activate=False)
    server = start_server(store_root)
    with server.client() as http:
        error = assert_error(http.post("/matte?model=matte-draft", files=matte_file(chelsea)),
                             503, "no_active_version")
        assert "--model matte-draft" in error["message"]
        # The version that exists is named, with how to serve it anyway.
        assert "matte-draft@1 exists but is not active; to serve it anyway: `toonforge models" \
            " activate matte-draft 1` or POST /models/matte-draft/activate with" \
            ' {"version": 1}' in error["message"]
        # An explicit version is served although none is active.
        ok = http.post("/matte?model=matte-draft&version=1", files=matte_file(chelsea))
        assert ok.headers["x-model-version"] == "matte-draft@1"


def corrupt(store: ModelStore, name: str, version: int) -> None:
    path = store.version_dir(name, version) / MAIN_GRAPH
    path.chmod(0o644)
    with path.open("ab") as fh:
        fh.write(b"tampered")


@pytest.mark.local_store_only("damages version files and moves the active pointer by hand,"
                               " in the store directory")
def test_version_that_fails_to_load(start_server, store_root, chelsea):
    store = ModelStore(store_root)
    corrupt(store, "classify", 1)
    version = publish_tiny(store, "matte", seed=4, activate=False)
    corrupt(store, "matte", version)
    server = start_server(store_root)
    with server.client() as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503
        by_name = {m["name"]: m for m in ready.json()["models"]}
        assert "sha256" in by_name["classify"]["error"]
        assert by_name["classify"]["loaded_version"] is None
        assert by_name["matte"]["ready"] is True
        error = assert_error(http.post("/classify", files=matte_file(chelsea)),
                             503, "model_not_ready")
        assert "sha256" in error["message"]
        # Activating a corrupt version changes nothing (the store verifies the hashes).
        error = assert_error(http.post("/models/matte/activate", json={"version": version}),
                             409, "version_corrupt")
        assert error["details"]["file"] == MAIN_GRAPH
        assert store.active_version("matte") == 1
        # The pointer moved behind the server's back (every toonforge path verifies, so:
        # written by hand, or the files rotted after activation): the old version keeps
        # serving, readyz says why.
        store.active_path("matte").write_text(f"{version}\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = {m["name"]: m for m in http.get("/readyz").json()["models"]}
            if states["matte"]["error"]:
                break
            time.sleep(0.1)
        assert "sha256" in states["matte"]["error"]
        assert states["matte"]["loaded_version"] == 1
        served = http.post("/matte", files=matte_file(chelsea))
        assert served.headers["x-model-version"] == "matte@1"
    assert "keeps serving" in server.log()


def test_no_active_version_says_what_is_on_the_way(start_server, tmp_path, chelsea):
    """The 503 of a task whose model serves nothing names the job that will publish it
    (with its ETA), and the version its gate refused with the gate's reason."""
    data = tmp_path / "data"
    db = Database(Settings(_env_file=None, data_dir=data).jobs_database_url)
    db.create_schema()
    repo = JobRepository(db.sessions)

    def job(task: str, model: str, key: str | None = None) -> str:
        return repo.create(FinetuneRequest(task=task, dataset_id=key or f"data-{task}",
                                           base=get_task(task).archs[0], target_model=model,
                                           auto_activate=True), key)[0].id

    refused = job("matte", "matte")
    repo.claim(refused, "w1", lease_s=60, max_attempts=3)
    repo.transition(refused, JobStatus.EXPORTING, worker_id="w1")
    reason = "matte@1 mae=0.31 is not lower than the trivial predictor's mae=0.3"
    repo.transition(refused, JobStatus.SUCCEEDED, worker_id="w1", result_version="matte@1",
                    activated=False, activation_reason=reason)
    store_root = tmp_path / "store"
    publish_tiny(ModelStore(store_root), "matte", activate=False, job_id=refused)
    running = job("classify", "classify", "starter-classify")
    repo.claim(running, "w1", lease_s=60, max_attempts=3)
    repo.record_progress(running, "w1", ProgressUpdate(epoch=2, total_epochs=4,
                                                       eta_seconds=94.6))
    queued = job("cartoonize", "cartoon", "starter-cartoonize")
    db.dispose()

    server = start_server(store_root, data_dir=str(data))
    with server.client() as http:
        message = assert_error(http.post("/matte", files=matte_file(chelsea)), 503,
                               "no_active_version")["message"]
        assert message.startswith(f"model 'matte' has no active version; matte@1 exists but"
                                  f" is not active ({reason}); to serve it anyway: `toonforge"
                                  " models activate matte 1` or POST /models/matte/activate")
        assert "meanwhile, or instead: import weights with `toonforge import --task matte" \
            in message
        image = {"image": ("x.png", encode(chelsea, "PNG"), "image/png")}
        message = assert_error(http.post("/classify", files=image), 503,
                               "no_active_version")["message"]
        assert f"the starter job {running} is running and will publish it (epoch 2/4, ETA" \
            f" 95 s; follow it: GET /jobs/{running})" in message
        assert "--task classify --arch googlenet" in message
        message = assert_error(http.post("/cartoonize", files=image), 503,
                               "no_active_version")["message"]
        assert f"the starter job {queued} will publish it (queued behind 1 other job(s);" \
            in message
