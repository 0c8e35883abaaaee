"""Dependency rules of the layout: the API process stays torch-free, the SDK server-free."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["service.app", "model_store.intake", "model_store.store"])
def test_api_side_never_imports_torch(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m == 'torch' or m.startswith(('torch.', 'worker')))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"
