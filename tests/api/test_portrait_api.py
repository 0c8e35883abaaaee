"""``POST /portrait`` over HTTP on the tiny store: what is drawn, the headers that say so,
the outputs, bad parameters, and a new version picked up without a restart."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from faces import find_faces
from families.portrait.processing import face_region
from model_store.store import ModelStore
from tests.api.conftest import encode
from tests.api.test_endpoints import image_file
from tests.api.test_inputs import assert_error
from tests.api.tiny_models import publish_tiny


def _image(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def test_face_crop_by_default(client, astronaut):
    response = client.post("/portrait", files=image_file(encode(astronaut)))
    drawing = _image(response)
    face = find_faces(astronaut).faces[0].int_box()
    region = face_region(face)
    assert response.headers["x-face-found"] == "true"
    assert response.headers["x-portrait-crop"] == "face"
    assert response.headers["x-crop-box"] == ",".join(str(v) for v in region.box)
    assert response.headers["x-model-version"] == "portrait@1"
    assert drawing.mode == "L" and drawing.size == (region.crop.width, region.crop.height)


def test_whole_image_when_asked_or_when_no_face(client, astronaut, chelsea):
    response = client.post("/portrait?crop=none", files=image_file(encode(astronaut)))
    assert _image(response).size == astronaut.size
    assert response.headers["x-portrait-crop"] == "image"
    assert "x-face-found" not in response.headers
    assert response.headers["x-crop-box"] == f"0,0,{astronaut.width},{astronaut.height}"
    cat = client.post("/portrait", files=image_file(encode(chelsea, "JPEG")))
    assert _image(cat).size == chelsea.size  # a cat: no human face, the whole image
    assert cat.headers["x-face-found"] == "false"
    assert cat.headers["x-portrait-crop"] == "image"


def test_composite_and_full(client, astronaut):
    body = encode(astronaut)
    drawing = np.asarray(_image(client.post("/portrait?crop=none", files=image_file(body))))
    plain = _image(client.post("/portrait?output=composite&crop=none&alpha=0",
                               files=image_file(body)))
    assert plain.mode == "RGB"  # alpha 0: the drawing scaled so its max is 255, in grey
    grey = np.asarray(plain)[:, :, 0].astype(int)
    expected = np.rint(drawing / max(drawing.max(), 1) * 255).astype(int)
    assert np.abs(grey - expected).max() <= 1
    photo = _image(client.post("/portrait?output=composite&crop=none&alpha=1&sigma=0",
                               files=image_file(body)))
    assert np.array_equal(np.asarray(photo), np.asarray(astronaut))  # alpha 1, no blur
    full = _image(client.post("/portrait?output=full", files=image_file(body)))
    assert full.size == astronaut.size and full.mode == "RGB"
    box = face_region(find_faces(astronaut).faces[0].int_box()).crop
    below = np.asarray(full)[box.bottom:]
    assert np.array_equal(below, np.asarray(astronaut)[box.bottom:])  # outside: untouched


@pytest.mark.parametrize("query, parameter", [
    ("sigma=100", "sigma"), ("sigma=-1", "sigma"), ("alpha=1.5", "alpha"),
    ("output=sketch", "output"), ("crop=head", "crop"),
])
def test_bad_parameters_are_named(client, astronaut, query, parameter):
    response = client.post(f"/portrait?{query}", files=image_file(encode(astronaut)))
    assert parameter in assert_error(response, 422, "invalid_parameter")["message"]


def test_a_new_version_is_served_without_restart(client, tiny_store, chelsea):
    body = encode(chelsea, "JPEG")
    before = client.post("/portrait?crop=none", files=image_file(body))
    assert before.headers["x-model-version"] == "portrait@1"
    version = publish_tiny(ModelStore(tiny_store), "portrait", seed=3)
    for _ in range(100):
        after = client.post("/portrait?crop=none", files=image_file(body))
        if after.headers["x-model-version"] == f"portrait@{version}":
            break
        time.sleep(0.2)
    assert after.headers["x-model-version"] == f"portrait@{version}"
