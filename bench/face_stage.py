"""The face stage per image on this CPU: detection (YuNet + O-Net landmarks), alignment
crops and the inverse-warp blend, p50 over repeats, on scikit-image's photos.

    .venv/bin/python bench/face_stage.py [--repeats 10] [--threads 1]

Prints a Markdown table (docs/BENCHMARKS.md) and the machine's load average before and
after, since other processes on the machine change the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image
from skimage import data

import faces
import faces.detection as detection


def p50_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def photos() -> dict[str, Image.Image]:
    astronaut = Image.fromarray(data.astronaut())
    head = astronaut.crop((140, 20, 310, 210))
    two = Image.new("RGB", (520, 300), (128, 128, 128))
    two.paste(head.resize((136, 152)), (20, 70))
    two.paste(head.resize((221, 247)), (250, 20))
    grid = Image.new("RGB", (960, 540), (200, 200, 200))
    for i in range(50):
        grid.paste(head.resize((96, 108)), ((i % 10) * 96, (i // 10) * 108))
    return {
        "astronaut 512x512": astronaut,
        "astronaut 720x720": astronaut.resize((720, 720), Image.Resampling.BICUBIC),
        "astronaut 1920x1920": astronaut.resize((1920, 1920), Image.Resampling.BICUBIC),
        "two pasted 520x300": two,
        "50 tiled 960x540": grid,
        "chelsea 451x300": Image.fromarray(data.chelsea()),
    }


def measure(name: str, image: Image.Image, limits: faces.DetectLimits, repeats: int) -> str:
    """One table row: the stage's steps on ``image``, p50 over ``repeats``."""
    search = faces.find_faces(image, limits)
    pixels = np.asarray(image)
    small = image.resize((max(round(image.width * search.scale), 1),
                          max(round(image.height * search.scale), 1)))
    bgr = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])
    yunet = p50_ms(lambda: detection._run_detector(bgr, limits.min_score, limits.threads),
                   repeats)
    detect = p50_ms(lambda: faces.find_faces(image, limits), repeats)
    alignments = [faces.align(face.points) for face in search.faces]
    heads = [(255 - faces.crop_face(pixels, a)).astype(np.float32) for a in alignments]
    mask = faces.soft_mask()
    frame = pixels.astype(np.float32)  # the family's output frame (blended in place)

    def crop_all() -> None:
        for alignment in alignments:
            faces.crop_face(pixels, alignment)

    def blend_all() -> None:
        for head, alignment in zip(heads, alignments, strict=True):
            faces.paste_back(frame, head, alignment, mask)

    kept = max(len(alignments), 1)
    crop_ms = p50_ms(crop_all, repeats) if alignments else 0.0
    blend_ms = p50_ms(blend_all, repeats) if alignments else 0.0
    total = detect + crop_ms + blend_ms
    return (f"| {name} | {search.found} / {len(search.faces)} | {detect:.1f} ({yunet:.1f})"
            f" | {crop_ms / kept:.1f} | {blend_ms / kept:.1f} | {total:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    limits = faces.DetectLimits(threads=args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
          f" load average before: {os.getloadavg()}")
    print(f"limits: {limits}")
    print("| image | found / kept | detect ms (YuNet alone) | align+crop ms / face"
          " | blend ms / face | total ms |")
    print("|---|---|---|---|---|---|")
    for name, image in photos().items():
        print(measure(name, image, limits, args.repeats))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
