"""Build real dataset archives (zip, tar, tar.gz/bz2/xz) with real images for intake tests."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

Files = dict[str, bytes]


def image_bytes(width: int = 24, height: int = 16, seed: int = 0, fmt: str = "PNG",
                mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    img = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def good_files(task: str, n: int = 6, prefix: str = "") -> Files:
    """A small dataset that can train, in the layout of ``task``."""
    files: Files = {}
    for i in range(n):
        png, jpg = image_bytes(seed=i), image_bytes(seed=100 + i, fmt="JPEG")
        if task == "cartoonize":
            files[f"train/photo/{i:03d}.jpg"] = jpg
            files[f"train/cartoon/{i:03d}.png"] = png
        elif task == "matte":
            files[f"images/{i:03d}.jpg"] = jpg
            files[f"masks/{i:03d}.png"] = image_bytes(seed=200 + i, mode="L")
        elif task == "portrait":
            files[f"photo/{i:03d}.jpg"] = jpg
            files[f"drawing/{i:03d}.png"] = image_bytes(seed=200 + i, mode="L")
        elif task == "classify":
            for label in ("cat", "dog"):
                files[f"{label}/{i:03d}.png"] = image_bytes(seed=i + (50 if label == "dog" else 0))
        else:
            files[f"images/{i:03d}.png"] = png
    return {prefix + k: v for k, v in files.items()}


def zip_bytes(files: Files, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """``files`` as an in-memory zip (an upload body)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_folder(root: Path, pattern: str = "*.png") -> bytes:
    """The files under ``root`` matching ``pattern``, zipped with paths relative to it."""
    return zip_bytes({p.relative_to(root).as_posix(): p.read_bytes()
                      for p in sorted(root.rglob(pattern))})


def write_zip(path: Path, files: Files, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def write_tar(path: Path, files: Files, compression: str = "",
              members: list[tuple[tarfile.TarInfo, bytes | None]] | None = None) -> Path:
    """``compression``: "", "gz", "bz2" or "xz"; ``members`` adds hand-made entries."""
    with tarfile.open(path, f"w:{compression}") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info, data in members or []:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def zip_symlink(path: Path, name: str, target: str, extra: Files | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in (extra or {}).items():
            zf.writestr(k, v)
        info = zipfile.ZipInfo(name)
        info.external_attr = (0o120777 << 16)  # S_IFLNK: how zip stores a symlink
        zf.writestr(info, target)
    return path


def zip_with_lying_size(path: Path, name: str, real_size: int, claimed_size: int) -> Path:
    """A deflated entry of ``real_size`` zero bytes whose headers claim ``claimed_size``."""
    write_zip(path, {name: b"\0" * real_size})
    raw = bytearray(path.read_bytes())
    real = struct.pack("<I", real_size)
    claimed = struct.pack("<I", claimed_size)
    # Local header: uncompressed size at offset 22; central directory entry: offset 24.
    local = raw.find(b"PK\x03\x04")
    central = raw.find(b"PK\x01\x02")
    assert raw[local + 22:local + 26] == real and raw[central + 24:central + 28] == real
    raw[local + 22:local + 26] = claimed
    raw[central + 24:central + 28] = claimed
    path.write_bytes(bytes(raw))
    return path
