"""Every inference endpoint on the real architectures (test-made random weights)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.api.conftest import ApiServer, decoded, encode, png_size


@pytest.fixture(scope="module")
def real(populated_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server = ApiServer(populated_store, tmp_path_factory.mktemp("real") / "server.log")
    with server.client(timeout=120) as http:
        yield http
    server.stop()


def test_ready_with_every_model(real):
    body = real.get("/readyz").json()
    assert body["ready"] is True
    assert {m["name"] for m in body["models"]} >= {
        "cartoon", "matte", "classify", "anime-faces", "faces-ae"}


def test_cartoonize_keeps_size_and_caps_max_side(real, astronaut):
    photo = astronaut.resize((900, 500))  # long side over the 720 default
    response = real.post("/cartoonize", files={"image": ("p.jpg", encode(photo, "JPEG"),
                                                         "image/jpeg")})
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "cartoon@1"
    assert png_size(response.content) == (900, 500)
    odd = real.post("/cartoonize?max_side=99&format=jpeg", content=encode(photo, "PNG"),
                    headers={"content-type": "image/png"})
    assert decoded(odd.content).size == (900, 500)


def test_matte_outputs(real, chelsea):
    body = encode(chelsea, "JPEG")
    mask = decoded(real.post("/matte", content=body,
                             headers={"content-type": "image/jpeg"}).content)
    assert (mask.mode, mask.size) == ("L", chelsea.size)
    composite = decoded(real.post("/matte?output=composite&background=%23ff0000",
                                  content=body, headers={"content-type": "image/jpeg"}).content)
    assert composite.mode == "RGB"
    cut = decoded(real.post("/matte?output=cutout", content=body,
                            headers={"content-type": "image/jpeg"}).content)
    assert np.array_equal(np.asarray(cut)[..., 3], np.asarray(mask))


def test_matte_second_version(real, chelsea):
    response = real.post("/matte?version=2", content=encode(chelsea, "JPEG"),
                         headers={"content-type": "image/jpeg"})
    assert response.headers["x-model-version"] == "matte@2"


def test_classify_uses_manifest_labels(real, astronaut):
    response = real.post("/classify?top_k=5", content=encode(astronaut, "PNG"),
                         headers={"content-type": "image/png"})
    predictions = response.json()["predictions"]
    assert len(predictions) == 5
    assert not any(p["label"].startswith("class_") for p in predictions)


def test_generate(real):
    grid = real.post("/generate", json={"n": 4, "seed": 1})
    assert grid.status_code == 200 and grid.headers["x-model-version"] == "anime-faces@1"
    assert png_size(grid.content) == (2 * 98 + 2, 2 * 98 + 2)
    ranked = real.post("/generate?n=2&rank_by_discriminator=true&format=json&seed=5").json()
    assert len(ranked["images"]) == 2 and ranked["seed"] == 5
    face = decoded(base64.b64decode(ranked["images"][0]["png_base64"]))
    assert face.size == (96, 96)


def test_generate_latent_length_is_checked(real):
    response = real.post("/generate", json={"latents": [[0.0] * 3]})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_parameter"


def test_autoencode_family(real, chelsea, astronaut):
    recon = real.post("/autoencode", content=encode(chelsea, "JPEG"),
                      headers={"content-type": "image/jpeg"})
    assert png_size(recon.content) == (64, 64)
    files = {"image_a": ("a.jpg", encode(chelsea, "JPEG"), "image/jpeg"),
             "image_b": ("b.jpg", encode(astronaut, "JPEG"), "image/jpeg")}
    strip = real.post("/autoencode/interpolate", files=files, data={"steps": "4"})
    assert png_size(strip.content) == (4 * 66 + 2, 68)
    sample = real.post("/autoencode/sample?n=9&seed=2")
    assert sample.headers["x-latent-distribution"] == "fitted"
    assert png_size(sample.content) == (3 * 66 + 2, 3 * 66 + 2)
