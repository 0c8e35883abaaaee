"""``make run`` logs for a terminal (text) unless the environment says otherwise; the
processes themselves default to JSON (production, docker compose)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from core.settings import Settings
from tests.support.server import REPO


def _make_run(tmp_path: Path, **env: str) -> list[str]:
    """``make run`` with the interpreter replaced by a script that prints the format each
    process would get; the install stamp is a fresh file, newer than what it depends on,
    so the install step does not run."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    fake = tmp_path / "python"
    # The API (foreground) waits a moment: make stops the background worker when the API
    # exits, and on a busy machine the worker could be stopped before it printed.
    fake.write_text('#!/bin/sh\necho "$2 ${TOONFORGE_LOG_FORMAT:-unset}"\n'
                    '[ "$2" = service ] && sleep 2\nexit 0\n')
    fake.chmod(0o755)
    stamp = tmp_path / "installed"
    stamp.touch()
    base = {k: v for k, v in os.environ.items() if k != "TOONFORGE_LOG_FORMAT"}
    done = subprocess.run(["make", "-s", "run", f"PY={fake}", f"STAMP={stamp}",
                           f"VENV={tmp_path / 'venv'}"], cwd=REPO,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return sorted(line for line in done.stdout.splitlines() if line)


def test_make_run_logs_text(tmp_path: Path) -> None:
    assert _make_run(tmp_path) == ["service text", "worker text"]


def test_an_exported_format_wins(tmp_path: Path) -> None:
    assert _make_run(tmp_path, TOONFORGE_LOG_FORMAT="json") == ["service json", "worker json"]


def test_processes_default_to_json() -> None:
    assert Settings(_env_file=None).log_format == "json"
