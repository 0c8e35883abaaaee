"""cartoonize's official weights for ``toonforge pull`` (see tasks/catalogue.py).

DCT-Net's authors released seven styles on ModelScope, each a compound of a background
generator, a head generator and the head's blend mask (``alpha.jpg``); ``toonforge pull
dctnet-<style>`` brings all three into one ``dctnet-compound`` version of model
``cartoon-<style>``. File names: the anime repository's generators as the authors' GitHub
``Cartoonizer`` reads them (``cartoon_anime_bg.pb`` / ``cartoon_anime_h.pb``, whose checksums
a third party recorded); the other repositories' as ModelScope's ``image_cartoon_pipeline``
reads them (``cartoon_bg.pb`` / ``cartoon_h.pb``). The authors publish no checksums: every
file without a recorded one needs ``--sha256 PART=HEX`` (``--sha256 head=...``,
``--sha256 mask=...``). Revisions: master, except the two Stable-Diffusion styles, which the
authors' download script pins to v1.0.0.
"""

from __future__ import annotations

from tasks.catalogue import CatalogueEntry, CatalogueFile

_MODELSCOPE = ("https://modelscope.cn/api/v1/models/{repo}/repo?Revision={revision}"
               "&FilePath={file}")
_ANIME_REPO = "damo/cv_unet_person-image-cartoon_compound-models"
_ANIME_BG_SHA = "71efec51b4566cce3a3123822fb4e17794ad062c3e324b33f2a65df850c037ad"
_ANIME_HEAD_SHA = "338e7bf7ab4014ba9da864c2dda104f26d8af6c7f468038782d92ccc8e2dedda"
_RECORD = ("sha256 and size: a third-party record of the downloaded official file (one"
           " source; the authors publish none).")
_LICENCE = "Apache-2.0 (the DCT-Net repository and its ModelScope model cards)"

# style -> (ModelScope repository, revision, what the README calls it)
STYLES: dict[str, tuple[str, str, str]] = {
    "anime": (_ANIME_REPO, "master", "Japanese anime"),
    "3d": ("damo/cv_unet_person-image-cartoon-3d_compound-models", "master", "3D"),
    "handdrawn": ("damo/cv_unet_person-image-cartoon-handdrawn_compound-models", "master",
                  "hand-drawn"),
    "sketch": ("damo/cv_unet_person-image-cartoon-sketch_compound-models", "master",
               "pencil sketch"),
    "artstyle": ("damo/cv_unet_person-image-cartoon-artstyle_compound-models", "master",
                 "art style"),
    "design": ("damo/cv_unet_person-image-cartoon-sd-design_compound-models", "v1.0.0",
               "design (DCT-Net trained on Stable-Diffusion exemplars)"),
    "illustration": ("damo/cv_unet_person-image-cartoon-sd-illustration_compound-models",
                     "v1.0.0", "illustration (DCT-Net trained on Stable-Diffusion exemplars)"),
}


def _no_sha(part: str) -> str:
    flag = f"--sha256 {part}=HEX" if part else "--sha256 HEX"
    return f"No sha256 is published: give {flag}."


def _file(repo: str, revision: str, part: str, name: str, sha256: str | None = None,
          size: int | None = None) -> CatalogueFile:
    where = f"URL: ModelScope repo {repo} (revision {revision}), file {name}."
    return CatalogueFile(
        part=part, filename=name,
        url=_MODELSCOPE.format(repo=repo, revision=revision, file=name),
        sha256=sha256, size=size,
        source=f"{where} {_RECORD if sha256 else _no_sha(part)}")


def _style(style: str) -> CatalogueEntry:
    repo, revision, what = STYLES[style]
    if style == "anime":
        bg = _file(repo, revision, "", "cartoon_anime_bg.pb", _ANIME_BG_SHA, 5_894_895)
        head = _file(repo, revision, "head", "cartoon_anime_h.pb", _ANIME_HEAD_SHA, 5_894_895)
    else:
        bg = _file(repo, revision, "", "cartoon_bg.pb")
        head = _file(repo, revision, "head", "cartoon_h.pb")
    return CatalogueEntry(
        name=f"dctnet-{style}",
        task="cartoonize",
        arch="dctnet-compound",
        model=f"cartoon-{style}",
        files=(bg, head, _file(repo, revision, "mask", "alpha.jpg")),
        description=f"DCT-Net {what} style as released: background + head generators and"
                    " the head's blend mask, one compound version",
        licence=_LICENCE,
        notes=("frozen TensorFlow graphs, read without TensorFlow (worker/nets/tf_graph.py)",),
        style=style,
    )


ENTRIES: tuple[CatalogueEntry, ...] = (
    *(_style(style) for style in STYLES),
    CatalogueEntry(
        name="dctnet-anime-bg",
        task="cartoonize",
        arch="dctnet",
        model="cartoon",
        files=(_file(_ANIME_REPO, "master", "", "cartoon_anime_bg.pb", _ANIME_BG_SHA,
                     5_894_895),),
        description="DCT-Net anime style, the whole-photo (background) generator alone",
        licence=_LICENCE,
        notes=("the anime background generator as the default cartoon model; dctnet-anime"
               " adds the head generator and mask",),
    ),
    CatalogueEntry(
        name="dctnet-anime-head",
        task="cartoonize",
        arch="dctnet",
        model="cartoon-head",
        files=(_file(_ANIME_REPO, "master", "", "cartoon_anime_h.pb", _ANIME_HEAD_SHA,
                     5_894_895),),
        description="DCT-Net anime style, the head generator alone (trained on aligned"
                    " 288x288 face crops)",
        licence=_LICENCE,
        notes=("best on an aligned face crop; dctnet-anime serves it on faces",),
    ),
)
