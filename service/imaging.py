"""Uploads in, images out: bounded body reading, safe decoding, encoding.

Reading rules (documented in the OpenAPI text of every image route):
- ``multipart/form-data``: the image is the file field named by the route (``image``).
  A missing field is ``invalid_parameter`` (422); a part that declares a non-image
  content type (anything but ``image/*`` or ``application/octet-stream``) is
  ``unsupported_media_type`` (415).
- any other body: its ``Content-Type`` must be ``image/*`` or ``application/octet-stream``,
  else ``unsupported_media_type`` (415).
- more bytes than ``max_upload_bytes`` (by Content-Length, or counted while reading) is
  ``too_large`` (413); bytes that do not decode (or are empty or truncated) are
  ``undecodable`` (400); more pixels than ``max_pixels`` is ``too_many_pixels`` (422),
  refused from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from zlib_ng import zlib_ng

from core.errors import InvalidParameter, public_reason
from service.errors import (
    MalformedMultipart,
    TooLarge,
    TooManyPixels,
    Undecodable,
    UnsupportedMediaType,
    multipart_error,
)

# Our own pixel check (Settings.max_pixels) answers bombs with a clear 422; Pillow's global
# limit would otherwise warn or raise first with a different message.
Image.MAX_IMAGE_PIXELS = None

# Multipart framing (boundaries, part headers, small fields) on top of the image bytes.
MULTIPART_OVERHEAD = 64 * 1024
# Parts an image route's multipart body may have beyond its image fields; more are refused
# 413 too_many_parts before they are parsed (stated in the schema: routes/inference.py).
MAX_FORM_FIELDS = 16
EXTRA_FILES = 2
OCTET_STREAM = "application/octet-stream"

MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _is_image_type(media_type: str) -> bool:
    return media_type.startswith("image/") or media_type == OCTET_STREAM


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing it as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body has {int(declared)} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise TooLarge(f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _replayed_form(request: Request, body: bytes, max_files: int) -> FormData:
    """Parse a multipart body already read (and size-checked) into memory."""
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    replay = Request(request.scope, receive)
    try:
        form = await replay.form(max_files=max_files, max_fields=MAX_FORM_FIELDS)
    except Exception as exc:  # malformed multipart framing is a client error
        raise multipart_error(exc) from None
    boundary = _boundary(request.headers.get("content-type", ""))
    if boundary and b"--" + boundary + b"--" not in body:
        # Starlette keeps the parts it read from a cut-off body; a truncated upload is a
        # broken body, not a request that forgot a field.
        await form.close()
        raise MalformedMultipart("the multipart body is truncated: its closing boundary is"
                                 " missing")
    return form


def _boundary(content_type: str) -> bytes | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value:
            return value.strip().strip('"').encode("latin-1", "replace")
    return None


async def _form_images(
    form: FormData, fields: tuple[str, ...], max_bytes: int
) -> tuple[dict[str, bytes], dict[str, str]]:
    images: dict[str, bytes] = {}
    for name in fields:
        part = form.get(name)
        if part is None:
            raise InvalidParameter(name, "missing: send the image as a file field")
        if not isinstance(part, UploadFile):
            raise UnsupportedMediaType(f"form field {name!r} must be a file, not text")
        part_type = _media_type(part.content_type)
        if part_type and not _is_image_type(part_type):
            raise UnsupportedMediaType(f"form field {name!r} is {part_type!r}, not an image")
        data = await part.read()
        if len(data) > max_bytes:
            raise TooLarge(f"{name!r} has {len(data)} bytes; the limit is {max_bytes}")
        images[name] = data
    texts = {k: v for k, v in form.items() if isinstance(v, str)}
    return images, texts


async def read_uploads(
    request: Request, fields: tuple[str, ...], max_bytes: int
) -> tuple[dict[str, bytes], dict[str, str]]:
    """Image bytes per field, plus the plain form fields (multipart only).

    A raw ``image/*`` body counts as the single field when the route takes one image.
    """
    media_type = _media_type(request.headers.get("content-type"))
    if media_type == "multipart/form-data":
        body = await read_body(request, max_bytes * len(fields) + MULTIPART_OVERHEAD)
        form = await _replayed_form(request, body, max_files=len(fields) + EXTRA_FILES)
        try:
            return await _form_images(form, fields, max_bytes)
        finally:
            await form.close()
    if len(fields) != 1:
        raise UnsupportedMediaType(
            f"send multipart/form-data with file fields {', '.join(fields)}"
        )
    if not _is_image_type(media_type):
        raise UnsupportedMediaType(
            f"content type {media_type or '(none)'!r} is not an image: send image/* or"
            " multipart/form-data with a file field 'image'"
        )
    return {fields[0]: await read_body(request, max_bytes)}, {}


def _to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit scaled (not clipped), alpha over white."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            scaled = values / 257.0
        elif mode == "I" and values.min() >= 0 and values.max() <= 65535:
            # 16-bit PNGs decode to mode "I" holding 0..65535.
            scaled = values / 257.0
        else:
            lo, hi = float(values.min()), float(values.max())
            if mode == "F" and lo >= 0.0 and hi <= 1.0:
                scaled = values * 255.0
            else:
                scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else values * 0.0
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "1":
        image = image.convert("L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def declared_size(data: bytes) -> tuple[int, int]:
    """(width, height) the image's header declares, read without decoding a pixel; (0, 0)
    for bytes that do not open (decode_image refuses them later, having held nothing)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return (0, 0)


def decode_image(data: bytes, max_pixels: int,
                 reduce_to: tuple[int, int] | None = None) -> Image.Image:
    """Decode untrusted bytes into an EXIF-oriented 8-bit RGB image.

    ``reduce_to``: the caller needs no more than this (width, height) (its answer does not
    carry the image at full size: classify). A JPEG at least twice that size in both
    dimensions is then decoded by libjpeg's DCT scaling (Pillow's ``draft``) at 1/2, 1/4 or
    1/8, never below ``reduce_to``: decoding a 12-megapixel photo for a 224-pixel crop
    costs a fraction of the full decode. Callers ask for twice the model's input, so the
    resize after it still has full-resolution detail to filter from.
    """
    if not data:
        raise Undecodable("the image is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Undecodable("not a decodable image: the format is unknown or unsupported"
                          ) from None
    except Exception as exc:
        raise Undecodable(f"not a decodable image: {public_reason(exc)}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise TooManyPixels(
            f"the image declares {width}x{height} = {width * height} pixels;"
            f" the limit is {max_pixels}"
        )
    if width < 1 or height < 1:
        raise Undecodable(f"the image has an empty size {width}x{height}")
    if reduce_to is not None and image.format == "JPEG":
        # EXIF rotation swaps the axes after decoding: ask for the larger side both ways.
        side = max(reduce_to)
        if width >= 2 * side and height >= 2 * side:
            try:
                image.draft(image.mode, (side, side))
            except Exception:  # a JPEG variant without DCT scaling decodes at full size
                pass
    try:
        image.load()
    except Exception as exc:  # truncated or corrupt data fails here, in any of many ways
        raise Undecodable(f"the image could not be decoded: {public_reason(exc)}") from exc
    try:
        # In place: without it, an upright image (the usual case) is copied whole for nothing.
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # unreadable EXIF: the pixels are still good, serve them as stored
        pass
    try:
        return _to_rgb8(image)
    except Exception as exc:  # a pixel mode Pillow cannot convert
        raise Undecodable(f"unsupported pixel format {image.mode!r}: {public_reason(exc)}"
                          ) from exc


def encode_image(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "png":
        if image.mode in _PNG_COLOUR_TYPES:
            return encode_png(image)
        # Level 1 is several times faster than the default for a few percent more bytes.
        image.save(out, format="PNG", compress_level=1)
    elif fmt == "jpeg":
        image.convert("RGB").save(out, format="JPEG", quality=92)
    elif fmt == "webp":
        image.save(out, format="WEBP", quality=90, method=2)
    else:  # routes validate the format; reaching here is a bug
        raise ValueError(f"unknown image format {fmt!r}")
    return out.getvalue()


# PNG colour type of each 8-bit mode encode_png writes (others go through Pillow).
_PNG_COLOUR_TYPES = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SUB_FILTER = 1
_IDAT_BYTES = 1 << 23  # IDAT chunks of 8 MiB: far below PNG's 2**31 - 1 per chunk


def encode_png(image: Image.Image) -> bytes:
    """A lossless PNG of an 8-bit L, LA, RGB or RGBA image, written for speed.

    Pillow's PNG encoder tries all five row filters on every row and keeps the best, and
    that search costs more than the deflate at level 1 (docs/BENCHMARKS.md, "The request's
    own cost"). Here every row takes the Sub filter (each byte minus the one a pixel to
    its left, mod 256: smooth photo areas and flat cartoon colours become runs of small
    values), computed in numpy, and deflated with the run-length strategy at level 1,
    which finds those runs without hash chains, by zlib-ng (zlib's format and API, SIMD
    inside): about 4x less CPU than Pillow's level 1 on a 512x512 RGBA cut-out (2.5x with
    the standard library's zlib), for about the same bytes. The pixels decode exactly.
    """
    colour_type = _PNG_COLOUR_TYPES[image.mode]
    pixels = np.asarray(image, dtype=np.uint8)
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    flat = pixels.reshape(height, width * channels)
    rows = np.empty((height, width * channels + 1), np.uint8)
    rows[:, 0] = _SUB_FILTER
    rows[:, 1:1 + channels] = flat[:, :channels]
    np.subtract(flat[:, channels:], flat[:, :-channels], out=rows[:, 1 + channels:])
    deflate = zlib_ng.compressobj(1, zlib_ng.DEFLATED, 15, 9, zlib_ng.Z_RLE)
    data = deflate.compress(rows.data) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", header)]
    parts += [_png_chunk(b"IDAT", data[i:i + _IDAT_BYTES])
              for i in range(0, len(data), _IDAT_BYTES)]
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib_ng.crc32(payload, zlib_ng.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
