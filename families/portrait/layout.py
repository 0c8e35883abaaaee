"""portrait datasets: photo/drawing pairs, as folders or as APDrawingGAN side-by-side images.

Two layouts are accepted (torch-free; the intake runs this):

- ``photo/`` + ``drawing/`` paired by file name (optional ``val/photo/`` + ``val/drawing/``);
- APDrawingGAN's: ``train/`` (optional ``test/`` or ``val/``) of 512x1024 images, the photo
  on the left half and its drawing on the right. Such a pair is recorded with the same file
  as its photo and its drawing; the loader splits it in halves (``split_side_by_side``).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from tasks.layouts import PairedLayout, Sample, Scan, ScanResult
from tasks.split import auto_split

PHOTO, DRAWING = "photo", "drawing"
_FOLDERS = PairedLayout(
    folders=(PHOTO, DRAWING), names=(PHOTO, DRAWING),
    expected="photo/ and drawing/ (optional val/photo/ and val/drawing/)",
)
_SIDE_BY_SIDE = ("train", "test", "val")


def is_side_by_side(sample: Sample) -> bool:
    return sample[PHOTO] == sample[DRAWING]


def split_side_by_side(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    """APDrawingGAN's stitched pair -> (photo, drawing): the left and right halves."""
    half = image.width // 2
    return (image.crop((0, 0, half, image.height)),
            image.crop((half, 0, 2 * half, image.height)))


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
