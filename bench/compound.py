"""Compound cartoonize (DCT-Net as released: background + head generators, faces aligned
and blended) against the background generator alone, per image on this CPU, p50 over
repeats, on scikit-image's photos.

    .venv/bin/python bench/compound.py [--repeats 5] [--threads 1]

The graphs are a ``dctnet-compound`` version with seeded random weights, exported and
proven by the worker's own export (the cost does not depend on the weights' values). Rows:
``plain`` is a ``dctnet`` version's pipeline (long side at most 720, multiples of 4);
``compound, faces off`` the compound's background path (the authors' shorter side at most
720, pad to 16, area resizes); ``compound`` the five steps (plus detection, one head batch,
the blends). All in-process with onnxruntime sessions of ``--threads`` intra-op threads,
no HTTP. Prints a Markdown table (docs/BENCHMARKS.md) and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from skimage import data

import faces
from families.cartoonize.compound import cartoonize_compound, graph_input, graph_output
from families.cartoonize.processing import cartoon_input, cartoon_output
from families.cartoonize.spec import CartoonizeServing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.face_stage import p50_ms  # noqa: E402


def photos() -> dict[str, np.ndarray]:
    astronaut = Image.fromarray(data.astronaut())
    head = astronaut.crop((140, 20, 310, 210))
    two = Image.new("RGB", (900, 560), (128, 140, 150))
    two.paste(head.resize((204, 228)), (60, 150))
    two.paste(head.resize((306, 342)), (480, 60))
    grid = Image.new("RGB", (960, 540), (200, 200, 200))
    for i in range(50):
        grid.paste(head.resize((96, 108)), ((i % 10) * 96, (i // 10) * 108))
    return {name: np.asarray(image) for name, image in {
        "astronaut 512x512": astronaut,
        "astronaut 1920x1920": astronaut.resize((1920, 1920), Image.Resampling.BICUBIC),
        "two pasted 900x560": two,
        "50 tiled 960x540 (8 drawn)": grid,
        "chelsea 451x300 (no face)": Image.fromarray(data.chelsea()),
    }.items()}


def export(directory: Path) -> dict[str, Path]:
    from families.cartoonize.compound_net import DCTNetCompound
    from worker.nets.registry import get_arch
    from worker.training.export import export_and_verify

    torch.manual_seed(0)
    model = DCTNetCompound().eval()
    result = export_and_verify(model, get_arch("dctnet-compound"), directory)
    return {role: directory / graph.file for role, graph in result.graphs.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        files = export(Path(tmp))
        main_graph, head_graph = (ort.InferenceSession(str(files[r]), options,
                                                       providers=["CPUExecutionProvider"])
                                  for r in ("main", "head"))
    config = CartoonizeServing(max_side=720, multiple_of=4, color_order="BGR",
                               input_range=(-1, 1), output_range=(-1, 1), short_side=720)
    limits = faces.DetectLimits(threads=args.threads)

    def run_bg(bgr: np.ndarray) -> np.ndarray:
        out: np.ndarray = graph_output(main_graph.run(None, {"image": graph_input(bgr)})[0])[0]
        return out

    def run_heads(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cartoon, mask = head_graph.run(None, {"image": graph_input(crops)})
        return graph_output(cartoon), mask[0, 0]

    def find(rgb: np.ndarray) -> tuple[list[faces.Face], int]:
        search = faces.find_faces(Image.fromarray(rgb), limits)
        return search.faces, search.found

    def plain(rgb: np.ndarray) -> object:
        image = Image.fromarray(rgb)
        out = main_graph.run(None, {"image": cartoon_input(image, config)})[0]
        return cartoon_output(out, image.size, config)

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
          f" onnxruntime {ort.__version__}, {args.threads} intra-op thread(s),"
          f" p50 of {args.repeats}")
    print("| image | faces drawn | plain ms | compound, faces off ms | compound ms |"
          " compound / plain |")
    print("|---|---|---|---|---|---|")
    for name, rgb in photos().items():
        drawn = cartoonize_compound(rgb, run_bg, run_heads, find).faces_cartoonized
        t_plain = p50_ms(lambda rgb=rgb: plain(rgb), args.repeats)
        t_off = p50_ms(lambda rgb=rgb: cartoonize_compound(rgb, run_bg, None, None),
                       args.repeats)
        t_on = p50_ms(lambda rgb=rgb: cartoonize_compound(rgb, run_bg, run_heads, find),
                      args.repeats)
        print(f"| {name} | {drawn} | {t_plain:.1f} | {t_off:.1f} | {t_on:.1f} |"
              f" {t_on / t_plain:.2f} |")
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
