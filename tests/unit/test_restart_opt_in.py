"""Tests that restart the machine's servers run only when asked (SCOUT_TEST_RESTART_SERVERS=1).

Run without the variable, pytest skips them at collection with a reason that
says how to run them; nothing is stopped. (Only the skipping path is tried
here: the other one would restart the servers.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_restart_tests_are_skipped_with_a_reason_unless_asked() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SCOUT_TEST_RESTART_SERVERS"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/e2e/test_faults.py", "-m", "restart", "-rs",
         "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout
    assert "set SCOUT_TEST_RESTART_SERVERS=1 to run it" in result.stdout
    assert "passed" not in result.stdout and "failed" not in result.stdout


def test_ci_asks_for_them() -> None:
    assert "export SCOUT_TEST_RESTART_SERVERS=1" in (ROOT / ".ci" / "run").read_text()
