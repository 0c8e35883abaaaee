"""The request's own cost: the fast PNG writer (lossless in every mode it takes, a valid
file, Pillow's encoder for the modes it does not take) and the tensor helpers that write
in place (the same values as the plain numpy formulas they replace)."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import Image

from families.classify.processing import classify_input
from families.classify.spec import ClassifyServing
from families.matte.processing import matte_input
from families.matte.spec import MatteServing
from service.imaging import _IDAT_BYTES, encode_image, encode_png
from tasks.arrays import chw, normalise, normalised_chw, to_uint8

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _photo() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut()).resize((203, 157))  # odd sides


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_png_round_trips_exactly(mode: str) -> None:
    image = _photo().convert(mode)
    if mode in ("LA", "RGBA"):  # an alpha that varies, like a matte's
        alpha = np.linspace(0, 255, image.width, dtype=np.uint8)[None].repeat(image.height, 0)
        image.putalpha(Image.fromarray(alpha))
    data = encode_image(image, "png")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    back = _decoded(data)
    assert back.mode == mode and back.size == image.size
    assert np.array_equal(np.asarray(back), np.asarray(image))
    # Pillow's own encoder gives the same pixels: only the bytes differ.
    reference = io.BytesIO()
    image.save(reference, "PNG")
    assert np.array_equal(np.asarray(_decoded(reference.getvalue())), np.asarray(back))


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1)])
def test_png_of_tiny_images(size: tuple[int, int]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA")
    assert np.array_equal(np.asarray(_decoded(encode_png(image))), pixels)


def test_png_is_a_well_formed_file() -> None:
    data = encode_png(_photo())
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    offset, kinds = 8, []
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        kind = data[offset + 4:offset + 8]
        payload = data[offset + 8:offset + 8 + length]
        crc = int.from_bytes(data[offset + 8 + length:offset + 12 + length], "big")
        assert crc == zlib.crc32(kind + payload)
        kinds.append(kind)
        offset += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_large_images_split_their_data_over_idat_chunks() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (1800, 1800, 3), dtype=np.uint8)
    data = encode_png(Image.fromarray(pixels, "RGB"))  # ~9.7 MB of incompressible rows
    assert len(data) > _IDAT_BYTES and data.count(b"IDAT") >= 2
    assert np.array_equal(np.asarray(_decoded(data)), pixels)


def test_other_modes_still_encode_through_pillow() -> None:
    for image in (_photo().convert("P"), _photo().convert("1"),
                  Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)):
        back = _decoded(encode_image(image, "png"))
        assert np.array_equal(np.asarray(back.convert(image.mode)), np.asarray(image))


@pytest.mark.parametrize("divide_by_max", [True, False])
def test_matte_input_is_the_numpy_formula(divide_by_max: bool) -> None:
    image = _photo()
    config = MatteServing(size=96, divide_by_max=divide_by_max, mean=MEAN, std=STD)
    resized = np.asarray(image.resize((96, 96), Image.Resampling.BILINEAR), np.float32)
    rgb01 = resized / (resized.max() if divide_by_max else 255.0)
    expected = chw(normalise(rgb01, MEAN, STD))
    got = matte_input(image, config)
    assert got.shape == (1, 3, 96, 96) and got.dtype == np.float32
    assert got.flags["C_CONTIGUOUS"]
    assert np.allclose(got, expected, rtol=0, atol=2e-6)


def test_classify_input_is_the_numpy_formula() -> None:
    image = _photo()
    config = ClassifyServing(resize_shorter=64, crop=56, mean=MEAN, std=STD)
    got = classify_input(image, config)
    patch = (got[0].transpose(1, 2, 0) * np.asarray(STD) + np.asarray(MEAN)) * 255.0
    assert np.allclose(patch, np.rint(patch), atol=1e-3)  # whole 8-bit levels, as before
    expected = chw(normalise(np.rint(patch).astype(np.float32) / 255.0, MEAN, STD))
    assert np.allclose(got, expected, rtol=0, atol=2e-6)


def test_an_all_black_image_normalises_to_minus_mean_over_std() -> None:
    black = np.zeros((4, 5, 3), np.uint8)
    got = normalised_chw(black, 0.0, MEAN, STD)
    assert np.allclose(got[0, :, 0, 0], -np.asarray(MEAN) / np.asarray(STD))


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-1.0, 1.0), (0.2, 0.9)])
def test_to_uint8_is_the_numpy_formula(low: float, high: float) -> None:
    values = np.random.default_rng(2).normal(0.3, 0.8, (3, 17, 19)).astype(np.float32)
    before = values.copy()
    expected = np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255)
    assert np.array_equal(to_uint8(values, low, high), expected.astype(np.uint8))
    assert np.array_equal(values, before)  # the caller's array is left alone
