"""Bounded work: what a request makes is bounded, not only what it uploads.

- An extreme aspect ratio (the 125-byte 1x10000 PNG that once took the API to 3.1 GB) is
  refused with 422 ``invalid_parameter`` naming the limit, on every image route, and the
  server's memory does not balloon on the way.
- Generate / interpolate / sample counts and output sizes are bounded (422 beyond).
- More concurrent requests than ``max_concurrency + max_queued`` are refused at once with
  503 ``overloaded`` and an integer ``Retry-After``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from families.classify.processing import classify_input
from families.classify.spec import ClassifyServing
from tests.api.conftest import encode
from tests.api.tiny_models import build_tiny_store
from tests.support.server import ApiServer

# With the tiny store (autoencode 16x16, generate 8x8) this leaves the defaults servable:
# interpolate's 8 steps (2048 pixels), sample n=8 (2048), generate n=16 (1024).
MAX_OUTPUT_PIXELS = 3000
IMAGE_ROUTES = ["/classify", "/matte", "/cartoonize", "/autoencode"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("bounds-store")
    build_tiny_store(root)
    api = ApiServer(root, tmp_path_factory.mktemp("logs") / "bounds.log",
                    {"TOONFORGE_MAX_OUTPUT_PIXELS": str(MAX_OUTPUT_PIXELS)})
    yield api
    api.stop()


@pytest.fixture()
def http(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def png(width: int, height: int) -> bytes:
    return encode(Image.new("RGB", (width, height), (200, 100, 50)), "PNG")


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


# ------------------------------------------------------------------ aspect ratio
@pytest.mark.parametrize("width, height", [(1, 10000), (10000, 1)])
def test_an_extreme_aspect_ratio_is_refused_on_every_image_route(server, http, width, height):
    body = png(width, height)
    assert len(body) < 1000  # a tiny upload: what it would make is the danger
    before = rss_bytes(server.process.pid)
    for route in IMAGE_ROUTES:
        error = error_of(http.post(route, content=body, headers={"content-type": "image/png"}),
                         422, "invalid_parameter")
        assert f"{width}x{height}" in error["message"]
        assert "at most 20 times the shortest" in error["message"]
        assert error["details"]["max_aspect_ratio"] == 20
    pair = {"image_a": ("a.png", body, "image/png"), "image_b": ("b.png", png(16, 16),
                                                                 "image/png")}
    error_of(http.post("/autoencode/interpolate", files=pair), 422, "invalid_parameter")
    # A memory property, not a timing: the 1x10000 PNG once added 2.5 GB.
    assert rss_bytes(server.process.pid) - before < 1024**3


def test_a_shape_within_the_limit_is_served(http):
    body = png(20, 400)  # 1:20, the limit itself
    for route in IMAGE_ROUTES:
        response = http.post(route, content=body, headers={"content-type": "image/png"})
        assert response.status_code == 200, (route, response.text)


def test_classify_only_resamples_its_crop():
    """The centre crop is resampled straight from the source: the result is crop x crop
    whatever the shape, and equals resize-then-crop (torchvision's order) to 1 level."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 37, 3), dtype=np.uint8))
    x = classify_input(image, ClassifyServing(resize_shorter=256, crop=224,
                                              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
    assert x.shape == (1, 3, 224, 224)
    width, height = 256, int(256 * 300 / 37)
    top = int(round((height - 224) / 2.0))
    reference = image.resize((width, height), Image.Resampling.BILINEAR)
    reference = reference.crop((16, top, 240, top + 224))
    expected = np.asarray(reference, np.float32).transpose(2, 0, 1)[None] / 255.0
    assert np.abs(x - expected).max() <= 1.5 / 255


# ------------------------------------------------------------------ counts and output sizes
@pytest.mark.parametrize("request_args, parameter", [
    ({"params": {"n": 65}}, "n"),
    ({"params": {"n": 64, "rank_by_discriminator": "true", "oversample": 8}}, "oversample"),
    ({"json": {"latents": [[0.0] * 8] * 65}}, "latents"),
    ({"params": {"n": 64}}, "n"),  # 64 x 8 x 8 = 4096 pixels > MAX_OUTPUT_PIXELS
])
def test_generate_counts_are_bounded(http, request_args, parameter):
    error = error_of(http.post("/generate", **request_args), 422, "invalid_parameter")
    assert parameter in error["message"]


def test_generate_within_the_bounds_is_served(http):
    assert http.post("/generate", params={"n": 16}).status_code == 200


@pytest.mark.parametrize("route, params, parameter", [
    ("/autoencode/sample", {"n": 65}, "n"),
    ("/autoencode/sample", {"n": 16}, "n"),  # 16 x 16 x 16 = 4096 > MAX_OUTPUT_PIXELS
])
def test_sample_counts_are_bounded(http, route, params, parameter):
    error = error_of(http.post(route, params=params), 422, "invalid_parameter")
    assert parameter in error["message"]


@pytest.mark.parametrize("steps, status", [(33, 422), (16, 422), (8, 200)])
def test_interpolate_steps_are_bounded(http, steps, status):
    pair = {"image_a": ("a.png", png(16, 16), "image/png"),
            "image_b": ("b.png", png(24, 24), "image/png")}
    response = http.post("/autoencode/interpolate", params={"steps": steps}, files=pair)
    assert response.status_code == status, response.text
    if status == 422:
        assert "steps" in error_of(response, 422, "invalid_parameter")["message"]


def test_autoencode_upscale_is_bounded(http):
    body = png(16, 16)
    error = error_of(http.post("/autoencode", params={"size": 64}, content=body,
                               headers={"content-type": "image/png"}), 422, "invalid_parameter")
    assert "size" in error["message"] and str(MAX_OUTPUT_PIXELS) in error["message"]


# ------------------------------------------------------------------ overload
@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("overload-store")
    build_tiny_store(root)
    api = ApiServer(root, tmp_path_factory.mktemp("logs") / "overload.log",
                    {"TOONFORGE_MAX_CONCURRENCY": "1", "TOONFORGE_MAX_QUEUED": "0",
                     "TOONFORGE_OVERLOAD_RETRY_AFTER_S": "3"})
    yield api
    api.stop()


def test_a_burst_over_the_bound_is_refused_at_once_with_retry_after(one_slot_server):
    # Noise does not compress: decoding ~1.4 MB of PNG keeps each request busy a while.
    noise = np.random.default_rng(1).integers(0, 255, (700, 700, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG", compress_level=0)
    body = buf.getvalue()
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def post() -> None:
        with one_slot_server.client() as http:
            start.wait()
            response = http.post("/matte", content=body, headers={"content-type": "image/png"})
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=post) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    statuses = sorted(r.status_code for r in answers)
    assert len(answers) == 12 and set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
    for refused in (r for r in answers if r.status_code == 503):
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["retry-after"] == "3"
    # Nothing stays counted: alone, a request is served again.
    with one_slot_server.client() as http:
        response = http.post("/matte", content=body, headers={"content-type": "image/png"})
        assert response.status_code == 200, response.text
        schema = http.get("/openapi.json").json()
        metrics = http.get("/metrics").text
    # Every refusal is counted apart from other 503s (the scale-out signal).
    shed = [line for line in metrics.splitlines()
            if line.startswith("toonforge_requests_shed_total")]
    assert shed and float(shed[0].split()[-1]) == statuses.count(503), shed
    refused_doc = schema["paths"]["/matte"]["post"]["responses"]["503"]
    assert "overloaded" in refused_doc["description"]
    assert refused_doc["headers"]["Retry-After"]["schema"]["type"] == "integer"


def test_with_the_ratio_limit_lifted_the_work_stays_bounded(start_server, tmp_path):
    """The limit is not what keeps memory flat: each pipeline creates bounded pixels (the
    classify crop, the matte/autoencode squares, the cartoon's capped side) by itself."""
    root = tmp_path / "store"
    build_tiny_store(root)
    api = start_server(root, max_aspect_ratio="100000")
    body = png(1, 40000)  # shorter-side resize of the whole image: ~10 GB once
    with api.client() as http:
        before = rss_bytes(api.process.pid)
        for route in IMAGE_ROUTES:
            response = http.post(route, content=body, headers={"content-type": "image/png"})
            assert response.status_code == 200, (route, response.text)
        assert rss_bytes(api.process.pid) - before < 1024**3


# ------------------------------------------------------------------ memory
def test_a_closed_batcher_frees_its_graph_without_the_cyclic_gc():
    """Graph -> batcher -> graph.run is a cycle; left to the cyclic GC, a retired version's
    session (and its arena, gigabytes after a burst) outlived it: 20 GB after 37
    activations under load. The collector thread breaks the cycle as it ends."""
    import gc
    import weakref

    from service.inference.batching import Batcher

    class Graph:
        def run(self, feeds):
            return {"y": feeds["x"]}

    gc.disable()
    try:
        graph = Graph()
        # Two collectors: the cycle is broken once, by the last one to end.
        graph.batcher = Batcher(graph.run, max_size=4, max_delay_s=0.0, name="t", runs=2)
        assert graph.batcher.submit({"x": np.ones((1, 1), np.float32)}).result(timeout=5)
        alive = weakref.ref(graph)
        threads = graph.batcher._threads
        graph.batcher.close()
        for thread in threads:
            thread.join(timeout=5)
        del graph, threads
        assert alive() is None
    finally:
        gc.enable()
