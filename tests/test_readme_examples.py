"""Every Python example in the README runs as written, and its test command is the one CI runs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^([ \t]*)```python\n(.*?)^\1```", re.DOTALL | re.MULTILINE)


def python_examples() -> list[str]:
    return [textwrap.dedent(code) for _, code in BLOCK.findall(README.read_text())]


def test_the_readme_has_python_examples():
    assert len(python_examples()) >= 3


@pytest.mark.parametrize("index", range(len(python_examples())))
def test_readme_example_runs(index):
    threads = torch.get_num_threads()
    try:
        exec(compile(python_examples()[index], f"README.md example {index + 1}", "exec"), {"__name__": "readme"})
    finally:
        torch.set_num_threads(threads)


def test_ci_runs_the_readme_test_command():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    command = lines[lines.index("# The README's test command, exactly:") + 1]
    assert command == 'pip install -e ".[dev]" && python -m pytest'
    assert {"ruff check .", "ruff format --check ."} <= set(lines), "CI must run the linters"
    assert f"\n{command}\n" in README.read_text()
