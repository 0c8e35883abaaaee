"""generate's official weights for ``toonforge pull`` (see tasks/catalogue.py)."""

from __future__ import annotations

from tasks.catalogue import CatalogueEntry, CatalogueFile

ENTRIES: tuple[CatalogueEntry, ...] = (
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
