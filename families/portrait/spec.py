"""portrait: photo in, line drawing out (U-2-Net ``u2net_portrait``), as its authors ship it.

The served graph is the full U2NET's side output ``d1`` at 512x512; the API cuts the
biggest face the way the authors' demo does, turns ``1 - d1`` into the drawing (min-max)
and, when asked, blends it with a blurred copy of the photo (their composite script).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from families.portrait import processing
from families.portrait.synthetic import make_portrait
from families.portrait.weights import ENTRIES
from tasks.layouts import PairedLayout, Sample, Scan, ScanResult
from tasks.registry import (
    RGB,
    CommonHyperparameters,
    GateRule,
    GraphIO,
    Int8Gate,
    ServingConfig,
    TaskSpec,
    register_task,
)
from tasks.split import auto_split

SIZE = 512  # the demo's crop side and the released weights' training size


# The dataset layouts: ``photo/`` + ``drawing/`` paired by file name (optional ``val/photo/``
# + ``val/drawing/``), or APDrawingGAN's ``train/`` (optional ``test/`` or ``val/``) of
# 512x1024 images, the photo on the left half and its drawing on the right. Such a pair is
# recorded with the same file as its photo and its drawing; the loader splits it in halves
# (``processing.split_side_by_side``).
PHOTO, DRAWING = "photo", "drawing"
_FOLDERS = PairedLayout(
    folders=(PHOTO, DRAWING), names=(PHOTO, DRAWING),
    expected="photo/ and drawing/ (optional val/photo/ and val/drawing/)",
)
_SIDE_BY_SIDE = ("train", "test", "val")


@dataclass(frozen=True)
class PortraitLayout:
    min_pairs: int = 2

    @property
    def expected(self) -> str:
        return (f"{_FOLDERS.expected}, or APDrawingGAN's train/ (optional test/) of"
                " side-by-side photo|drawing images")

    @property
    def top_names(self) -> frozenset[str]:
        return _FOLDERS.top_names | frozenset(_SIDE_BY_SIDE)

    @property
    def doc(self) -> tuple[list[tuple[str, str]], list[str], str]:
        """What docs/DATASETS.md shows: a tree of either layout, the rules, the split."""
        tree = [(f"{PHOTO}/0001.jpg", "a photo"),
                (f"{DRAWING}/0001.png", "its drawing: same path and name, any image suffix"),
                ("or, APDrawingGAN's layout:", ""),
                ("train/0001.png", "photo | drawing side by side (e.g. 512x1024: halves)"),
                ("test/0101.png", "optional: held-out side-by-side pairs")]
        rules = [f"`{PHOTO}/x.jpg` pairs with `{DRAWING}/x.png` (optional `val/{PHOTO}/` +"
                 f" `val/{DRAWING}/`), or side-by-side images under `train/` (and optionally"
                 " `test/` or `val/`) split into their left (photo) and right (drawing)"
                 " halves.", f"At least {self.min_pairs} usable pairs."]
        split = ("`val/` (folders) or `test/`/`val/` (side by side) when given are the"
                 " validation split; otherwise the pairs are split 90:10 (train:val).")
        return tree, rules, split

    @property
    def sample_keys(self) -> tuple[str, ...]:
        return (PHOTO, DRAWING)

    def scan(self, scan: Scan) -> ScanResult:
        if scan.is_dir(PHOTO) or scan.is_dir(DRAWING) or not scan.is_dir("train"):
            return _FOLDERS.scan(scan)
        train = self._stitched(scan, "train")
        held = [s for folder in ("val", "test") if scan.is_dir(folder)
                for s in self._stitched(scan, folder)]
        given = bool(held)
        splits = {"train": train, "val": held} if given else auto_split(train, PHOTO,
                                                                         with_test=False)
        total = sum(len(v) for v in splits.values())
        if total < self.min_pairs:
            scan.problems.append(f"found {total} usable side-by-side pairs; at least"
                                 f" {self.min_pairs} are needed")
        scan.require_train_and_val(splits)
        return ScanResult(splits, given)

    @staticmethod
    def _stitched(scan: Scan, folder: str) -> list[Sample]:
        out: list[Sample] = []
        for rel in scan.files_under(folder):
            size = scan.decode(rel)
            if size is None:
                continue
            width, height = size
            if width != 2 * height:
                scan.skip(rel, f"{width}x{height} is not a side-by-side pair (width must be"
                               " twice the height, photo left, drawing right)")
                continue
            out.append({PHOTO: rel, DRAWING: rel, "width": width // 2, "height": height})
        return out


class PortraitHyperparameters(CommonHyperparameters):
    """The U-2-Net recipe on photo/drawing pairs: the 7 side-output BCE losses summed, Adam
    1e-3; the target of every side output is the drawing's ink (1 - drawing)."""

    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=4, ge=1, le=256)
    lr: float = Field(default=1e-3, gt=0, le=1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    size: int = Field(default=SIZE, ge=32, le=1024, description="training and serving side")
    hflip_prob: float = Field(default=0.5, ge=0, le=1)
    samples_per_epoch: int = Field(default=4, ge=0, le=16,
                                   description="validation pairs drawn in each epoch's sheet")


class PortraitServing(ServingConfig):
    """The demo's input: a size x size region divided by its max, ImageNet mean/std."""

    size: int = Field(ge=32)
    mean: RGB
    std: RGB


SPEC = register_task(TaskSpec(
    name="portrait",
    description="photo in, line drawing of the face out (or a composite with the photo)",
    default_model="portrait",
    archs=("u2net", "u2netp"),
    # image f32[N,3,S,S] -> d1 f32[N,1,S,S] (side output 1 after sigmoid: the line "mask")
    graphs={"main": GraphIO("model.onnx", ("image",), ("d1",))},
    serving=PortraitServing,
    hyperparameters=PortraitHyperparameters,
    layout=PortraitLayout(),
    # mean absolute error of the served drawing against the held-out drawing, in [0, 1]
    gate=GateRule("drawing_mae", "min"),
    # No starter job: U2NET learns no useful drawing from a few procedural heads within a
    # first start's budget; `toonforge pull u2net-portrait` brings the authors' weights.
    starter=None,
    synthetic=make_portrait,
    # The served drawing is 1 - d1 min-max normalised: its MAE equals the map's.
    int8_gate=Int8Gate({"main": "d1"}, at_most={"mask_mae": 2 / 255}),
    image_inputs=processing.main_inputs,
    catalogue=ENTRIES,
    api="families.portrait.api",
    worker=("families.portrait.net", "families.portrait.trainer"),
))
