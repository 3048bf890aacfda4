"""Every `from <project package> import name` names something that exists, including imports
inside functions, which only run when that code path does. The benchmarks are not run by the
suite, so this is what notices one left behind by a rename in the core."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.harness.paths import REPO

PROJECT = ("embeddings", "app_support", "bench", "tests")
FOLDERS = ["bench", "embeddings", "app_support", "app_pages", "deploy", "tests"]


def project_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of each absolute `from` import of a project package in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [
        (node.lineno, node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.level == 0
        and node.module
        and node.module.split(".")[0] in PROJECT
        for alias in node.names
    ]


def unresolved(imports: list[tuple[int, str, str]]) -> list[str]:
    """The imports whose module cannot be imported or lacks the name (nor has it a submodule)."""
    missing = []
    for line, module, name in imports:
        try:
            found = importlib.import_module(module)
        except ImportError as error:
            missing.append(f"line {line}: {module} ({error})")
            continue
        if name == "*" or hasattr(found, name):
            continue
        try:
            importlib.import_module(f"{module}.{name}")
        except ImportError:
            missing.append(f"line {line}: {name} from {module}")
    return missing


def sources() -> list[Path]:
    return sorted(
        path
        for folder in FOLDERS
        for path in (REPO / folder).rglob("*.py")
        if "node_modules" not in path.parts
    )


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_project_import_names_something_that_exists(path):
    assert unresolved(project_imports(path)) == []


def test_a_renamed_function_is_caught(tmp_path):
    stale = tmp_path / "stale.py"
    stale.write_text(
        "def later():\n"
        "    from embeddings.models.export import _export, measure_drift\n"
        "    from embeddings.no_such_module import anything\n",
        encoding="utf-8",
    )
    missing = unresolved(project_imports(stale))
    assert missing[0] == "line 2: _export from embeddings.models.export"
    assert missing[1].startswith("line 3: embeddings.no_such_module")
    assert len(missing) == 2
