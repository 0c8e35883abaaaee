"""The seeded split used when an archive brings no val/ folders.

Samples are ordered by a hash of their file path (salted with a version string), so the
same files give the same split on every run and host, whatever order the archive listed
them in, and without touching the ``random`` module's global state.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.layouts import Sample

# ---- automatic split (when the archive has no val folders)
VAL_FRACTION = 0.1  # cartoonize, matte, generate, autoencode: 90:10
TEST_FRACTION = 0.1  # classify: 8:1:1, stratified per class
_SPLIT_SALT = b"toonforge-split-v1\0"


def split_key(path: str) -> bytes:
    """Order for the seeded split: a hash of the file name, stable across runs and hosts."""
    return hashlib.sha256(_SPLIT_SALT + path.encode()).digest()


def _portion(n: int, fraction: float, minimum_n: int) -> int:
    # Half-up rounding, and at least one once there are minimum_n samples to share.
    k = int(n * fraction + 0.5)
    return max(k, 1) if n >= minimum_n else 0


def auto_split(samples: list[Sample], key: str, with_test: bool) -> dict[str, list[Sample]]:
    """train/val (90:10), or train/val/test (8:1:1) when ``with_test``; ``key`` names the
    sample's primary path."""
    ordered = sorted(samples, key=lambda s: split_key(str(s[key])))
    n = len(ordered)
    n_val = _portion(n, VAL_FRACTION, 3 if with_test else 2)
    n_test = _portion(n, TEST_FRACTION, 3) if with_test else 0
    out = {"train": ordered[n_val + n_test:], "val": ordered[:n_val]}
    if with_test:
        out["test"] = ordered[n_val:n_val + n_test]
    return out
