"""A sixth model family from tests/ alone, through the real pipeline.

tests/toy_family holds a task spec ("invert": photo in, colour negative out), a net and a
trainer, each registering itself; the API and a real worker process load them through the
plugin settings, and nothing outside tests/ names the family. The test uploads a dataset of
photo crops, fine-tunes from scratch on the worker (ONNX export + parity + publish), then
asks the served model for the negative of a photo it never saw.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import JobBackend
from tests.support.archives import zip_folder
from tests.support.processes import WorkerPool
from tests.support.server import ApiServer

pytestmark = pytest.mark.timeout(240)

PLUGINS = {"TOONFORGE_TASK_PLUGINS": "tests.toy_family.spec",
           "TOONFORGE_WORKER_PLUGINS": "tests.toy_family.worker",
           "TOONFORGE_RELOAD_POLL_S": "0.2", "TOONFORGE_STARTER_MODELS": "false"}
SIDE = 32


def _photo(name: str) -> Image.Image:
    import skimage

    return Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB")


def _negative(image: Image.Image) -> Image.Image:
    return Image.fromarray(255 - np.asarray(image), mode="RGB")


def _dataset(root: Path) -> bytes:
    """Crops of two real photos and their negatives, in the spec's layout."""
    (root / "photos").mkdir(parents=True)
    (root / "negatives").mkdir()
    rng = np.random.default_rng(0)
    for source in ("astronaut.png", "chelsea.png"):
        photo = _photo(source)
        for i in range(6):
            x = int(rng.integers(0, photo.width - 96))
            y = int(rng.integers(0, photo.height - 96))
            crop = photo.crop((x, y, x + 96, y + 96))
            stem = f"{source.split('.')[0]}-{i}"
            crop.save(root / "photos" / f"{stem}.png")
            _negative(crop).save(root / "negatives" / f"{stem}.png")
    return zip_folder(root)


def _mae(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def test_a_family_defined_in_tests_trains_publishes_and_serves(
    embedded_backend: JobBackend, workers: WorkerPool
) -> None:
    backend = embedded_backend
    backend.env.update(PLUGINS)
    workers.env = {**workers.env, **PLUGINS}
    workers.start()
    api = ApiServer(backend.store_dir, backend.root / "api.log", backend.env)
    http = api.client()
    try:
        tasks = http.get("/openapi.json").json()
        assert "/infer/{task}" in tasks["paths"]
        r = http.post("/datasets", params={"task": "invert", "id": "negatives"},
                      content=_dataset(backend.root / "negatives"),
                      headers={"content-type": "application/zip"})
        assert r.status_code == 201, r.text
        assert r.json()["report"]["counts"]["train"] > 0

        r = http.post("/jobs/finetune", json={
            "task": "invert", "dataset_id": "negatives", "base": "toy-invert",
            "target_model": "inverter", "auto_activate": True,
            "hyperparameters": {"epochs": 80, "batch_size": 4, "lr": 0.05,
                                "image_size": SIDE},
        })
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 180
        while (job := http.get(f"/jobs/{job_id}").json())["status"] not in (
                "succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"job still {job['status']}\n{workers.logs()}"
            time.sleep(0.5)
        assert job["status"] == "succeeded", f"{job['error']}\n{workers.logs()}"
        assert job["result_version"] == "inverter@1" and job["activated"]

        manifest = http.get("/models/inverter/versions/1").json()
        assert manifest["task"] == "invert" and manifest["parity"]["passed"]
        assert manifest["preprocessing"] == {"size": SIDE}

        # A photo the model never saw: the served answer is its negative.
        held_out = _photo("coffee.png").resize((160, 120))
        buf = io.BytesIO()
        held_out.save(buf, format="PNG")
        deadline = time.monotonic() + 30
        while True:
            r = http.post("/infer/invert", content=buf.getvalue(),
                          headers={"content-type": "image/png"})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.status_code == 200, r.text
        assert r.headers["x-model-version"] == "inverter@1"
        served = Image.open(io.BytesIO(r.content)).convert("RGB")
        assert served.size == held_out.size
        # Compare at the graph's resolution (the served image is resized back up).
        small = held_out.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        served_small = served.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        error = _mae(served_small, _negative(small))
        baseline = _mae(small, _negative(small))  # what returning the photo itself scores
        assert error < 8.0, f"served MAE {error:.1f}/255 vs the negative"
        assert baseline > 5 * error
    finally:
        http.close()
        api.stop()
