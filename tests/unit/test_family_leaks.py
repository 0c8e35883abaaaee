"""No code outside a family's folder names a built-in family: deleting ``families/<name>/``
and its line in ``families/__init__.py`` removes the family.

Code names a family when an identifier (split at ``_`` and case changes), a module path or
a string constant (docstrings and ``description=`` texts are prose and do not count) holds
the family's task name or one of its architecture names as a word. sdk/, docs, tests and
bench are out of scope (they exercise the families by name), and so are names that come
from third-party libraries (``prometheus_client.generate_latest``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from tasks import task_specs

REPO = Path(__file__).resolve().parents[2]
OUT_OF_SCOPE = {"sdk", "docs", "tests", "bench", "families", "openapi", "deploy", "scripts"}
FIRST_PARTY = {"core", "tasks", "families", "service", "worker", "model_store", "jobs"}


def _words_of_identifier(name: str) -> set[str]:
    return {w.lower() for part in name.split("_")
            for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", part)}


def _words_of_text(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z0-9]+", text)}


def _prose(tree: ast.AST) -> set[int]:
    """Docstrings and ``description=`` texts (a field's or route's documentation)."""
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.keyword) and node.arg == "description"
                and isinstance(node.value, ast.Constant)):
            found.add(id(node.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                found.add(id(first.value))
    return found


def _third_party_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] not in FIRST_PARTY:
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def words_in(path: Path) -> Iterator[tuple[int, set[str]]]:
    """(line, words) of every identifier, module path and non-docstring string constant."""
    tree = ast.parse(path.read_text(), str(path))
    docs, foreign = _prose(tree), _third_party_names(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Name) and node.id not in foreign:
            yield line, _words_of_identifier(node.id)
        elif isinstance(node, ast.Attribute):
            yield line, _words_of_identifier(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield line, _words_of_identifier(node.name)
        elif isinstance(node, ast.arg):
            yield line, _words_of_identifier(node.arg)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield line, {w for part in node.module.split(".") for w in _words_of_identifier(part)}
            yield line, {w for a in node.names if a.name not in foreign
                         for w in _words_of_identifier(a.name)}
        elif isinstance(node, ast.Import):
            yield line, {w for a in node.names for part in a.name.split(".")
                         for w in _words_of_identifier(part)}
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docs):
            yield line, _words_of_text(node.value)


def leaks(skip: set[str] | frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """family -> ``file:line`` where code outside the family's folder (and ``skip``) names
    it."""
    vocabulary = {spec.name: {spec.name, *spec.archs} for spec in task_specs()
                  if (REPO / "families" / spec.name).is_dir()}
    found: dict[str, list[str]] = {name: [] for name in vocabulary}
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if (rel.parts[0] in OUT_OF_SCOPE or rel.parts[0].startswith(".")
                or rel.as_posix() in skip):
            continue
        for line, words in words_in(path):
            for family, names in vocabulary.items():
                if words & names:
                    found[family].append(f"{rel}:{line}")
    return {family: sorted(set(where)) for family, where in found.items()}


def test_the_counter_sees_a_family_named_in_code(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('"""matte in a docstring is prose."""\nx = get_task("matte")\n'
                     "from prometheus_client import generate_latest\n")
    lines = [(line, words) for line, words in words_in(probe)]
    assert any("matte" in words and line == 2 for line, words in lines)
    assert not any("matte" in words and line == 1 for line, words in lines)
    assert not any("generate" in words for _, words in lines)


def test_no_generic_module_names_a_built_in_family() -> None:
    found = leaks()
    assert found, "no built-in family is registered"
    named = {family: where for family, where in found.items() if where}
    assert not named, "\n".join(f"{family}: {', '.join(where)}"
                                for family, where in named.items())
