"""House style that a reader notices: no Python line of the project runs past 120 characters."""
from __future__ import annotations

from tests.conftest import REPO

MAX_LINE = 120
FOLDERS = ("agent", "bookkeeping", "envs", "world_model", "planners", "benchmarks", "configs", "tests")


def long_lines(path, root) -> list[str]:
    """`file:line (length)`, the file relative to `root`, for each line of `path` over MAX_LINE characters."""
    return [f"{path.relative_to(root)}:{number} ({len(line)})"
            for number, line in enumerate(path.read_text().splitlines(), start=1) if len(line) > MAX_LINE]


def test_python_lines_fit_in_120_characters():
    files = [path for folder in FOLDERS for path in (REPO / folder).rglob("*.py")]
    assert len(files) > 50  # the check sees the project
    assert [line for path in files for line in long_lines(path, REPO)] == []


def test_the_check_sees_a_long_line(tmp_path):
    module = tmp_path / "long.py"
    module.write_text("x = 1\n" + "y = '" + "a" * MAX_LINE + "'\n")
    assert long_lines(module, tmp_path) == [f"long.py:2 ({MAX_LINE + 6})"]
