"""families/portrait/processing.py and layout.py against the authors' steps, written again
here from their demo and composite scripts with OpenCV / scikit-image / scipy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import data

from families.portrait.processing import (
    area_resize,
    blur,
    composite,
    drawing_values,
    face_region,
    paste,
    region_pixels,
    split_side_by_side,
)
from families.portrait.spec import PortraitLayout
from tasks.layouts import Scan


def demo_box(face: tuple[int, int, int, int], width: int, height: int
             ) -> tuple[int, int, int, int]:
    """The region the demo's crop_face cuts (frame pixels; outside the frame is padding)."""
    x, y, w, h = face
    left, right = x - int(float(w) * 0.4), x + w + int(float(w) * 0.4)
    top, bottom = y - int(float(h) * 0.6), y + h + int(float(h) * 0.2)
    hf, wf = bottom - top, right - left
    if hf - 2 > wf:
        pad = int((hf - wf) / 2)
        left, right = left - pad, right + pad
    elif wf - 2 > hf:
        pad = int((wf - hf) / 2)
        top, bottom = top - pad, bottom + pad
    return left, top, right, bottom


@pytest.mark.parametrize("face", [(178, 63, 89, 112), (0, 0, 60, 40), (400, 450, 120, 61),
                                  (10, 200, 300, 100), (250, 250, 7, 9)])
def test_crop_box_is_the_demos(face: tuple[int, int, int, int]) -> None:
    crop = face_region(face).crop
    assert (crop.left, crop.top, crop.right, crop.bottom) == demo_box(face, 512, 512)


def demo_face_pixels(rgb: np.ndarray, face: tuple[int, int, int, int]) -> np.ndarray:
    """The demo's crop_face on a BGR frame, its result back in RGB."""
    bgr = rgb[:, :, ::-1]
    x, y, w, h = face
    height, width = bgr.shape[:2]
    side, up, down = int(float(w) * 0.4), int(float(h) * 0.6), int(float(h) * 0.2)
    left, top, right, bottom = x - side, y - up, x + w + side, y + h + down
    pads = ((max(-top, 0), max(bottom - height, 0)), (max(-left, 0), max(right - width, 0)),
            (0, 0))
    cut = bgr[max(top, 0):min(bottom, height), max(left, 0):min(right, width)]
    cut = np.pad(cut, pads, constant_values=255)
    hf, wf = cut.shape[:2]
    if hf - 2 > wf:
        extra = int((hf - wf) / 2)
        cut = np.pad(cut, ((0, 0), (extra, extra), (0, 0)), constant_values=255)
    elif wf - 2 > hf:
        extra = int((wf - hf) / 2)
        cut = np.pad(cut, ((extra, extra), (0, 0), (0, 0)), constant_values=255)
    return cv2.resize(cut, (512, 512), interpolation=cv2.INTER_AREA)[:, :, ::-1]


@pytest.mark.parametrize("face", [(178, 63, 89, 112), (0, 0, 60, 40), (400, 450, 120, 61),
                                  (10, 200, 300, 100), (100, 100, 400, 390)])
def test_network_input_pixels_are_the_demos(face: tuple[int, int, int, int]) -> None:
    photo = data.astronaut()
    ours = area_resize(region_pixels(Image.fromarray(photo), face_region(face)), 512)
    theirs = demo_face_pixels(photo, face).astype(int)
    if max(face[2], face[3]) < 300:  # enlarged: the same bytes
        assert np.array_equal(ours, theirs)
    else:
        assert np.abs(ours.astype(int) - theirs).max() <= 1


@pytest.mark.parametrize("side", [37, 201, 333, 511, 512, 700, 1024])
def test_area_resize_is_opencvs_inter_area(side: int) -> None:
    photo = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_LINEAR)
    ours = area_resize(photo, 512).astype(int)
    theirs = cv2.resize(photo, (512, 512), interpolation=cv2.INTER_AREA).astype(int)
    if side < 512:  # enlarging: OpenCV's fixed-point bytes exactly
        assert np.array_equal(ours, theirs)
    else:
        assert np.abs(ours - theirs).max() <= 1 and (ours != theirs).mean() < 1e-3


def test_white_outside_the_frame() -> None:
    photo = data.astronaut()
    region = face_region((0, 0, 100, 100))
    pixels = region_pixels(Image.fromarray(photo), region)
    assert pixels.shape == (region.crop.height, region.crop.width, 3)
    assert (pixels[0, 0] == 255).all()  # above and left of the frame


@pytest.mark.parametrize("sigma", [0.0, 2.0, 7.5])
def test_blur_is_the_authors_gaussian_per_channel(sigma: float) -> None:
    pixels = data.chelsea()[:90, :120].astype(np.float64)
    if sigma == 0.0:
        assert np.array_equal(blur(pixels, sigma), pixels)
        return
    ref = ndimage.gaussian_filter(pixels, (sigma, sigma, 0), mode="nearest", truncate=4.0)
    assert np.abs(blur(pixels, sigma) - ref).max() < 1e-9


def test_composite_blends_blurred_photo_and_drawing() -> None:
    pixels = data.coffee()[:64, :80]
    drawing = Image.fromarray(np.linspace(0, 200, 64 * 80).reshape(64, 80).astype(np.uint8))
    sigma, alpha = 3.0, 0.3
    lines = np.asarray(drawing, np.float64)
    lines = lines / (lines.max() + 1e-8) * 255
    expected = ndimage.gaussian_filter(pixels.astype(np.float64), (sigma, sigma, 0),
                                       mode="nearest") * alpha + lines[:, :, None] * (1 - alpha)
    got = np.asarray(composite(pixels, drawing, sigma, alpha), np.float64)
    assert np.abs(got - np.clip(expected, 0, 255)).max() <= 0.5 + 1e-9


def test_drawing_is_one_minus_d1_min_max() -> None:
    d1 = np.array([[[[0.2, 0.6], [0.4, 1.0]]]], np.float32)
    assert np.allclose(drawing_values(d1), [[1.0, 0.5], [0.75, 0.0]])
    assert np.array_equal(drawing_values(np.full((1, 1, 4, 4), 0.3, np.float32)),
                          np.ones((4, 4)))  # nothing drawn: the blank page


def test_full_output_replaces_only_the_region() -> None:
    photo = Image.fromarray(data.astronaut())
    region = face_region((178, 63, 89, 112))
    drawn = Image.new("RGB", (region.crop.width, region.crop.height), (1, 2, 3))
    frame = np.asarray(paste(photo, region, drawn))
    box = region.crop
    assert (frame[max(box.top, 0):box.bottom, box.left:box.right] == (1, 2, 3)).all()
    assert np.array_equal(frame[box.bottom:], np.asarray(photo)[box.bottom:])


def _write(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def test_side_by_side_layout(tmp_path: Path) -> None:
    for i in range(4):
        pair = Image.new("RGB", (64, 32), (10 * i, 0, 0))
        pair.paste((255, 255, 255), (32, 0, 64, 32))
        _write(tmp_path / "train" / f"{i}.png", pair)
    _write(tmp_path / "test" / "t.png", Image.new("RGB", (64, 32)))
    _write(tmp_path / "train" / "odd.png", Image.new("RGB", (50, 32)))
    scan = Scan(tmp_path, max_pixels=10**6)
    result = PortraitLayout().scan(scan)
    assert not scan.problems and result.given
    assert [len(result.splits["train"]), len(result.splits["val"])] == [4, 1]
    sample = result.splits["train"][0]
    assert sample["photo"] == sample["drawing"] and (sample["width"], sample["height"]) == (32, 32)
    assert [s.path for s in scan.skipped] == ["train/odd.png"]
    photo, drawing = split_side_by_side(Image.open(tmp_path / "train" / "1.png"))
    assert photo.getpixel((0, 0)) == (10, 0, 0) and drawing.getpixel((0, 0)) == (255, 255, 255)


def test_folder_layout(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / "photo" / f"{i}.png", Image.new("RGB", (16, 16)))
        _write(tmp_path / "drawing" / f"{i}.png", Image.new("L", (16, 16), 255))
    scan = Scan(tmp_path, max_pixels=10**6)
    result = PortraitLayout().scan(scan)
    assert not scan.problems
    assert sum(len(v) for v in result.splits.values()) == 3
