"""matte's official weights for ``toonforge pull`` (see tasks/catalogue.py)."""

from __future__ import annotations

from tasks.catalogue import DRIVE_URL, CatalogueEntry, CatalogueFile

ENTRIES: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="u2net",
        task="matte",
        arch="u2net",
        model="matte",
        files=(CatalogueFile(
            part="", filename="u2net.pth",
            url=DRIVE_URL.format(id="1ao1ovG1Qtx4b7EoskHXmi2E9rp5CHLcZ"),
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
            url=DRIVE_URL.format(id="1rbSTGKAE-MTxBYHd-51l2hMOQPT_7EPy"),
            source="URL: the U-2-Net README's Google Drive link for u2netp.pth (4.7 MB). No"
                   " sha256 is published (old rembg checks md5"
                   " e4f636406ca4e2af789941e7f139ee2e): give --sha256."),),
        description="U-2-Net small (1.13M params), salient-object mask",
        licence="Apache-2.0 (U-2-Net repository)",
    ),
    CatalogueEntry(
        name="u2net-human-seg",
        task="matte",
        arch="u2net",
        model="matte",
        files=(CatalogueFile(
            part="", filename="u2net_human_seg.pth",
            url=DRIVE_URL.format(id="1m_Kgs91b21gayc2XLW0ou8yugAIadWVP"),
            source="URL: the U-2-Net README's Google Drive link for u2net_human_seg.pth (a"
                   " full U2NET trained on the Supervisely Person dataset). No sha256 is"
                   " published: give --sha256."),),
        description="U-2-Net full (44.0M params), human segmentation mask",
        licence="Apache-2.0 (U-2-Net repository)",
        notes=("the authors: robust on people, not hair-level accurate",),
    ),
)
