"""POST /infer/{task}: a family registered from tests/ alone (tests/api/toy_task.py) is served
by the generic endpoint, with the same upload rules, model choice and error envelope."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.settings import Settings
from model_store.store import ModelStore
from service.app import create_app
from tasks import list_tasks, register_task, unregister_task
from tests.api.conftest import decoded, encode
from tests.api.test_inputs import assert_error
from tests.api.tiny_models import publish_tiny
from tests.api.toy_task import MODEL, PREPROCESSING, SPEC, TASK, publish_sketch

with warnings.catch_warnings():  # starlette's "use httpx2" notice, on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

PHOTO = np.linspace(0, 255, 40 * 30 * 3).reshape(30, 40, 3).astype(np.uint8)


def png(array: np.ndarray = PHOTO) -> dict:
    return {"image": ("photo.png", encode(Image.fromarray(array)), "image/png")}


@pytest.fixture()
def toy_task() -> Iterator[None]:
    register_task(SPEC)
    yield
    unregister_task(TASK)


@pytest.fixture()
def store(tmp_path: Path, toy_task: None) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    publish_sketch(store)
    publish_sketch(store, offset=0.5, activate=False)
    publish_tiny(store, "matte")
    return store


@pytest.fixture()
def http(store: ModelStore, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(store_dir=store.root, data_dir=tmp_path / "data", reload_poll_s=60,
                        max_upload_bytes=200_000, max_pixels=100_000, starter_models=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_a_registered_task_is_served_by_the_generic_endpoint(http):
    response = http.post(f"/infer/{TASK}", files=png())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model-version"] == f"{MODEL}@1"
    sketch = decoded(response.content)
    assert sketch.size == (40, 30) and sketch.mode == "L"
    # offset - image on [0, 1]: the negative of the mean grey (within resampling error)
    expected = 255 - PHOTO.mean(axis=2)
    assert abs(float(np.asarray(sketch, np.float32).mean()) - expected.mean()) < 3


def test_raw_image_body_and_version_choice(http):
    body = encode(Image.fromarray(PHOTO))
    v1 = http.post(f"/infer/{TASK}", content=body, headers={"content-type": "image/png"})
    v2 = http.post(f"/infer/{TASK}?version=2", content=body,
                   headers={"content-type": "image/png"})
    named = http.post(f"/infer/{TASK}?model={MODEL}&version=1", files=png())
    assert v2.headers["x-model-version"] == f"{MODEL}@2"
    assert named.headers["x-model-version"] == f"{MODEL}@1"
    # offset 0.5 instead of 1: a darker picture
    assert np.asarray(decoded(v2.content)).mean() < np.asarray(decoded(v1.content)).mean()


def test_unknown_task_and_task_without_an_image_pipeline(http):
    error = assert_error(http.post("/infer/nope", files=png()), 404, "task_not_found")
    assert TASK in error["message"] and "matte" in error["message"]
    error = assert_error(http.post("/infer/matte", files=png()), 422, "invalid_parameter")
    assert "image pipeline" in error["message"] and error["message"].endswith(
        ": use POST /matte")  # the task's own endpoint, by name
    error = assert_error(http.post("/infer/autoencode", files=png()), 422, "invalid_parameter")
    assert error["message"].endswith(": use POST /autoencode, POST /autoencode/sample or"
                                     " POST /autoencode/interpolate")


@pytest.mark.parametrize("query, status, code", [
    ("?model=matte", 422, "invalid_parameter"),
    ("?model=nope", 404, "model_not_found"),
    ("?version=9", 404, "version_not_found"),
    ("?version=0", 422, "invalid_parameter"),
])
def test_model_choice_errors(http, query, status, code):
    assert_error(http.post(f"/infer/{TASK}{query}", files=png()), status, code)


def test_upload_rules_are_those_of_every_image_route(http):
    assert_error(http.post(f"/infer/{TASK}", content=b"not an image",
                           headers={"content-type": "image/png"}), 400, "undecodable")
    assert_error(http.post(f"/infer/{TASK}", content=b"hello",
                           headers={"content-type": "text/plain"}),
                 415, "unsupported_media_type")
    big = np.zeros((400, 400, 3), np.uint8)  # 160 000 pixels > max_pixels
    assert_error(http.post(f"/infer/{TASK}", files=png(big)), 422, "too_many_pixels")
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    assert_error(http.post(f"/infer/{TASK}", files=png(noise)), 413, "too_large")


def test_the_document_lists_the_route_and_the_registered_task(http):
    schema = http.get("/openapi.json").json()
    operation = schema["paths"]["/infer/{task}"]["post"]
    assert operation["operationId"] == "infer" and "plugin" in operation["description"]
    assert set(operation["responses"]) >= {"200", "400", "404", "413", "415", "422", "503"}
    request = schema["components"]["schemas"]["FinetuneRequest"]["properties"]
    assert TASK in request["task"]["enum"]
    assert request["hyperparameters"]["x-task-mapping"][TASK].endswith("SketchHyperparameters")


def test_a_wrong_serving_config_is_reported_by_readyz(store: ModelStore, tmp_path: Path):
    broken = publish_sketch(store, preprocessing={"size": 16})  # input_range missing
    settings = Settings(store_dir=store.root, data_dir=tmp_path / "data", reload_poll_s=60)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        # The last good version of the history (1) serves meanwhile, readyz says so.
        assert ready.status_code == 200
        state = {m["name"]: m for m in ready.json()["models"]}[MODEL]
        assert state["active_version"] == broken and state["loaded_version"] == 1
        assert state["fallback"] is True
        assert "input_range: Field required" in state["error"]
        served = client.post(f"/infer/{TASK}", files=png())
        assert served.headers["x-model-version"] == f"{MODEL}@1"
        # Asked for by number, the broken version is still refused with the reason.
        error = assert_error(client.post(f"/infer/{TASK}?version={broken}", files=png()),
                             503, "model_not_ready")
        assert "input_range" in error["message"]


def test_a_plugin_named_by_the_settings_is_served(start_server, tmp_path: Path, toy_task):
    store = ModelStore(tmp_path / "plugin-store")
    publish_sketch(store)
    unregister_task(TASK)  # the server registers it itself, from the plugin module
    server = start_server(store.root, task_plugins="tests.api.toy_plugin")
    with server.client() as client:
        response = client.post(f"/infer/{TASK}", files=png())
        assert response.status_code == 200, response.text
        assert response.headers["x-model-version"] == f"{MODEL}@1"
        assert client.get("/readyz").json()["ready"] is True
    assert TASK not in list_tasks()


def test_the_toy_preprocessing_is_its_serving_config():
    assert SPEC.serving.model_validate(PREPROCESSING).size == 16
