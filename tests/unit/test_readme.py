"""README's two commands are the ones that work: CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", readme)


def test_readme_opens_with_run_and_test_commands() -> None:
    run, test = _commands()[:2]
    assert "scout-tasks dev" in run
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = _commands()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
