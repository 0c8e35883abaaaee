"""generate (DCGAN) inputs: seeded normal latents, numpy only.

The API and INT8 calibration both draw them with ``normal_latents``, so calibration sees the
latents requests are served from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from families.generate.spec import GenerateServing


def normal_latents(rng: np.random.Generator, n: int, nz: int) -> np.ndarray:
    return rng.standard_normal((n, nz, 1, 1), dtype=np.float32)


def drawn_inputs(config: GenerateServing, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One batch-1 input of the main graph, as a seeded request draws it."""
    return {"z": normal_latents(rng, 1, config.nz)}
