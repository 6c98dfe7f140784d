"""The randomized fault soak (scripts/soak.py) as a test: a short one always, a long one on demand.

The soak starts its own PostgreSQL and RabbitMQ node on free ports, so its server
restarts touch nobody else's servers: it needs no ``restart`` marker. A failure
prints the seed; ``SCOUT_SOAK_SEED=<seed>`` replays it (same faults, same
parameters). ``SCOUT_SOAK_MINUTES=10`` adds the long soak.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.soak.servers import rabbit_bin_dir

ROOT = Path(__file__).resolve().parents[2]
SEED = os.environ.get("SCOUT_SOAK_SEED", "1010")
LONG_MINUTES = os.environ.get("SCOUT_SOAK_MINUTES")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(rabbit_bin_dir() is None, reason="needs rabbitmq-server for a private node"),
]


def _soak(minutes: float, faults_per_minute: float, tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    args = [
        sys.executable,
        str(ROOT / "scripts" / "soak.py"),
        "--minutes", str(minutes),
        "--seed", SEED,
        "--faults-per-minute", str(faults_per_minute),
        "--json", str(report),
    ]  # fmt: skip
    # Setup and settling take a few minutes on a busy machine, on top of the faulting time.
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=minutes * 60 + 900, cwd=ROOT, check=False
    )
    output = f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"soak found problems:\n{output}"
    assert f"CLEAN (seed {SEED})" in result.stdout


@pytest.mark.timeout(1200)
def test_short_soak(tmp_path: Path) -> None:
    """About 100 s of faults (about 13) while 37 schedules fire and the agent reports."""
    _soak(1.7, 8.0, tmp_path)


@pytest.mark.skipif(not LONG_MINUTES, reason="set SCOUT_SOAK_MINUTES to run the long soak")
@pytest.mark.timeout(float(LONG_MINUTES or 0) * 60 + 1800)
def test_long_soak(tmp_path: Path) -> None:
    _soak(float(LONG_MINUTES or 0), 6.0, tmp_path)
