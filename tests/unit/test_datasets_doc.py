"""docs/DATASETS.md is generated from the task registry and must match it."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys

from tasks import task_specs
from tests.support.server import REPO

SCRIPT = REPO / "scripts" / "export_datasets_doc.py"


def test_datasets_page_is_current() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_page_covers_every_task_and_hyperparameter() -> None:
    text = runpy.run_path(str(SCRIPT))["render"]()
    for spec in task_specs():
        section = text.split(f"\n## {spec.name}\n", 1)[1].split("\n## ", 1)[0]
        assert "dataset.zip" in section, spec.name
        for name, field in spec.hyperparameters.model_fields.items():
            assert f"| `{name}` |" in section, (spec.name, name)
            if isinstance(field.default, int | float):
                row = next(r for r in section.splitlines() if r.startswith(f"| `{name}` |"))
                assert f"`{json.dumps(field.default)}`" in row, row


def test_check_fails_on_a_stale_page(tmp_path, monkeypatch) -> None:
    namespace = runpy.run_path(str(SCRIPT))
    stale = tmp_path / "DATASETS.md"
    stale.write_text(namespace["render"]().replace("90:10", "50:50"))
    main = namespace["main"]
    main.__globals__["TARGET"] = stale
    main.__globals__["ROOT"] = tmp_path
    monkeypatch.setattr(sys, "argv", ["export_datasets_doc.py", "--check"])
    assert main() == 1
