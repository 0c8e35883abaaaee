"""The catalogue of official weights ``toonforge pull`` knows: where each file is published and
the sha256 it must have.

A checksum is pinned only where one was published or measured by someone who downloaded
the official file; none is made up. Where no sha256 is known, ``sha256`` is None and
``toonforge pull`` refuses to run without ``--sha256`` (it never imports an unverified file).
GoogLeNet's file name carries the first 8 hex digits of its sha256 (torchvision's
convention, checked the same way by ``torch.hub``): that prefix is verified when no full
digest is given. ``source`` says where the URL and the checksum come from.

This module imports nothing heavy: listing the catalogue needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ModelScope's file download endpoint (modelscope.hub: get_file_download_url).
_MODELSCOPE = "https://modelscope.cn/api/v1/models/{repo}/repo?Revision=master&FilePath={file}"
# Google Drive's direct download for a file id (confirm=t skips the "cannot scan" page that
# Drive shows for files over ~100 MB).
_DRIVE = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
_DCT_REPO = "damo/cv_unet_person-image-cartoon_compound-models"


@dataclass(frozen=True)
class CatalogueFile:
    """One file of an entry: the architecture's checkpoint part it is, and where it lives."""

    part: str  # the arch's official part ("" is the first, ``--weights`` of toonforge import)
    filename: str  # name in the download cache and in the version's lineage
    url: str
    sha256: str | None = None  # the full digest, lower-case hex; None: must be given
    sha256_prefix: str | None = None  # only a prefix is published (torchvision file names)
    size: int | None = None  # bytes, where known
    source: str = ""


@dataclass(frozen=True)
class CatalogueEntry:
    name: str  # what ``toonforge pull NAME`` takes
    task: str
    arch: str
    model: str  # the store model it is imported into by default (the task's default model)
    files: tuple[CatalogueFile, ...]
    description: str
    licence: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def verified(self) -> bool:
        """Every file has a pinned checksum (full or prefix): no ``--sha256`` needed."""
        return all(f.sha256 or f.sha256_prefix for f in self.files)

    def file(self, part: str) -> CatalogueFile:
        for f in self.files:
            if f.part == part:
                return f
        raise KeyError(part)


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="dctnet-anime",
        task="cartoonize",
        arch="dctnet",
        model="cartoon",
        files=(CatalogueFile(
            part="", filename="cartoon_anime_bg.pb",
            url=_MODELSCOPE.format(repo=_DCT_REPO, file="cartoon_anime_bg.pb"),
            sha256="71efec51b4566cce3a3123822fb4e17794ad062c3e324b33f2a65df850c037ad",
            size=5_894_895,
            source="URL: ModelScope repo damo/cv_unet_person-image-cartoon_compound-models,"
                   " file cartoon_anime_bg.pb (the DCT-Net README's anime model; its"
                   " source/cartoonize.py loads it for whole photos). sha256 and size: a"
                   " third-party record of the downloaded official file (one source; the"
                   " authors publish none)."),),
        description="DCT-Net anime style, the whole-photo (background) generator",
        licence="Apache-2.0 (ModelScope model card)",
        notes=("frozen TensorFlow graph, read without TensorFlow (worker/nets/tf_graph.py)",),
    ),
    CatalogueEntry(
        name="dctnet-anime-head",
        task="cartoonize",
        arch="dctnet",
        model="cartoon-head",
        files=(CatalogueFile(
            part="", filename="cartoon_anime_h.pb",
            url=_MODELSCOPE.format(repo=_DCT_REPO, file="cartoon_anime_h.pb"),
            sha256="338e7bf7ab4014ba9da864c2dda104f26d8af6c7f468038782d92ccc8e2dedda",
            size=5_894_895,
            source="URL: ModelScope repo damo/cv_unet_person-image-cartoon_compound-models,"
                   " file cartoon_anime_h.pb. sha256 and size: the same third-party record"
                   " as dctnet-anime."),),
        description="DCT-Net anime style, the head generator (trained on aligned 288x288"
                    " face crops)",
        licence="Apache-2.0 (ModelScope model card)",
        notes=("best on a face crop; dctnet-anime is the whole-photo model",),
    ),
    CatalogueEntry(
        name="googlenet",
        task="classify",
        arch="googlenet",
        model="classify",
        files=(CatalogueFile(
            part="", filename="googlenet-1378be20.pth",
            url="https://download.pytorch.org/models/googlenet-1378be20.pth",
            sha256_prefix="1378be20",
            source="URL: torchvision GoogLeNet_Weights.IMAGENET1K_V1. Checksum: the file"
                   " name's hash prefix (first 8 hex digits of the sha256, as torch.hub"
                   " checks); no full digest is published."),),
        description="torchvision GoogLeNet IMAGENET1K_V1 (ImageNet-1k, 1000 classes)",
        licence="BSD-3-Clause (torchvision)",
    ),
    CatalogueEntry(
        name="u2net",
        task="matte",
        arch="u2net",
        model="matte",
        files=(CatalogueFile(
            part="", filename="u2net.pth",
            url=_DRIVE.format(id="1ao1ovG1Qtx4b7EoskHXmi2E9rp5CHLcZ"),
            source="URL: the U-2-Net README's Google Drive link for u2net.pth (176.3 MB)."
                   " No sha256 is published (copies of old rembg list an md5, and disagree"
                   " on which file it belongs to): give --sha256."),),
        description="U-2-Net full (44.0M params), salient-object mask",
        licence="Apache-2.0 (U-2-Net repository)",
    ),
    CatalogueEntry(
        name="u2netp",
        task="matte",
        arch="u2netp",
        model="matte",
        files=(CatalogueFile(
            part="", filename="u2netp.pth",
            url=_DRIVE.format(id="1rbSTGKAE-MTxBYHd-51l2hMOQPT_7EPy"),
            source="URL: the U-2-Net README's Google Drive link for u2netp.pth (4.7 MB). No"
                   " sha256 is published (old rembg checks md5"
                   " e4f636406ca4e2af789941e7f139ee2e): give --sha256."),),
        description="U-2-Net small (1.13M params), salient-object mask",
        licence="Apache-2.0 (U-2-Net repository)",
    ),
    CatalogueEntry(
        name="anime-faces",
        task="generate",
        arch="dcgan",
        model="anime-faces",
        files=(
            CatalogueFile(
                part="netg", filename="netg_200.pth",
                url="https://yun.sfo2.digitaloceanspaces.com/pytorch_book/pytorch_book/"
                    "netg_200.pth",
                source="URL: pytorch-book chapter07-AnimeGAN README (2020); the v2.0 README"
                       " (2022) no longer links it. No checksum published: give --sha256."),
            CatalogueFile(
                part="netd", filename="netd_200.pth",
                url="https://yun.sfo2.digitaloceanspaces.com/pytorch_book/pytorch_book/"
                    "netd_200.pth",
                source="as netg_200.pth"),
        ),
        description="pytorch-book chapter 7 anime-face DCGAN (NetG + NetD, 96x96)",
        licence="as the pytorch-book repository (no separate weight licence)",
        notes=("the URL may no longer answer: use --url with a copy you trust",),
    ),
)


class UnknownCatalogueEntry(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def get_entry(name: str) -> CatalogueEntry:
    for entry in CATALOGUE:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in CATALOGUE)
    raise UnknownCatalogueEntry(f"no catalogue entry {name!r}; known: {known}")
