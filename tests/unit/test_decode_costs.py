"""Cheaper decoding: DCT-scaled decode of large JPEGs when the caller needs a
smaller image, and EXIF orientation applied without a copy."""

from __future__ import annotations

import io

import numpy as np
import skimage.data
from PIL import Image

from families.classify.processing import classify_input
from families.classify.spec import ClassifyServing
from service.imaging import decode_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _jpeg(image: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=92, **save)
    return buf.getvalue()


def test_large_jpeg_decodes_reduced_but_not_below_the_request() -> None:
    photo = Image.fromarray(skimage.data.astronaut()).resize((2048, 1600))
    data = _jpeg(photo)
    full = decode_image(data, 10**8)
    reduced = decode_image(data, 10**8, reduce_to=(512, 512))
    assert full.size == (2048, 1600)
    assert reduced.size == (1024, 800)  # 1/2: 1/4 would be under 512 on the short side
    # The classify input made from it is the full decode's to within a few 8-bit levels.
    config = ClassifyServing(resize_shorter=256, crop=224, mean=MEAN, std=STD)
    a = classify_input(full, config)
    b = classify_input(reduced, config)
    assert np.mean(np.abs(a - b)) * 0.226 * 255 < 2.0


def test_small_jpegs_and_other_formats_decode_at_full_size() -> None:
    photo = Image.fromarray(skimage.data.astronaut())  # 512 x 512
    assert decode_image(_jpeg(photo), 10**8, reduce_to=(512, 512)).size == (512, 512)
    big = photo.resize((2048, 2048))
    png = io.BytesIO()
    big.save(png, "PNG", compress_level=1)
    assert decode_image(png.getvalue(), 10**8, reduce_to=(256, 256)).size == (2048, 2048)


def test_exif_orientation_is_still_applied() -> None:
    photo = Image.fromarray(skimage.data.astronaut()).resize((64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(_jpeg(photo, exif=exif), 10**8)
    assert decoded.size == (32, 64) and decoded.mode == "RGB"
