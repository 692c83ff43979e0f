"""The packages' arrows stay one way (docs/architecture.md): a test that fails when an import crosses them.

    bookkeeping <- planners (none of ours) ; envs -> bookkeeping ; world_model -> bookkeeping, envs (the dataset
    reader only: a task's static facts are in the dataset's manifest) ; agent -> all of them ; benchmarks -> all
"""
from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

PACKAGES = ("agent", "bookkeeping", "envs", "world_model", "planners", "benchmarks")
ALLOWED = {
    "bookkeeping": set(),
    "planners": set(),
    "envs": {"bookkeeping"},
    "world_model": {"bookkeeping", "envs.dataset"},
    "agent": {"bookkeeping", "envs", "world_model", "planners"},
    "benchmarks": {"agent", "bookkeeping", "envs", "world_model", "planners"},
}


def project_imports(path) -> set[str]:
    """The project modules a file imports (top-level and inside functions), as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def allowed(package: str, module: str) -> bool:
    if module.split(".")[0] == package:
        return True
    return any(module == rule or module.startswith(rule + ".") for rule in ALLOWED[package])


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_layers(package):
    crossing = sorted(f"{path.relative_to(REPO)} imports {module}" for path in (REPO / package).rglob("*.py")
                      for module in project_imports(path) if not allowed(package, module))
    assert crossing == []


def test_the_check_sees_a_crossing(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from agent.build import load_agent\n")
    assert project_imports(module) == {"agent.build"} and not allowed("world_model", "agent.build")
