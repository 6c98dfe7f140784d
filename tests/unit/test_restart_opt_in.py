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
         "-n", "0", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout
    assert "set SCOUT_TEST_RESTART_SERVERS=1 to run it" in result.stdout
    assert "passed" not in result.stdout and "failed" not in result.stdout


def test_ci_asks_for_them() -> None:
    assert "export SCOUT_TEST_RESTART_SERVERS=1" in (ROOT / ".ci" / "run").read_text()


def test_in_a_parallel_run_they_run_alone_after_the_workers(tmp_path: Path) -> None:
    """The workers leave them out; the controller then runs them in one process of its own.

    A scratch suite with one ordinary test and two ``restart`` tests (one
    failing) runs on a worker with this suite's hooks loaded as a plugin.
    """
    (tmp_path / "test_scratch.py").write_text(
        "import os, pathlib, pytest\n"
        "LOG = pathlib.Path(__file__).with_name('ran.log')\n"
        "def _note(name):\n"
        "    with LOG.open('a') as f:\n"
        "        f.write(f\"{name} {os.environ.get('PYTEST_XDIST_WORKER', 'alone')}\\n\")\n"
        "def test_ordinary():\n"
        "    _note('ordinary')\n"
        "@pytest.mark.restart\n"
        "def test_restarting():\n"
        "    _note('restarting')\n"
        "@pytest.mark.restart\n"
        "def test_restarting_fails():\n"
        "    _note('restarting_fails')\n"
        "    assert False\n"
    )
    # This test may itself run on a worker: its scratch run must not look like one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env |= {"SCOUT_TEST_RESTART_SERVERS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-n", "1",
         "-p", "no:cacheprovider", "-q", "-o", "markers=restart", "test_scratch.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    ran = sorted((tmp_path / "ran.log").read_text().splitlines())
    assert ran[0].startswith("ordinary gw"), ran
    assert ran[1:] == ["restarting alone", "restarting_fails alone"], ran
    # The failing restart test fails the whole run, though every worker's test passed.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_run_that_leaves_them_out_by_mark_never_runs_them(tmp_path: Path) -> None:
    (tmp_path / "test_scratch.py").write_text(
        "import pathlib, pytest\n"
        "LOG = pathlib.Path(__file__).with_name('ran.log')\n"
        "def test_ordinary():\n"
        "    LOG.open('a').write('ordinary\\n')\n"
        "@pytest.mark.restart\n"
        "def test_restarting():\n"
        "    LOG.open('a').write('restarting\\n')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env |= {"SCOUT_TEST_RESTART_SERVERS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-n", "1",
         "-p", "no:cacheprovider", "-q", "-o", "markers=restart", "-m", "not restart",
         "test_scratch.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "ran.log").read_text().splitlines() == ["ordinary"]
