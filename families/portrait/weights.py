"""portrait's official weights for ``toonforge pull`` (see tasks/catalogue.py)."""

from __future__ import annotations

from tasks.catalogue import DRIVE_URL, CatalogueEntry, CatalogueFile

ENTRIES: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="u2net-portrait",
        task="portrait",
        arch="u2net",
        model="portrait",
        files=(CatalogueFile(
            part="", filename="u2net_portrait.pth",
            url=DRIVE_URL.format(id="1IG3HdpcRiDoWNookbncQjeaPN28t90yW"),
            source="URL: the U-2-Net README's Google Drive link for u2net_portrait.pth (a"
                   " full U2NET trained on APDrawingGAN's photo/drawing pairs). No sha256 is"
                   " published: give --sha256."),),
        description="U-2-Net portrait drawing (full U2NET, 44.0M params), served at 512x512",
        licence="Apache-2.0 (U-2-Net repository)",
        notes=("the authors' demo crops the biggest face first; POST /portrait does the same",),
    ),
)
