"""Official-weights catalogue entries: where a family's published checkpoint files live and
the sha256 each must have. A family lists its entries in its folder (``weights.py``) and its
spec carries them (``TaskSpec.catalogue``); ``toonforge pull`` (worker/pull.py) reads them.

A checksum is pinned only where one was published or measured by someone who downloaded
the official file; none is made up. Where no sha256 is known, ``sha256`` is None and
``toonforge pull`` refuses to run without ``--sha256`` (it never imports an unverified file).
A file name may carry the first hex digits of its sha256 (torchvision's convention, checked
the same way by ``torch.hub``): that prefix is verified when no full digest is given.
``source`` says where the URL and the checksum come from. Torch-free: listing needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ModelScope's file download endpoint (modelscope.hub: get_file_download_url).
MODELSCOPE_URL = ("https://modelscope.cn/api/v1/models/{repo}/repo?Revision=master"
                  "&FilePath={file}")
# Google Drive's direct download for a file id (confirm=t skips the "cannot scan" page that
# Drive shows for files over ~100 MB).
DRIVE_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"


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
