"""The hostile-input corpus: one table of requests an attacker (or a broken client) sends,
each with the answer it must get.

A case is one HTTP request and its expected status and error ``code``. ``expect`` is an int
where the answer is settled, or a set where the issue leaves the choice open (an extreme
aspect ratio may be refused or served with a bounded crop); ``code`` None means "any code",
used only with such sets. Every error answer must be the JSON envelope unless ``envelope``
is False (answers that uvicorn itself writes before the app sees the request). Cases whose
exact answer waits on an in-progress change carry ``pending`` (who decides) so the lead can
tighten them; ``xfail`` marks a case whose stated behaviour is known not to hold yet.

Bodies are built by small functions at collection time: every image is made here (no
fixture files), so what each case sends is readable next to what it expects.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from tests.support.archives import good_files, image_bytes, zip_bytes

Body = bytes | Callable[[], bytes] | None


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    expect: int | frozenset[int]
    code: str | None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content: Body = None  # a raw body
    # multipart parts: (field name, filename or None, bytes, part content type or None)
    parts: tuple[tuple[str, str | None, bytes, str | None], ...] = ()
    envelope: bool = True
    raw: bool = False  # sent over a plain socket, byte for byte (headers httpx would refuse)
    pending: str = ""  # who settles the exact answer (status class asserted meanwhile)
    xfail: str = ""  # the stated behaviour this case checks does not hold yet (why)

    def body(self) -> bytes | None:
        return self.content() if callable(self.content) else self.content


def _one_of(*statuses: int) -> frozenset[int]:
    return frozenset(statuses)


# ------------------------------------------------------------------ image makers
def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _photo(width: int = 48, height: int = 40, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 7919 + height)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def png(width: int = 48, height: int = 40) -> bytes:
    return _encode(_photo(width, height), "PNG")


def jpeg() -> bytes:
    return _encode(_photo(), "JPEG", quality=85)


def truncated_png() -> bytes:
    data = png(64, 64)
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    data = jpeg()
    return data[: len(data) // 2]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` with one tiny IDAT: a bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def thin_png(width: int, height: int) -> bytes:
    """An extreme aspect ratio (a few hundred bytes: one grey row or column)."""
    return _encode(Image.new("L", (width, height), 128), "PNG", optimize=True)


def animated_gif() -> bytes:
    frames = [_photo(32, 24).convert("P") for _ in range(3)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50,
                   loop=0)


def cmyk_jpeg() -> bytes:
    return _encode(_photo(40, 32, "CMYK"), "JPEG", quality=85)


def png16() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (30, 1))
    return _encode(Image.fromarray(ramp), "PNG")


def palette_alpha_png() -> bytes:
    image = _photo(32, 32).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(image, "PNG", transparency=0)


def svg() -> bytes:
    return (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10000"'
            b' height="10000"><rect width="100%" height="100%" fill="red"/></svg>')


def huge_exif_jpeg() -> bytes:
    """A JPEG whose APP1 EXIF segment is the largest a segment can be, of junk IFDs."""
    body = jpeg()
    junk = b"Exif\0\0" + b"MM\0*\0\0\0\x08" + b"\xff\xff" + b"\xab" * (65533 - 2 - 16)
    segment = b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk
    return body[:2] + segment + body[2:]


def huge_exif_png() -> bytes:
    """A PNG carrying a 1 MB eXIf chunk of junk (under the 2 MB test upload cap)."""
    data = png()
    iend = data.rfind(b"IEND") - 4
    exif = b"MM\0*\0\0\0\x08" + b"\xff\xff" + b"\0" * 1_000_000
    return data[:iend] + _png_chunk(b"eXIf", exif) + data[iend:]


# ------------------------------------------------------------------ archive makers
def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), image_bytes(seed=len(name))


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def tar_symlink() -> bytes:
    return _tar([*(_file(f"images/{i}.png") for i in range(6)),
                 _link("images/evil.png", "/etc/passwd", tarfile.SYMTYPE)])


def tar_hardlink() -> bytes:
    return _tar([*(_file(f"images/{i}.png") for i in range(6)),
                 _link("images/evil.png", "/etc/passwd", tarfile.LNKTYPE)])


def tar_non_utf8_name() -> bytes:
    """A ustar entry whose name bytes are Latin-1, not UTF-8 (written by hand)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT,
                      encoding="latin-1") as tf:
        for i in range(6):
            info, data = _file(f"images/{i}.png")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("images/caf\xe9-\xff.png")
        data = image_bytes(seed=99)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def zip_raw(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return out.getvalue()


def zip_slip() -> bytes:
    return zip_bytes({**good_files("generate"), "../evil.png": image_bytes()})


def zip_absolute() -> bytes:
    return zip_bytes({**good_files("generate"), "/etc/evil.png": image_bytes()})


def zip_backslash() -> bytes:
    return zip_bytes({**good_files("generate"), "..\\..\\evil.png": image_bytes()})


def zip_symlink() -> bytes:
    info = zipfile.ZipInfo("images/evil.png")
    info.external_attr = 0o120777 << 16  # S_IFLNK
    return zip_raw([*good_files("generate").items(), (info, b"/etc/passwd")])


def zip_bomb_small() -> bytes:
    """~10 KB on the wire that inflates 1000x (one 9 MB entry of zeros)."""
    return zip_bytes({**good_files("generate"), "images/zeros.png": b"\0" * 9_000_000})


def zip_nested() -> bytes:
    inner = zip_bytes(good_files("generate"))
    return zip_bytes({"images/inner.zip": inner, "inner.zip": inner})


def zip_duplicate_names() -> bytes:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name": that is the point
        return zip_raw([*good_files("generate").items(), ("images/000.png", image_bytes(seed=7))])


def zip_non_utf8_names() -> bytes:
    """Entry names stored as raw cp437/Latin-1 bytes without the UTF-8 flag."""
    data = bytearray(zip_bytes({**good_files("generate"), "images/caf_-_.png": image_bytes()}))
    name = b"images/caf_-_.png"
    for offset in _find_all(bytes(data), name):
        data[offset + 11] = 0xE9  # "_" -> é (cp437: Θ)
        data[offset + 13] = 0xFF
    return bytes(data)


def zip_invalid_utf8_flagged_name() -> bytes:
    """An entry flagged UTF-8 (general purpose bit 11) whose name is not valid UTF-8."""
    name = b"images/bad_.png"
    data = bytearray(zip_bytes({**good_files("generate"), name.decode(): image_bytes()}))
    for offset in _find_all(bytes(data), name):
        data[offset + 10] = 0xFF  # "_" -> a byte no UTF-8 sequence starts with
        local = data[offset - 30:offset - 26] == b"PK\x03\x04"
        flags = offset - 30 + 6 if local else offset - 46 + 8
        data[flags + 1] |= 0x08  # flag bit 11 (0x800) is in the second byte
    return bytes(data)


def _find_all(data: bytes, needle: bytes) -> list[int]:
    found, start = [], 0
    while (at := data.find(needle, start)) != -1:
        found.append(at)
        start = at + 1
    return found


def zip_empty() -> bytes:
    return zip_raw([])


def zip_only_junk() -> bytes:
    return zip_bytes({f"junk/{i}.txt": b"x" for i in range(50)})


# ------------------------------------------------------------------ the table
IMG = "image/png"
BOUNDARY = "corpusboundary0123456789"


def multipart(*parts: tuple[str, str | None, bytes, str | None],
              boundary: str = BOUNDARY) -> bytes:
    """A multipart body written by hand (so duplicate and odd parts are sent as written)."""
    out = b""
    for name, filename, data, ctype in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

_C = "C (contract gaps / intake)"

IMAGES: list[Case] = [
    Case("truncated PNG", "POST", "/classify", 400, "undecodable",
         headers={"Content-Type": IMG}, content=truncated_png),
    Case("truncated JPEG", "POST", "/matte", 400, "undecodable",
         headers={"Content-Type": "image/jpeg"}, content=truncated_jpeg),
    # Extreme aspect ratios are refused from the header (TOONFORGE_MAX_ASPECT_RATIO), on
    # every route, before the resize could create millions of pixels from a 125-byte PNG.
    Case("1x10000 PNG to classify", "POST", "/classify", 422, "invalid_parameter",
         headers={"Content-Type": IMG}, content=lambda: thin_png(1, 10000)),
    Case("10000x1 PNG to classify", "POST", "/classify", 422, "invalid_parameter",
         headers={"Content-Type": IMG}, content=lambda: thin_png(10000, 1)),
    Case("1x10000 PNG to cartoonize", "POST", "/cartoonize", 422, "invalid_parameter",
         headers={"Content-Type": IMG}, content=lambda: thin_png(1, 10000)),
    Case("10000x1 PNG to matte", "POST", "/matte", 422, "invalid_parameter",
         headers={"Content-Type": IMG}, content=lambda: thin_png(10000, 1)),
    Case("1x40000 PNG in multipart to autoencode", "POST", "/autoencode", 422,
         "invalid_parameter", headers=MULTIPART,
         content=lambda: multipart(("image", "t.png", thin_png(1, 40000), IMG))),
    Case("bomb header 100k x 100k", "POST", "/classify", 422, "too_many_pixels",
         headers={"Content-Type": IMG}, content=lambda: png_header_only(100_000, 100_000)),
    Case("bomb header 1 x 2^31-1", "POST", "/cartoonize", 422, "too_many_pixels",
         headers={"Content-Type": IMG}, content=lambda: png_header_only(1, 2**31 - 1)),
    Case("bomb header in multipart", "POST", "/autoencode", 422, "too_many_pixels",
         headers=MULTIPART,
         content=lambda: multipart(("image", "b.png", png_header_only(100_000, 100_000), IMG))),
    Case("zero-size PNG header", "POST", "/classify", 400, "undecodable",
         headers={"Content-Type": IMG}, content=lambda: png_header_only(0, 0)),
    Case("animated GIF", "POST", "/classify", 200, None,
         headers={"Content-Type": "image/gif"}, content=animated_gif),
    Case("CMYK JPEG", "POST", "/cartoonize", 200, None,
         headers={"Content-Type": "image/jpeg"}, content=cmyk_jpeg),
    Case("16-bit PNG", "POST", "/matte", 200, None,
         headers={"Content-Type": IMG}, content=png16),
    Case("palette PNG with alpha", "POST", "/autoencode", 200, None,
         headers={"Content-Type": IMG}, content=palette_alpha_png),
    Case("zero-byte raw body", "POST", "/classify", 400, "undecodable",
         headers={"Content-Type": IMG}, content=b""),
    Case("zero-byte file part", "POST", "/classify", 400, "undecodable",
         headers=MULTIPART, content=lambda: multipart(("image", "empty.png", b"", IMG))),
    Case("text file named .png", "POST", "/classify", 400, "undecodable",
         headers=MULTIPART,
         content=lambda: multipart(("image", "notes.png", b"just some text\n" * 20, IMG))),
    Case("text declared image/png", "POST", "/matte", 400, "undecodable",
         headers={"Content-Type": IMG}, content=b"GIF89a? no, plain text"),
    Case("SVG", "POST", "/classify", 400, "undecodable",
         headers={"Content-Type": "image/svg+xml"}, content=svg),
    Case("huge EXIF in JPEG", "POST", "/classify", 200, None,
         headers={"Content-Type": "image/jpeg"}, content=huge_exif_jpeg),
    Case("1 MB eXIf chunk in PNG", "POST", "/cartoonize", 200, None,
         headers={"Content-Type": IMG}, content=huge_exif_png),
    Case("over the byte cap", "POST", "/classify", 413, "too_large",
         headers={"Content-Type": IMG}, content=b"\0" * 2_100_000),
]

MULTIPARTS: list[Case] = [
    Case("no boundary (image route)", "POST", "/classify", 400, "malformed_multipart",
         headers={"Content-Type": "multipart/form-data"},
         content=lambda: multipart(("image", "a.png", png(), IMG))),
    Case("no boundary (dataset upload)", "POST", "/datasets", 400, "malformed_multipart",
         params={"task": "generate"}, headers={"Content-Type": "multipart/form-data"},
         content=lambda: multipart(("file", "a.zip", zip_bytes(good_files("generate")), None))),
    Case("boundary never closed", "POST", "/classify", 400, "malformed_multipart",
         headers=MULTIPART, content=lambda: multipart(("image", "a.png", png(), IMG))[:-30]),
    Case("missing field (interpolate, only image_a)", "POST", "/autoencode/interpolate", 422,
         "invalid_parameter", headers=MULTIPART,
         content=lambda: multipart(("image_a", "a.png", png(), IMG))),
    Case("wrong field name", "POST", "/classify", 422, "invalid_parameter", headers=MULTIPART,
         content=lambda: multipart(("picture", "a.png", png(), IMG))),
    Case("image sent as a text field", "POST", "/classify", 415, "unsupported_media_type",
         headers=MULTIPART, content=lambda: multipart(("image", None, b"abc", None))),
    Case("part declares text/plain", "POST", "/classify", 415, "unsupported_media_type",
         headers=MULTIPART, content=lambda: multipart(("image", "a.png", png(), "text/plain"))),
    Case("9 fields (image route)", "POST", "/classify", 200, None,
         headers=MULTIPART,
         content=lambda: multipart(("image", "a.png", png(), IMG),
                                   *((f"f{i}", None, b"x", None) for i in range(8)))),
    Case("40 fields (image route)", "POST", "/classify", 413, "too_many_parts",
         headers=MULTIPART,
         content=lambda: multipart(("image", "a.png", png(), IMG),
                                   *((f"f{i}", None, b"x", None) for i in range(39)))),
    Case("9 fields (dataset upload)", "POST", "/datasets", 201, None,
         params={"task": "generate"}, headers=MULTIPART,
         content=lambda: multipart(("file", "d.zip", zip_bytes(good_files("generate")), None),
                                   *((f"f{i}", None, b"x", None) for i in range(8)))),
    Case("many file parts", "POST", "/classify", 413, "too_many_parts", headers=MULTIPART,
         content=lambda: multipart(*((f"image{i}", f"{i}.png", b"x", IMG) for i in range(12)))),
    Case("duplicate image fields", "POST", "/classify", 200, None,
         headers=MULTIPART,
         content=lambda: multipart(("image", "a.png", png(), IMG), ("image", "b.png", jpeg(),
                                                                     "image/jpeg"))),
    Case("field with filename only (no bytes)", "POST", "/matte", 400, "undecodable",
         headers=MULTIPART, content=lambda: multipart(("image", "only-a-name.png", b"", None))),
    Case("part without Content-Disposition name", "POST", "/classify", 400,
         "malformed_multipart", headers=MULTIPART,
         content=lambda: (f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\n".encode()
                          + png() + f"\r\n--{BOUNDARY}--\r\n".encode())),
    Case("dataset upload: wrong field name", "POST", "/datasets", 422, "invalid_parameter",
         params={"task": "generate"}, headers=MULTIPART,
         content=lambda: multipart(("archive", "d.zip", zip_bytes(good_files("generate")),
                                    None))),
]

ARCHIVES: list[Case] = [
    Case(name, "POST", "/datasets", status, code, params={"task": "generate"},
         headers={"Content-Type": ctype}, content=maker, pending=pending)
    for name, maker, ctype, status, code, pending in [
        ("zip slip ../", zip_slip, "application/zip", 422, "archive_unsafe", ""),
        ("zip absolute path", zip_absolute, "application/zip", 422, "archive_unsafe", ""),
        ("zip backslash path", zip_backslash, "application/zip", 422, "archive_unsafe", ""),
        ("zip symlink entry", zip_symlink, "application/zip", 422, "archive_unsafe", ""),
        ("tar symlink entry", tar_symlink, "application/x-tar", 422, "archive_unsafe", ""),
        ("tar hardlink entry", tar_hardlink, "application/x-tar", 422, "archive_unsafe", ""),
        ("zip bomb (small)", zip_bomb_small, "application/zip", 422, "archive_too_large", ""),
        ("nested zip", zip_nested, "application/zip", 422, "dataset_invalid", ""),
        ("duplicate names", zip_duplicate_names, "application/zip", 422, "archive_unsafe", ""),
        # zip names without the UTF-8 flag are cp437 by the format: every byte is a character
        ("non-UTF-8 zip names", zip_non_utf8_names, "application/zip", 201, None, ""),
        ("zip name flagged UTF-8 but invalid", zip_invalid_utf8_flagged_name,
         "application/zip", 422, "archive_unsafe", ""),
        ("non-UTF-8 tar names", tar_non_utf8_name, "application/x-tar", 422, "archive_unsafe",
         ""),
        ("empty zip", zip_empty, "application/zip", 422, "dataset_invalid", ""),
        ("only junk files", zip_only_junk, "application/zip", 422, "dataset_invalid", ""),
        ("zero-byte upload", lambda: b"", "application/zip", 415, "unsupported_media_type", ""),
        ("an image, not an archive", png, "application/zip", 415, "unsupported_media_type",
         ""),
        ("truncated zip", lambda: zip_bytes(good_files("generate"))[:300], "application/zip",
         415, "unsupported_media_type", ""),
    ]
]

_Q = {"Content-Type": IMG}
QUERIES: list[Case] = [
    Case(f"top_k={v}", "POST", "/classify", 422, "invalid_parameter", params={"top_k": v},
         headers=_Q, content=png)
    for v in ("-1", "0", "NaN", "inf", "-inf", "1e3", "abc", "")
] + [
    Case("top_k over the label count", "POST", "/classify", 422, "invalid_parameter",
         params={"top_k": str(10**30)},
         headers=_Q, content=png),
    Case("unknown query param", "POST", "/classify", 200, None, params={"colour": "blue"},
         headers=_Q, content=png),
    Case("unknown task", "POST", "/infer/sketch", 404, "task_not_found", headers=_Q,
         content=png),
    Case("task without image pipeline", "POST", "/infer/generate", 422, "invalid_parameter",
         headers=_Q, content=png),
    Case("unknown model", "POST", "/classify", 404, "model_not_found", params={"model": "nope"},
         headers=_Q, content=png),
    Case("model of another task", "POST", "/classify", 422, "invalid_parameter",
         params={"model": "matte"}, headers=_Q, content=png),
    Case("model name with ../", "POST", "/classify", 404, "model_not_found",
         params={"model": "../../etc"}, headers=_Q, content=png),
    Case("version 0", "POST", "/matte", 422, "invalid_parameter", params={"version": "0"},
         headers=_Q, content=png),
    Case("version -1", "POST", "/matte", 422, "invalid_parameter", params={"version": "-1"},
         headers=_Q, content=png),
    Case("version huge", "POST", "/matte", 404, "version_not_found",
         params={"version": "999999"}, headers=_Q, content=png),
    Case("version past int64", "POST", "/matte", 404, "version_not_found",
         params={"version": str(2**64)}, headers=_Q, content=png),
    Case("version NaN", "POST", "/matte", 422, "invalid_parameter", params={"version": "NaN"},
         headers=_Q, content=png),
    Case("catalogue version 0", "GET", "/models/matte/versions/0", 422, "invalid_parameter"),
    Case("catalogue version -1", "GET", "/models/matte/versions/-1", 422, "invalid_parameter"),
    Case("catalogue version huge", "GET", "/models/matte/versions/99999999", 404,
         "version_not_found"),
    Case("background not a colour", "POST", "/matte", 422, "invalid_parameter",
         params={"output": "composite", "background": "red"}, headers=_Q, content=png),
    Case("unknown output format", "POST", "/cartoonize", 422, "invalid_parameter",
         params={"format": "bmp"}, headers=_Q, content=png),
    # max_side is capped by the server's max_side_limit; size has a documented maximum
    Case("cartoonize max_side huge", "POST", "/cartoonize", 200, None,
         params={"max_side": str(10**9)}, headers=_Q, content=png),
    Case("autoencode size huge", "POST", "/autoencode", 422, "invalid_parameter",
         params={"size": str(10**6)}, headers=_Q, content=png),
    Case("generate n over the cap", "POST", "/generate", 422, "invalid_parameter",
         params={"n": "100000"}),
    Case("generate seed negative", "POST", "/generate", 422, "invalid_parameter",
         params={"seed": "-1"}),
    Case("generate seed past int64", "POST", "/generate", 422, "invalid_parameter",
         params={"seed": str(2**64)}),
    Case("generate oversample huge", "POST", "/generate", 422, "invalid_parameter",
         params={"n": "64", "oversample": "64", "rank_by_discriminator": "true"}),
    Case("sample n=0", "POST", "/autoencode/sample", 422, "invalid_parameter",
         params={"n": "0"}),
    Case("interpolate steps huge", "POST", "/autoencode/interpolate", 422, "invalid_parameter",
         params={"steps": "100000"}, headers=MULTIPART,
         content=lambda: multipart(("image_a", "a.png", png(), IMG),
                                   ("image_b", "b.png", png(), IMG))),
    Case("jobs limit=0", "GET", "/jobs", 422, "invalid_parameter", params={"limit": "0"}),
    Case("jobs limit huge", "GET", "/jobs", 422, "invalid_parameter",
         params={"limit": str(10**12)}),
    Case("jobs offset -1", "GET", "/jobs", 422, "invalid_parameter", params={"offset": "-1"}),
    Case("jobs unknown status", "GET", "/jobs", 422, "invalid_parameter",
         params={"status": "exploded"}),
    Case("jobs unknown task", "GET", "/jobs", 422, "invalid_parameter", params={"task": "x"}),
    Case("dataset unknown task", "POST", "/datasets", 422, "invalid_parameter",
         params={"task": "paint"}, headers={"Content-Type": "application/zip"},
         content=lambda: zip_bytes(good_files("generate"))),
    Case("dataset id with a slash", "POST", "/datasets", 422, "invalid_parameter",
         params={"task": "generate", "id": "a/../b"}, headers={"Content-Type": "application/zip"},
         content=lambda: zip_bytes(good_files("generate"))),
    Case("events after=-1", "GET", "/jobs/0f1e2d3c4b5a69788796a5b4c3d2e1f0/events", 422,
         "invalid_parameter", params={"after": "-1"}),
    Case("finetune epochs=1e309 (inf in JSON)", "POST", "/jobs/finetune", 422,
         "invalid_parameter",
         headers={"Content-Type": "application/json"},
         content=b'{"task":"generate","dataset_id":"none","target_model":"x",'
                 b'"hyperparameters":{"epochs":1e309}}'),
    Case("activate version 0", "POST", "/models/matte/activate", 422, "invalid_parameter",
         headers={"Content-Type": "application/json"}, content=b'{"version": 0}'),
    Case("activate version as string", "POST", "/models/matte/activate", 422,
         "invalid_parameter", headers={"Content-Type": "application/json"},
         content=b'{"version": "two"}'),
    Case("activate unknown version", "POST", "/models/matte/activate", 404, "version_not_found",
         headers={"Content-Type": "application/json"}, content=b'{"version": 424242}'),
    Case("generate latents NaN", "POST", "/generate", 422, "invalid_parameter",
         headers={"Content-Type": "application/json"}, content=b'{"latents": [[NaN]]}'),
]

_NO_JOB = "/jobs/0f1e2d3c4b5a69788796a5b4c3d2e1f0/events"
HEADERS: list[Case] = [
    Case("Content-Type without a slash", "POST", "/classify", 415, "unsupported_media_type",
         headers={"Content-Type": "image"}, content=png),
    Case("Content-Type text/plain", "POST", "/classify", 415, "unsupported_media_type",
         headers={"Content-Type": "text/plain"}, content=png),
    Case("no Content-Type", "POST", "/classify", 415, "unsupported_media_type", content=png),
    Case("Content-Type with charset=utf-16", "POST", "/classify", 200, None,
         headers={"Content-Type": "image/png; charset=utf-16"}, content=png),
    Case("Content-Type upper case", "POST", "/classify", 200, None,
         headers={"Content-Type": "IMAGE/PNG"}, content=png),
    Case("multipart with charset=utf-7", "POST", "/classify", 200, None,
         headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}; charset=utf-7"},
         content=lambda: multipart(("image", "a.png", png(), IMG))),
    Case("JSON with charset=latin-1", "POST", "/generate", 200, None,
         params={"format": "json", "n": "1"},
         headers={"Content-Type": "application/json; charset=latin-1"}, content=b"{}"),
    Case("malformed JSON body", "POST", "/generate", 422, "malformed_json",
         headers={"Content-Type": "application/json"}, content=b'{"n": 2,'),
    Case("malformed JSON (activate)", "POST", "/models/matte/activate", 422, "malformed_json",
         headers={"Content-Type": "application/json"}, content=b"\xff\xfe{"),
    Case("malformed JSON (finetune)", "POST", "/jobs/finetune", 422, "malformed_json",
         headers={"Content-Type": "application/json"}, content=b"{" * 10000),
    Case("JSON body declared as text/plain", "POST", "/models/matte/activate", 422,
         "invalid_parameter", headers={"Content-Type": "text/plain"},
         content=b'{"version": 1}'),
    Case("JSON body not an object", "POST", "/jobs/finetune", 422, "invalid_parameter",
         headers={"Content-Type": "application/json"}, content=b"[1, 2, 3]"),
    Case("big header (64 KiB)", "GET", "/models", 200, None, headers={"X-Junk": "a" * 65536},
         raw=True),
    # uvicorn answers a plain-text 400 and closes, sometimes before the client has sent it
    # all (then the client sees the connection cut: status 0 here).
    Case("huge header (1 MiB)", "GET", "/models", _one_of(0, 400, 431), None,
         headers={"X-Junk": "a" * (1 << 20)}, envelope=False),
    Case("Content-Length not a number", "POST", "/classify", 400, "malformed_request",
         headers={"Content-Type": IMG, "Content-Length": "twelve"}, content=png,
         raw=True),
    Case("Last-Event-ID: null", "GET", _NO_JOB, 404, "job_not_found",
         headers={"Last-Event-ID": "null"}),
    Case("Last-Event-ID: -5", "GET", _NO_JOB, 422, "invalid_parameter",
         headers={"Last-Event-ID": "-5"}),
    Case("Last-Event-ID: junk", "GET", _NO_JOB, 422, "invalid_parameter",
         headers={"Last-Event-ID": "\u00e9t\u00e9".encode().decode("latin-1")}, raw=True),
    # A key that is sent is checked even where the scope is open: a client learns its key
    # is wrong instead of being served anonymously.
    Case("Authorization garbage (open scope)", "GET", "/models", 401, "unauthorized",
         headers={"Authorization": "Bearer \x01\x02not-a-key"}),
    Case("Authorization Basic (open scope)", "GET", "/models", 401, "unauthorized",
         headers={"Authorization": "Basic dXNlcjpwYXNz"}),
    Case("Authorization 8 KiB token (open scope)", "POST", "/classify", 401, "unauthorized",
         headers={"Authorization": "Bearer " + "k" * 8192, "Content-Type": IMG},
         content=png),
    Case("Authorization: Bearer with no token", "GET", "/models", 401, "unauthorized",
         headers={"Authorization": "Bearer "}, raw=True),
    Case("Idempotency-Key too long", "POST", "/jobs/finetune", 422, "invalid_parameter",
         headers={"Content-Type": "application/json", "Idempotency-Key": "k" * 300},
         content=b'{"task":"generate","dataset_id":"none","target_model":"x"}'),
    Case("X-Filename with a path", "POST", "/datasets", 422, "dataset_invalid",
         params={"task": "generate"},
         headers={"Content-Type": "application/zip", "X-Filename": "../../etc/passwd"},
         content=zip_empty),
]

CORPUS: dict[str, list[Case]] = {
    "image": IMAGES, "multipart": MULTIPARTS, "archive": ARCHIVES, "query": QUERIES,
    "header": HEADERS,
}
