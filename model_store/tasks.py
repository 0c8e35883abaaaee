"""The five task families and the ONNX graph contract each one serves.

This module is shared by the worker (which exports graphs that honour the contract) and the
API (which feeds them). It imports nothing heavy: no torch, no onnxruntime.
"""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    CARTOONIZE = "cartoonize"
    MATTE = "matte"
    CLASSIFY = "classify"
    GENERATE = "generate"
    AUTOENCODE = "autoencode"


# Graph files a version may hold, by role. Every task has "main"; autoencode also has a
# decoder so that interpolation and sampling can decode latents without an image.
MAIN_GRAPH = "model.onnx"
DECODER_GRAPH = "decoder.onnx"
WEIGHTS_FILE = "weights.pt"
MANIFEST_FILE = "manifest.json"
LATENT_STATS_FILE = "latent_stats.npz"

# Tensor names of each task's graphs. Shapes use N for the dynamic batch axis.
#   cartoonize main: image  f32[N,3,H,W] BGR in [-1,1], H and W multiples of 4
#                    -> cartoon f32[N,3,H,W] BGR in [-1,1] (guided filter + clip inside)
#   matte main:      image  f32[N,3,S,S] (divide by max, ImageNet mean/std)
#                    -> mask f32[N,1,S,S] (d0, sigmoid; min-max normalised by the API)
#   classify main:   image  f32[N,3,C,C] (ImageNet mean/std) -> logits f32[N,K]
#   generate main:   z      f32[N,nz,1,1] -> images f32[N,3,96,96] in [-1,1], scores f32[N]
#   autoencode main: image  f32[N,3,S,S] in [0,1] -> latent f32[N,L], reconstruction f32[N,3,S,S]
#   autoencode decoder: latent f32[N,L] -> image f32[N,3,S,S] in [0,1]
GRAPH_IO: dict[Task, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    Task.CARTOONIZE: {"main": (("image",), ("cartoon",))},
    Task.MATTE: {"main": (("image",), ("mask",))},
    Task.CLASSIFY: {"main": (("image",), ("logits",))},
    Task.GENERATE: {"main": (("z",), ("images", "scores"))},
    Task.AUTOENCODE: {
        "main": (("image",), ("latent", "reconstruction")),
        "decoder": (("latent",), ("image",)),
    },
}

GRAPH_FILES: dict[str, str] = {"main": MAIN_GRAPH, "decoder": DECODER_GRAPH}
