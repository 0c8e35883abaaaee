"""Dependency rules of the layout, checked two ways: every module's own import statements
(also the lazy ones inside functions), and what importing a package really pulls in.

- service (the API process) never imports torch or worker;
- worker and jobs never import service;
- core (imported by every process) imports none of service, worker, jobs, model_store,
  tasks or families: nothing above it;
- tasks and model_store (read by the API) never import torch, service or worker;
- faces (the face stage, run in the API process) imports no torch and nothing of service,
  worker or the families that use it;
- a family's folder (families/<name>/): the modules every process imports (spec, processing,
  synthetic data) import no torch, worker or service; its API module no torch or worker;
  only its worker modules (nets, trainer, weights) may import torch and worker.
- faces (the face stage, run in the API process) imports no torch and nothing of service,
  worker or the families that use it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "service": ("torch", "worker"),
    "worker": ("service",),
    "jobs": ("service",),
    "core": ("service", "worker", "jobs", "model_store", "tasks", "families"),
    "tasks": ("torch", "service", "worker"),
    "model_store": ("torch", "service", "worker"),
    "faces": ("torch", "service", "worker", "families", "tasks"),
}
# Importing every module of these is cheap (no torch): check sys.modules too.
IMPORTED = ("service", "jobs", "core", "tasks", "model_store", "faces")

# A family module's rules, by its name (anything else in a family folder is worker side).
FAMILY_SHARED = ("__init__", "spec", "processing", "synthetic")  # every process
FAMILY_API = ("api",)  # the API process
FAMILY_FORBIDDEN = {
    **{name: ("torch", "worker", "service") for name in FAMILY_SHARED},
    **{name: ("torch", "worker") for name in FAMILY_API},
}


def _hits(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_what_its_package_may_not(package: str) -> None:
    bad = [f"{path.relative_to(REPO)}:{line} imports {name}"
           for path in sorted((REPO / package).rglob("*.py"))
           for line, name in imported_names(path) if _hits(name, FORBIDDEN[package])]
    assert not bad, "\n".join(bad)


def _family_modules() -> list[Path]:
    return sorted(p for p in (REPO / "families").glob("*/*.py"))


def test_family_modules_import_only_what_their_process_may() -> None:
    modules = _family_modules()
    assert any(p.stem == "spec" for p in modules)  # the rule below checks something
    bad = [f"{path.relative_to(REPO)}:{line} imports {name}"
           for path in modules if path.stem in FAMILY_FORBIDDEN
           for line, name in imported_names(path)
           if _hits(name, FAMILY_FORBIDDEN[path.stem])]
    assert not bad, "\n".join(bad)


def test_the_family_registration_list_imports_only_torch_free_specs() -> None:
    names = [name for _, name in imported_names(REPO / "families" / "__init__.py")]
    assert names and all(n.startswith("families.") and n.endswith(".spec") for n in names)


@pytest.mark.parametrize("package", IMPORTED)
def test_importing_a_package_pulls_in_nothing_forbidden(package: str) -> None:
    forbidden = FORBIDDEN[package]
    code = (
        "import importlib, pkgutil, sys\n"
        f"root = importlib.import_module({package!r})\n"
        "for info in pkgutil.walk_packages(root.__path__, root.__name__ + '.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
        f"forbidden = {forbidden!r}\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if any(m == f or m.startswith(f + '.') for f in forbidden))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=180, cwd=REPO)
    assert out.stdout.strip() == "", f"{package} pulls in {out.stdout.strip()}"


@pytest.mark.parametrize("module", ["service.app", "model_store.intake", "model_store.store"])
def test_api_side_never_imports_torch(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m == 'torch' or m.startswith(('torch.', 'worker')))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120, cwd=REPO)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"
