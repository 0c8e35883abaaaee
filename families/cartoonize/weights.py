"""cartoonize's official weights for ``toonforge pull`` (see tasks/catalogue.py)."""

from __future__ import annotations

from tasks.catalogue import MODELSCOPE_URL, CatalogueEntry, CatalogueFile

_DCT_REPO = "damo/cv_unet_person-image-cartoon_compound-models"

ENTRIES: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="dctnet-anime",
        task="cartoonize",
        arch="dctnet",
        model="cartoon",
        files=(CatalogueFile(
            part="", filename="cartoon_anime_bg.pb",
            url=MODELSCOPE_URL.format(repo=_DCT_REPO, file="cartoon_anime_bg.pb"),
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
            url=MODELSCOPE_URL.format(repo=_DCT_REPO, file="cartoon_anime_h.pb"),
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
)
