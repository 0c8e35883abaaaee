"""classify's official weights for ``toonforge pull`` (see tasks/catalogue.py)."""

from __future__ import annotations

from tasks.catalogue import CatalogueEntry, CatalogueFile

ENTRIES: tuple[CatalogueEntry, ...] = (
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
)
