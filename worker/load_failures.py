"""One clear line for a file ``torch.load`` could not read.

PyTorch's weights-only refusal is a paragraph about its own defaults (and the advice to
turn the protection off); cut to a few hundred characters it ends mid-sentence and never
says what the file is. This says what the file looks like instead: empty, not a PyTorch
file at all (a web page saved as ``.pth`` is the usual case), or a pickle that holds more
than tensors (with the one object the weights-only loader refused).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

_PICKLE_PROTOCOL = b"\x80"  # protocol 2+ pickles start with PROTO
_ZIP = b"PK\x03\x04"
_REFUSED = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)",
                      re.DOTALL)
_MAX = 200


def _head(path: Path, n: int = 16) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX else text[:_MAX - 1].rstrip() + "…"


def describe_load_failure(path: Path, exc: BaseException) -> str:
    """Why ``path`` is not a checkpoint, in one line (for ``CheckpointUnreadable``)."""
    head = _head(path)
    if not head:
        return "the file is empty"
    is_zip = zipfile.is_zipfile(path)
    if head.startswith(_ZIP) and not is_zip:
        return "a damaged or truncated zip archive (torch.save's format): download it again"
    if not is_zip and not head.startswith(_PICKLE_PROTOCOL):
        text = all(32 <= b < 127 or b in b"\t\r\n" for b in head)
        looks = " (it looks like text or a web page: was the download an error page?)" \
            if text else ""
        return (f"not a PyTorch checkpoint: neither a torch.save zip archive nor a pickle;"
                f" it starts with {head!r}{looks}")
    found = _REFUSED.search(str(exc))
    if isinstance(exc, pickle.UnpicklingError) and found:
        refused = found.group(1).split(". ")[0].rstrip(".")
        return ("it holds more than tensors, and is not loaded as code: the weights-only"
                f" loader refused it ({_one_line(refused)})")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return _one_line(f"{type(exc).__name__}: {first}".rstrip(": "))
