"""The compound cartoonize pipeline (families/cartoonize/compound.py) against a reference
re-implemented from DCT-Net's authors' code with OpenCV (tests/support/dctnet_authors.py),
on real photos, with stand-in generators in the released graphs' contract (BGR 0..255 in,
8-bit BGR out)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

import faces
from families.cartoonize import compound
from families.cartoonize.area import axis_weights, resize_area
from tests.support.dctnet_authors import authors_cartoonize, pad_to_16x, resize_size


def background_graph(bgr: np.ndarray) -> np.ndarray:
    """A stand-in background generator: a 3x3 blur and a colour shift (spatial, so a
    misplaced pad or crop shows), 8-bit as the released graphs answer."""
    x = bgr.astype(np.float32)
    blurred = cv2.blur(x, (3, 3), borderType=cv2.BORDER_REFLECT)
    return np.clip(blurred * np.float32(0.7) + np.float32([40, 10, 60]), 0, 255).astype(np.uint8)


def head_graph(batch: np.ndarray) -> np.ndarray:
    """A stand-in head generator: the negative, channels turned (unmistakable)."""
    return np.ascontiguousarray(255 - batch[..., ::-1])


def identity_graph(batch: np.ndarray) -> np.ndarray:
    return batch.copy()


def with_mask(graph, mask: np.ndarray) -> compound.RunHeads:
    return lambda batch: (graph(batch), mask)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def two_faces(astronaut: np.ndarray) -> np.ndarray:
    canvas = Image.new("RGB", (900, 560), (128, 140, 150))
    head = Image.fromarray(astronaut).crop((140, 20, 310, 210))
    canvas.paste(head.resize((204, 228)), (60, 150))
    canvas.paste(head.resize((306, 342)), (480, 60))
    return np.asarray(canvas)


def finder(limits: faces.DetectLimits = faces.DetectLimits()) -> compound.FindFaces:
    def find(rgb: np.ndarray) -> tuple[list[faces.Face], int]:
        search = faces.find_faces(Image.fromarray(rgb), limits)
        return search.faces, search.found
    return find


def same_points(photo: np.ndarray):
    """The points the served pipeline finds (on its own shrunk copy), for the reference:
    the comparison is of the five steps, not of two detections of two copies."""
    small = resize_area(photo, compound.work_size(photo.shape[1::-1]))
    found = [f.points for f in faces.detect(Image.fromarray(small))]
    return lambda _: found


def served(rgb: np.ndarray, head: compound.RunGraph = head_graph,
           mask: np.ndarray | None = None, on: bool = True) -> compound.CompoundResult:
    mask = faces.soft_mask() if mask is None else mask
    return compound.cartoonize_compound(
        rgb, background_graph, with_mask(head, mask), finder() if on else None)


# -------------------------------------------------------------------------- the steps
@pytest.mark.parametrize("size", [(512, 512), (1000, 700), (700, 1000), (721, 5000),
                                  (719, 2000), (3000, 2000), (33, 17)])
def test_work_size_is_the_authors_resize_size(size):
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    assert compound.work_size(size) == resize_size(image).shape[1::-1]


def test_the_servers_long_side_limit_shrinks_panoramas_further():
    assert compound.work_size((14400, 1000), long_side=2048) == (2048, 142)
    assert compound.work_size((1000, 700), long_side=2048) == (1000, 700)


@pytest.mark.parametrize("shape", [(48, 64), (50, 64), (48, 70), (33, 17), (16, 16)])
def test_padding_is_the_authors_pad_to_16x(shape):
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert np.array_equal(compound.pad_to_multiple(image), pad_to_16x(image)[0])


@pytest.mark.parametrize("src,dst", [(100, 37), (50, 131), (960, 4000), (4000, 960), (5, 5)])
def test_area_resize_is_opencvs_inter_area(src, dst):
    rng = np.random.default_rng(src + dst)
    image = rng.random((7, src, 3), dtype=np.float32) * 255
    ours = resize_area(image, (dst, 7))
    theirs = cv2.resize(image, (dst, 7), interpolation=cv2.INTER_AREA)
    assert np.abs(ours - theirs).max() < 1e-3
    assert np.allclose(axis_weights(src, dst).sum(axis=1), 1.0)


def test_graph_conversions_follow_the_released_graphs():
    pixels = np.array([[[0, 127, 255]]], np.uint8)
    assert np.allclose(compound.graph_input(pixels)[0, :, 0, 0], [-1, 127 / 127.5 - 1, 1])
    out = compound.graph_output(np.array([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0],
                                         np.float32).reshape(1, 3, 1, 2))
    # clip to +-0.999999, (y + 1) * 127.5, then truncated by the uint8 cast; NCHW -> NHWC
    assert out.shape == (1, 1, 2, 3)
    assert out.reshape(-1).tolist() == [0, 127, 254, 0, 254, 254]


# --------------------------------------------------------------- against the reference
@pytest.mark.parametrize("photo", ["astronaut", "two_faces", "big"])
def test_served_compound_equals_the_authors_five_steps(photo, astronaut, two_faces):
    rgb = {"astronaut": astronaut, "two_faces": two_faces,
           "big": np.asarray(Image.fromarray(two_faces).resize((1800, 1120)))}[photo]
    mask = faces.soft_mask()
    ours = served(rgb, mask=mask)
    theirs = authors_cartoonize(rgb, background_graph, head_graph, mask, same_points(rgb))
    assert ours.image.shape == rgb.shape
    assert ours.faces_cartoonized == (1 if photo == "astronaut" else 2)
    diff = np.abs(ours.image.astype(int) - theirs.astype(int))
    # 8-bit rounding of the shrunk photo, the crop and the result: a level here and there
    assert diff.max() <= 2, diff.max()
    assert diff.mean() < 0.1, diff.mean()


def test_the_face_region_comes_from_the_head_graph(astronaut):
    cartoon = served(astronaut).image.astype(int)
    identity = served(astronaut, head=identity_graph).image.astype(int)
    background = served(astronaut, on=False).image.astype(int)
    face = served(astronaut)
    x, y, w, h = (round(v) for v in face.heads[0])
    changed = np.abs(cartoon - identity).max(axis=2) > 8
    # inside the face box the head graph decides; well outside the crop nothing differs
    assert changed[y:y + h, x:x + w].mean() > 0.9
    outside = np.ones(changed.shape, bool)
    outside[max(y - h, 0):y + 2 * h, max(x - w, 0):x + 2 * w] = False
    assert not changed[outside].any()
    assert np.array_equal(cartoon[outside], background[outside])


def test_no_face_is_the_background_alone():
    coffee = data.coffee()
    result = served(coffee)
    assert result.faces_found == 0 and result.heads == []
    assert np.array_equal(result.image, served(coffee, on=False).image)


def test_every_face_gets_a_head_up_to_the_cap(two_faces):
    result = served(two_faces)
    assert result.faces_cartoonized == 2 and result.faces_found == 2
    capped = compound.cartoonize_compound(
        two_faces, background_graph, with_mask(head_graph, faces.soft_mask()),
        finder(faces.DetectLimits(max_faces=1)))
    assert capped.faces_found == 2 and capped.faces_cartoonized == 1
    # the biggest face is the one kept
    assert capped.heads[0] == result.heads[0]
