"""Every inference endpoint and its parameters, on the tiny store (fast graphs)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.api.conftest import decoded, encode, png_size
from tests.api.test_inputs import assert_error
from tests.api.tiny_models import AE_SIDE, CLASSES, GEN_SIDE, NZ

# Runs again on S3 (TOONFORGE_TEST_STORE=s3: tests/support/stores.py).
pytestmark = pytest.mark.store


def image_file(data: bytes, name: str = "image") -> dict:
    return {name: (f"{name}.jpg", data, "image/jpeg")}


# ------------------------------------------------------------------ cartoonize
@pytest.mark.parametrize("fmt, media", [("png", "image/png"), ("jpeg", "image/jpeg"),
                                        ("webp", "image/webp")])
def test_cartoonize_formats(client, astronaut_jpeg, fmt, media):
    response = client.post(f"/cartoonize?format={fmt}", files=image_file(astronaut_jpeg))
    assert response.status_code == 200
    assert response.headers["content-type"] == media
    assert response.headers["x-model-version"] == "cartoon@1"
    assert decoded(response.content).size == (512, 512)


def test_cartoonize_small_max_side_keeps_the_input_size(client, chelsea):
    # 451x300 downscaled to long side 101 -> 100x64 for the graph, then back to 451x300.
    response = client.post("/cartoonize?max_side=101", content=encode(chelsea),
                           headers={"content-type": "image/png"})
    assert response.status_code == 200
    assert png_size(response.content) == chelsea.size


def test_cartoonize_identity_graph_keeps_colours(client):
    """The tiny graph is (almost) identity: BGR/RGB handling must round-trip colours."""
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 200
    from PIL import Image
    response = client.post("/cartoonize", content=encode(Image.fromarray(red)),
                           headers={"content-type": "image/png"})
    pixels = np.asarray(decoded(response.content))
    assert abs(int(pixels[..., 0].mean()) - 200) <= 2 and pixels[..., 2].max() <= 2


def test_cartoonize_tiny_image(client):
    from PIL import Image
    response = client.post("/cartoonize", content=encode(Image.new("RGB", (3, 2), "blue")),
                           headers={"content-type": "image/png"})
    assert response.status_code == 200
    assert png_size(response.content) == (3, 2)


@pytest.mark.parametrize("query", ["max_side=abc", "max_side=4", "format=gif", "version=0"])
def test_cartoonize_bad_params(client, astronaut_jpeg, query):
    response = client.post(f"/cartoonize?{query}", files=image_file(astronaut_jpeg))
    error = assert_error(response, 422, "invalid_parameter")
    assert query.split("=")[0] in error["message"]


# ------------------------------------------------------------------ matte
def test_matte_mask_is_8bit_l_at_input_size(client, chelsea):
    response = client.post("/matte", files=image_file(encode(chelsea, "JPEG")))
    mask = decoded(response.content)
    assert response.headers["x-model-version"] == "matte@1"
    assert (mask.mode, mask.size) == ("L", chelsea.size)
    values = np.asarray(mask)
    assert values.min() <= 5 and values.max() >= 250  # min-max normalised, then resized


def test_matte_cutout_is_rgba_with_the_mask_as_alpha(client, chelsea):
    body = encode(chelsea, "JPEG")
    mask = np.asarray(decoded(client.post("/matte", files=image_file(body)).content))
    cut = decoded(client.post("/matte?output=cutout", files=image_file(body)).content)
    assert cut.mode == "RGBA" and cut.size == chelsea.size
    assert np.array_equal(np.asarray(cut)[..., 3], mask)


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_matte_composite_on_a_colour(client, chelsea, fmt):
    response = client.post(f"/matte?output=composite&background=%2300ff00&format={fmt}",
                           files=image_file(encode(chelsea, "JPEG")))
    assert response.status_code == 200
    image = decoded(response.content)
    assert image.mode == "RGB" and image.size == chelsea.size


def test_matte_cutout_webp_keeps_alpha(client, chelsea):
    response = client.post("/matte?output=cutout&format=webp",
                           files=image_file(encode(chelsea, "JPEG")))
    assert decoded(response.content).mode == "RGBA"


@pytest.mark.parametrize("query, parameter", [
    ("output=cutout&format=jpeg", "format"),
    ("output=composite&background=red", "background"),
    ("output=halo", "output"),
])
def test_matte_bad_params(client, chelsea, query, parameter):
    response = client.post(f"/matte?{query}", files=image_file(encode(chelsea, "JPEG")))
    assert parameter in assert_error(response, 422, "invalid_parameter")["message"]


def test_matte_other_version_on_demand(client, chelsea):
    body = encode(chelsea, "JPEG")
    v2 = client.post("/matte?version=2", files=image_file(body))
    assert v2.status_code == 200 and v2.headers["x-model-version"] == "matte@2"
    v1 = client.post("/matte", files=image_file(body))
    assert v1.headers["x-model-version"] == "matte@1"


# ------------------------------------------------------------------ classify
def test_classify_top_k(client, astronaut_jpeg):
    response = client.post("/classify?top_k=3", files=image_file(astronaut_jpeg))
    body = response.json()
    assert response.headers["x-model-version"] == "classify@1"
    assert (body["model"], body["version"]) == ("classify", 1)
    scores = [p["score"] for p in body["predictions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert all(p["label"].startswith("label-") for p in body["predictions"])
    everything = client.post(f"/classify?top_k={CLASSES}", files=image_file(astronaut_jpeg))
    assert sum(p["score"] for p in everything.json()["predictions"]) == pytest.approx(1.0)


@pytest.mark.parametrize("top_k", [0, CLASSES + 1, "many"])
def test_classify_bad_top_k(client, astronaut_jpeg, top_k):
    response = client.post(f"/classify?top_k={top_k}", files=image_file(astronaut_jpeg))
    assert "top_k" in assert_error(response, 422, "invalid_parameter")["message"]


# ------------------------------------------------------------------ generate
def test_generate_grid_is_seeded(client):
    first = client.post("/generate?n=4&seed=7")
    again = client.post("/generate", json={"n": 4, "seed": 7})
    assert first.status_code == again.status_code == 200
    assert first.headers["x-seed"] == "7"
    assert first.content == again.content
    side = 2 * (GEN_SIDE + 2) + 2
    assert png_size(first.content) == (side, side)


def test_generate_random_seed_is_echoed(client):
    response = client.post("/generate", json={"n": 2, "format": "json"})
    body = response.json()
    assert isinstance(body["seed"], int)
    assert response.headers["x-seed"] == str(body["seed"])
    replay = client.post("/generate", json={"n": 2, "format": "json", "seed": body["seed"]})
    assert replay.json()["images"] == body["images"]


def test_generate_json_with_latents(client):
    latents = [[0.1 * i] * NZ for i in range(3)]
    response = client.post("/generate", json={"latents": latents, "format": "json"})
    body = response.json()
    assert response.status_code == 200 and body["seed"] is None
    assert len(body["images"]) == 3
    image = decoded(base64.b64decode(body["images"][0]["png_base64"]))
    assert image.size == (GEN_SIDE, GEN_SIDE)
    # The tiny generator's score is the latent mean: it must come back per image.
    assert [round(i["score"], 4) for i in body["images"]] == [0.0, 0.1, 0.2]


def test_generate_rank_by_discriminator_keeps_the_best(client):
    plain = client.post("/generate", json={"n": 16, "seed": 3, "format": "json"}).json()
    ranked = client.post("/generate", json={"n": 4, "seed": 3, "format": "json",
                                            "rank_by_discriminator": True,
                                            "oversample": 4}).json()
    scores = [i["score"] for i in ranked["images"]]
    assert scores == sorted(scores, reverse=True)
    assert scores == sorted((i["score"] for i in plain["images"]), reverse=True)[:4]


@pytest.mark.parametrize("body, parameter", [
    ({"latents": [[0.0] * (NZ - 1)]}, "latents"),
    ({"latents": [[0.0] * NZ], "n": 2}, "latents"),
    ({"n": 65}, "n"),
    ({"n": 0}, "n"),
    ({"n": 64, "rank_by_discriminator": True, "oversample": 5}, "oversample"),
    ({"seed": -1}, "seed"),
    ({"format": "gif"}, "format"),
])
def test_generate_bad_params(client, body, parameter):
    response = client.post("/generate", json=body)
    assert parameter in assert_error(response, 422, "invalid_parameter")["message"]


def test_generate_bad_json(client):
    response = client.post("/generate", content=b"{not json",
                           headers={"content-type": "application/json"})
    assert_error(response, 422, "malformed_json")


# ------------------------------------------------------------------ autoencode
def test_autoencode_reconstruction(client, chelsea):
    response = client.post("/autoencode", files=image_file(encode(chelsea, "JPEG")))
    assert response.headers["x-model-version"] == "faces-ae@1"
    assert png_size(response.content) == (AE_SIDE, AE_SIDE)
    bigger = client.post("/autoencode?size=128", files=image_file(encode(chelsea, "JPEG")))
    assert png_size(bigger.content) == (128, 128)


def test_autoencode_bad_size(client, chelsea):
    response = client.post("/autoencode?size=5000", files=image_file(encode(chelsea, "JPEG")))
    assert "size" in assert_error(response, 422, "invalid_parameter")["message"]


def test_interpolate_strip_and_json(client, chelsea, astronaut):
    files = {"image_a": ("a.jpg", encode(chelsea, "JPEG"), "image/jpeg"),
             "image_b": ("b.png", encode(astronaut), "image/png")}
    strip = client.post("/autoencode/interpolate", files=files, data={"steps": "5"})
    assert strip.status_code == 200, strip.text
    assert png_size(strip.content) == (5 * (AE_SIDE + 2) + 2, AE_SIDE + 4)
    default = client.post("/autoencode/interpolate", files=files)
    assert png_size(default.content)[0] == 8 * (AE_SIDE + 2) + 2
    as_json = client.post("/autoencode/interpolate?format=json&steps=3", files=files)
    images = as_json.json()["images"]
    assert len(images) == 3
    assert images[0]["png_base64"] != images[-1]["png_base64"]


@pytest.mark.parametrize("steps", ["1", "33", "x"])
def test_interpolate_bad_steps(client, chelsea, steps):
    files = {"image_a": ("a.jpg", encode(chelsea, "JPEG"), "image/jpeg"),
             "image_b": ("b.jpg", encode(chelsea, "JPEG"), "image/jpeg")}
    response = client.post("/autoencode/interpolate", files=files, data={"steps": steps})
    assert "steps" in assert_error(response, 422, "invalid_parameter")["message"]


def test_sample_uses_the_fitted_distribution(client):
    response = client.post("/autoencode/sample?n=4&seed=1")
    assert response.status_code == 200
    assert response.headers["x-latent-distribution"] == "fitted"
    assert response.headers["x-seed"] == "1"
    assert response.content == client.post("/autoencode/sample?n=4&seed=1").content
    assert png_size(response.content) == (2 * (AE_SIDE + 2) + 2,) * 2


def test_sample_bad_n(client):
    assert_error(client.post("/autoencode/sample?n=0"), 422, "invalid_parameter")


# ------------------------------------------------------------------ model selection
def test_unknown_model_and_version(client, astronaut_jpeg):
    assert_error(client.post("/matte?model=nope", files=image_file(astronaut_jpeg)),
                 404, "model_not_found")
    assert_error(client.post("/matte?model=Not_Valid!", files=image_file(astronaut_jpeg)),
                 404, "model_not_found")
    assert_error(client.post("/matte?version=99", files=image_file(astronaut_jpeg)),
                 404, "version_not_found")


def test_model_of_another_task(client, astronaut_jpeg):
    response = client.post("/matte?model=classify", files=image_file(astronaut_jpeg))
    assert "model" in assert_error(response, 422, "invalid_parameter")["message"]


def test_unknown_route_uses_the_envelope(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/cartoonize"), 405, "method_not_allowed")
