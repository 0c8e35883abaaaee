"""Compound cartoonize served over HTTP: a DCT-Net style imported from a release folder
in the official layout (test-made weights), checked against the authors' five steps
re-implemented with OpenCV, and on inputs that try to break the face stage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import faces
from families.cartoonize import compound
from families.cartoonize.area import resize_area
from tests.api.conftest import decoded, encode
from tests.support.compound_release import authors_graph, generator_npz, write_release
from tests.support.dctnet_authors import authors_cartoonize
from tests.support.server import ApiServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_release(tmp_path_factory.mktemp("release") / "style")


@pytest.fixture(scope="module")
def compound_store(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``toon`` (v1 the release as imported, active) and ``toon-identity`` (the same
    background, an identity head: what the face region looks like without the head)."""
    from families.cartoonize.compound_net import read_mask
    from model_store.manifest import Lineage
    from model_store.store import ModelStore
    from worker.importer import import_checkpoint
    from worker.nets.checkpoints import load_official
    from worker.training.publish import publish_version

    root = tmp_path_factory.mktemp("compound-store")
    store = ModelStore(root)
    parts = {"": release / "cartoon_bg.pb", "head": release / "cartoon_h.pb",
             "mask": release / "alpha.jpg"}
    import_checkpoint(store, task="cartoonize", arch="dctnet-compound", parts=parts,
                      model="toon", activate=True,
                      extra={"style": {"name": "anime", "licence": "test-made",
                                       "source": "tests/support/compound_release.py"}})
    swapped = load_official("dctnet-compound", parts).module
    swapped.head = torch.nn.Identity()
    swapped.set_mask(read_mask(release / "alpha.jpg"))
    publish_version(store, model_name="toon-identity", arch_name="dctnet-compound",
                    module=swapped, lineage=Lineage(source="import"), activate=True)
    return root


@pytest.fixture(scope="module")
def http(compound_store: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[httpx.Client]:
    server = ApiServer(compound_store, tmp_path_factory.mktemp("logs") / "server.log",
                       {"TOONFORGE_DEFAULT_MODELS": json.dumps({"cartoonize": "toon"})})
    with server.client(timeout=180) as client:
        yield client
    server.stop()


def post(http: httpx.Client, image: np.ndarray | Image.Image, query: str = ""
         ) -> httpx.Response:
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    response = http.post(f"/cartoonize?model=toon{query}", content=encode(picture, "PNG"),
                         headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    return response


def pixels(response: httpx.Response) -> np.ndarray:
    return np.asarray(decoded(response.content).convert("RGB")).astype(int)


def astronaut() -> np.ndarray:
    return data.astronaut()


def two_faces() -> np.ndarray:
    canvas = Image.new("RGB", (900, 560), (128, 140, 150))
    head = Image.fromarray(astronaut()).crop((140, 20, 310, 210))
    canvas.paste(head.resize((204, 228)), (60, 150))
    canvas.paste(head.resize((306, 342)), (480, 60))
    return np.asarray(canvas)


def same_points(photo: np.ndarray):
    """The points the served pipeline finds on its shrunk copy, for the reference."""
    small = resize_area(photo, compound.work_size(photo.shape[1::-1]))
    found = [f.points for f in faces.detect(Image.fromarray(small))]
    return lambda _: found


@pytest.mark.parametrize("photo", [astronaut, two_faces], ids=["astronaut", "two-faces"])
def test_served_compound_equals_the_authors_pipeline(http, release, photo):
    rgb = photo()
    response = post(http, rgb)
    count = 1 if photo is astronaut else 2
    assert response.headers["x-faces-cartoonized"] == str(count)
    assert response.headers["x-faces-found"] == str(count)
    assert response.headers["x-faces-mode"] == "compound"
    assert response.headers["x-model-version"] == "toon@1"
    mask = cv2.cvtColor(cv2.imread(str(release / "alpha.jpg")), cv2.COLOR_BGR2GRAY)
    mask = mask.astype(np.float32) / 255.0
    theirs = authors_cartoonize(rgb, authors_graph(generator_npz(release, 1)),
                                authors_graph(generator_npz(release, 2)), mask,
                                same_points(rgb))
    diff = np.abs(pixels(response) - theirs.astype(int))
    # onnxruntime vs PyTorch float noise flips a truncated level here and there
    assert diff.mean() < 0.1, diff.mean()
    assert diff.max() <= 3, diff.max()


def test_the_face_region_comes_from_the_head_graph(http):
    rgb = astronaut()
    served = post(http, rgb)
    identity = http.post("/cartoonize?model=toon-identity", content=encode(
        Image.fromarray(rgb), "PNG"), headers={"content-type": "image/png"})
    assert identity.headers["x-faces-cartoonized"] == "1"
    x, y, w, h = (round(v) for v in json.loads(served.headers["x-faces-boxes"])[0])
    changed = np.abs(pixels(served) - pixels(identity)).max(axis=2) > 8
    assert changed[y:y + h, x:x + w].mean() > 0.5
    outside = np.ones(changed.shape, bool)
    outside[max(y - h, 0):y + 2 * h, max(x - w, 0):x + 2 * w] = False
    assert not (pixels(served) != pixels(identity)).any(axis=2)[outside].any()


def test_no_face_and_faces_off_are_the_background_alone(http):
    coffee = data.coffee()
    none = post(http, coffee)
    assert none.headers["x-faces-found"] == "0"
    assert none.headers["x-faces-cartoonized"] == "0"
    off = post(http, coffee, "&faces=off")
    assert off.headers["x-faces-mode"] == "off" and "x-faces-found" not in off.headers
    assert np.array_equal(pixels(none), pixels(off))
    portrait_off = post(http, astronaut(), "&faces=off")
    assert portrait_off.headers["x-faces-cartoonized"] == "0"


def test_a_plain_version_says_it_has_no_head_graph(tmp_path, start_server):
    from tests.api.tiny_models import build_tiny_store

    build_tiny_store(tmp_path / "tiny")
    with start_server(tmp_path / "tiny").client() as client:
        response = client.post("/cartoonize", content=encode(Image.fromarray(astronaut())),
                               headers={"content-type": "image/png"})
    assert response.status_code == 200
    assert response.headers["x-faces-mode"] == "no-head-graph"
    assert response.headers["x-faces-cartoonized"] == "0"


def hard_inputs() -> dict[str, Image.Image]:
    face = Image.fromarray(astronaut())
    head = face.crop((140, 20, 310, 210)).resize((96, 108))
    grid = Image.new("RGB", (960, 540), (200, 200, 200))
    for i in range(50):
        grid.paste(head, ((i % 10) * 96, (i // 10) * 108))
    return {
        "cut-by-border": face.crop((215, 0, 512, 512)),
        "tiny-face": face.resize((64, 64)),
        "tiny-image": face.resize((3, 2)),
        "huge-face": face.crop((175, 55, 275, 175)).resize((1500, 1800)),
        "fifty-faces": grid,
        "rotated": face.rotate(30, expand=True, fillcolor=(255, 255, 255)),
        "upside-down": face.rotate(180),
        "panorama": face.resize((2400, 130)),
    }


@pytest.mark.parametrize("name", list(hard_inputs()))
def test_hard_inputs_answer_and_say_what_was_done(http, name):
    image = hard_inputs()[name]
    response = post(http, image)
    assert decoded(response.content).size == image.size
    found = int(response.headers["x-faces-found"])
    done = int(response.headers["x-faces-cartoonized"])
    assert 0 <= done <= min(found, 8)
    assert len(json.loads(response.headers["x-faces-boxes"])) == done
    if name == "fifty-faces":
        assert found >= 40 and done == 8
    if name in ("huge-face", "rotated", "upside-down"):
        assert done >= 1


# ------------------------------------------------------------------------ the styles
@pytest.fixture(scope="module")
def server_url(http: httpx.Client) -> str:
    return str(http.base_url).rstrip("/")


def test_styles_list_what_is_served_with_a_preview(http):
    import base64
    import io

    styles = http.get("/styles").json()["styles"]
    assert [s["name"] for s in styles] == ["anime"]  # toon-identity says no style
    (anime,) = styles
    assert (anime["model"], anime["version"], anime["compound"]) == ("toon", 1, True)
    assert anime["licence"] == "test-made"
    head, data = anime["preview"].split(",", 1)
    assert head == "data:image/jpeg;base64"
    preview = Image.open(io.BytesIO(base64.b64decode(data)))
    assert preview.format == "JPEG" and max(preview.size) == 128


def test_style_picks_its_model_and_bad_styles_are_named(http):
    body = encode(Image.fromarray(astronaut()), "PNG")
    headers = {"content-type": "image/png"}
    picked = http.post("/cartoonize?style=anime", content=body, headers=headers)
    assert picked.status_code == 200 and picked.headers["x-model-version"] == "toon@1"
    unknown = http.post("/cartoonize?style=3d", content=body, headers=headers)
    assert unknown.status_code == 422
    error = unknown.json()["error"]
    assert error["code"] == "invalid_parameter" and "served: anime" in error["message"]
    both = http.post("/cartoonize?style=anime&model=toon", content=body, headers=headers)
    assert both.status_code == 422 and "not both" in both.json()["error"]["message"]


def test_the_sdk_and_cli_list_styles_and_cartoonize_by_style(server_url, tmp_path):
    import subprocess
    import sys

    from toonforge_client import Client

    with Client(server_url) as client:
        assert [s["name"] for s in client.list_styles()["styles"]] == ["anime"]
        result = client.cartoonize(encode(Image.fromarray(two_faces())), style="anime")
        assert result.model_version == "toon@1"
        assert (result.faces_found, result.faces_cartoonized) == (2, 2)
        off = client.cartoonize(encode(Image.fromarray(two_faces())), style="anime",
                               faces="off")
        assert off.faces_cartoonized == 0 and off.faces_found is None
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from toonforge_client.cli import main;"
         " sys.exit(main(sys.argv[1:]))", "--url", server_url, "styles"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "anime" in proc.stdout and "toon@1" in proc.stdout
