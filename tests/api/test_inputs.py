"""Input handling: every image mode, EXIF, and every 4xx an upload can earn."""

from __future__ import annotations

import io
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import decoded, encode, gradient16, png_size


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG whose header declares width x height pixels."""
    data = bytearray(encode(Image.new("RGB", (8, 8)), "PNG"))
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    data[ihdr + 8:ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4:ihdr + 21])) & 0xFFFFFFFF
    data[ihdr + 21:ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def exif_rotated_jpeg(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=90, exif=exif)


# ------------------------------------------------------------------ accepted inputs
@pytest.mark.parametrize("mode", ["L", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I", "PA"])
def test_every_image_mode_is_accepted(client, astronaut, mode):
    small = astronaut.resize((96, 64))
    if mode == "I;16":
        image = Image.fromarray(gradient16(96, 64))
        assert image.mode == "I;16"
    elif mode == "I":
        image = Image.fromarray(gradient16(96, 64).astype(np.int32))
    elif mode == "PA":
        image = small.convert("RGBA").convert("PA")
    else:
        image = small.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode in ("I", "PA") else "PNG")
    response = client.post("/cartoonize", content=encode(image, fmt),
                           headers={"content-type": f"image/{fmt.lower()}"})
    assert response.status_code == 200, response.text
    assert png_size(response.content) == (96, 64)


def test_sixteen_bit_png_is_scaled_not_clipped(client):
    """A full-range 16-bit ramp must come out as a ramp, not a white block."""
    image = Image.fromarray(gradient16(128, 32))
    response = client.post("/autoencode", files={"image": ("ramp.png", encode(image), "image/png")})
    assert response.status_code == 200
    # The identity-ish cartoon graph shows what the service decoded.
    cartoon = client.post("/cartoonize", content=encode(image),
                          headers={"content-type": "image/png"})
    pixels = np.asarray(decoded(cartoon.content).convert("L"), np.float32)
    assert pixels[:, :8].mean() < 40 and pixels[:, -8:].mean() > 215


def test_palette_with_transparency(client, chelsea):
    image = chelsea.resize((80, 60)).convert("P")
    image.info["transparency"] = 0
    response = client.post("/matte", files={"image": ("cat.png", encode(image, "PNG",
                                                                         transparency=0))})
    assert response.status_code == 200
    assert png_size(response.content) == (80, 60)


@pytest.mark.parametrize("orientation, rotated", [(1, False), (3, False), (6, True), (8, True)])
def test_exif_orientation_sets_the_output_size(client, astronaut, orientation, rotated):
    stored = astronaut.resize((300, 200))
    body = exif_rotated_jpeg(stored, orientation)
    response = client.post("/cartoonize", files={"image": ("p.jpg", body, "image/jpeg")})
    assert response.status_code == 200
    assert png_size(response.content) == ((200, 300) if rotated else (300, 200))
    matte = client.post("/matte", content=body, headers={"content-type": "image/jpeg"})
    assert png_size(matte.content) == ((200, 300) if rotated else (300, 200))


def test_octet_stream_and_octet_stream_parts_are_sniffed(client, astronaut_jpeg):
    raw = client.post("/classify", content=astronaut_jpeg,
                      headers={"content-type": "application/octet-stream"})
    assert raw.status_code == 200
    part = client.post("/classify", files={"image": ("x", astronaut_jpeg,
                                                     "application/octet-stream")})
    assert part.status_code == 200


# ------------------------------------------------------------------ refused inputs
def test_decompression_bomb_is_refused_before_decoding(client):
    response = client.post("/matte", content=bomb_png(), headers={"content-type": "image/png"})
    error = assert_error(response, 422, "too_many_pixels")
    assert "20000x20000" in error["message"]


def test_truncated_jpeg_is_undecodable(client, astronaut_jpeg):
    truncated = astronaut_jpeg[: len(astronaut_jpeg) // 2]
    assert_error(client.post("/cartoonize", content=truncated,
                             headers={"content-type": "image/jpeg"}), 400, "undecodable")


@pytest.mark.parametrize("body", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
@pytest.mark.parametrize("path", ["/matte", "/cartoonize", "/classify", "/autoencode"])
def test_garbage_declared_as_image_is_undecodable(client, body, path):
    # /cartoonize sizes its graph from the header before decoding: no header, no size.
    assert_error(client.post(path, content=body, headers={"content-type": "image/png"}),
                 400, "undecodable")


def test_raw_body_over_the_byte_cap(client):
    body = b"\xff" * 2_500_000  # the module's server caps uploads at 2 MB
    assert_error(client.post("/matte", content=body, headers={"content-type": "image/jpeg"}),
                 413, "too_large")


def test_chunked_body_over_the_byte_cap_is_cut_while_reading(client):
    def chunks():
        for _ in range(40):
            yield b"\0" * 100_000

    response = client.post("/matte", content=chunks(), headers={"content-type": "image/png"})
    assert_error(response, 413, "too_large")


def test_multipart_over_the_byte_cap(client):
    files = {"image": ("big.png", b"\0" * 2_500_000, "image/png")}
    assert_error(client.post("/classify", files=files), 413, "too_large")


def test_text_body_is_unsupported(client):
    assert_error(client.post("/matte", content=b"hello", headers={"content-type": "text/plain"}),
                 415, "unsupported_media_type")


def test_missing_content_type_is_unsupported(client, astronaut_jpeg):
    request = client.build_request("POST", "/matte", content=astronaut_jpeg)
    assert "content-type" not in request.headers
    assert_error(client.send(request), 415, "unsupported_media_type")


def test_json_body_is_unsupported(client):
    assert_error(client.post("/classify", json={"image": "x"}), 415, "unsupported_media_type")


def test_multipart_text_part_is_unsupported(client):
    files = {"image": ("notes.txt", b"hello", "text/plain")}
    assert_error(client.post("/matte", files=files), 415, "unsupported_media_type")


def test_multipart_image_as_plain_field_is_unsupported(client):
    assert_error(client.post("/matte", data={"image": "abc"},
                             files={"other": ("x.png", b"x", "image/png")}),
                 415, "unsupported_media_type")


def test_multipart_without_image_field_names_the_field(client, astronaut_jpeg):
    response = client.post("/matte", files={"picture": ("a.jpg", astronaut_jpeg, "image/jpeg")})
    error = assert_error(response, 422, "invalid_parameter")
    assert error["message"].startswith("image")


def test_interpolate_needs_multipart(client, astronaut_jpeg):
    response = client.post("/autoencode/interpolate", content=astronaut_jpeg,
                           headers={"content-type": "image/jpeg"})
    assert_error(response, 415, "unsupported_media_type")


def test_interpolate_missing_second_image(client, astronaut_jpeg):
    response = client.post("/autoencode/interpolate",
                           files={"image_a": ("a.jpg", astronaut_jpeg, "image/jpeg")})
    error = assert_error(response, 422, "invalid_parameter")
    assert "image_b" in error["message"]


def test_oversized_upload_does_not_hang_the_server(client, astronaut_jpeg):
    """After refusals the server still answers real work promptly."""
    for _ in range(3):
        client.post("/matte", content=b"\0" * 2_500_000, headers={"content-type": "image/png"})
    ok = client.post("/matte", content=astronaut_jpeg, headers={"content-type": "image/jpeg"},
                     timeout=10)
    assert ok.status_code == 200
    assert decoded(ok.content).mode == "L"


def test_decoding_is_exif_aware_for_png_too(client, astronaut):
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    astronaut.resize((120, 40)).save(out, "PNG", exif=exif)
    response = client.post("/cartoonize", content=out.getvalue(),
                           headers={"content-type": "image/png"})
    assert png_size(response.content) == (40, 120)


def test_json_bodies_are_bounded_too(client):
    big = b'{"n": 1, "pad": "' + b"x" * 5_000_000 + b'"}'
    assert_error(client.post("/generate", content=big,
                             headers={"content-type": "application/json"}), 413, "too_large")

    def chunks():
        yield b'{"n": 1, "pad": "'
        for _ in range(50):
            yield b"x" * 100_000
        yield b'"}'

    assert_error(client.post("/generate", content=chunks(),
                             headers={"content-type": "application/json"}), 413, "too_large")
    assert client.post("/generate", json={"n": 1}).status_code == 200
