"""Handing a burst's memory back to the OS once it is over.

onnxruntime's CPU arena keeps its high-water mark and glibc keeps what many threads freed;
both are returned (``release_memory``) when no request has been admitted for
``memory_release_idle_s``, once per quiet spell, so steady traffic keeps its fast arena.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time

import numpy as np
import onnxruntime as ort

from service.inference.sessions import WARMUP_SIDE, LoadedVersion

log = logging.getLogger(__name__)


class IdleRelease:
    """Decides when the memory is due back: once per quiet spell of ``idle_s`` seconds, and
    again after a swap (loading and warm-up leave arena memory to give back too)."""

    def __init__(self, idle_s: float) -> None:
        self._idle_s = idle_s
        self._done_for: float | None = None  # the quiet spell already trimmed

    def rearm(self) -> None:
        self._done_for = None

    def due(self, quiet_since: float | None) -> bool:
        """True once when the spell that began at ``quiet_since`` (None: busy) is long
        enough; the caller then releases."""
        if (self._idle_s <= 0 or quiet_since is None or quiet_since == self._done_for
                or time.monotonic() - quiet_since < self._idle_s):
            return False
        self._done_for = quiet_since
        return True


_LIBC: ctypes.CDLL | None = None


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: return freed heap pages to the OS. False where the C
    library has no such function (musl, macOS): nothing to do there."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is None:
        return False
    return bool(trim(0))


def release_memory(versions: list[LoadedVersion], arena: bool) -> None:
    """Shrink every session's CPU arena to its first chunk, then ``malloc_trim``.

    onnxruntime shrinks an arena only at the end of a run that asks for it, so each graph
    runs once on its smallest contract-shaped input with the shrinkage option (a batch of
    one: milliseconds to a fraction of a second).
    """
    if arena:
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        for loaded in versions:
            for role, graph in loaded.graphs.items():
                try:
                    graph.session.run(graph.outputs, _smallest_input(graph.session), options)
                except Exception as exc:  # never worth failing over: log and go on
                    log.warning("could not shrink the arena of %s:%s: %s", loaded.ref, role,
                                exc)
    malloc_trim()


def _smallest_input(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    """Zeros of batch 1 in each input's contract shape (symbolic sides: WARMUP_SIDE)."""
    feeds = {}
    for meta in session.get_inputs():
        shape = [dim if isinstance(dim, int) and dim > 0 else (1 if axis == 0 else WARMUP_SIDE)
                 for axis, dim in enumerate(meta.shape)]
        dtype = np.float16 if meta.type == "tensor(float16)" else np.float32
        feeds[meta.name] = np.zeros(shape, dtype)
    return feeds
