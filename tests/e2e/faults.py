"""The audit every fault test ends with, and its record for RELIABILITY.md."""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tests import reliability
from tests.conftest import Received
from tests.e2e.procs import CeleryProcess


def kill_tree(proc: CeleryProcess) -> None:
    """SIGKILL a celery process and its pool children, as a crash or the OOM killer would."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == proc.pid:
            children.append(int(entry.name))
    proc.kill()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def audit(
    suite: str,
    checked: str,
    engine: Engine,
    events: list[Received],
    survivors: list[CeleryProcess],
    *,
    expected_runs: int | None = None,
    **figures: Any,
) -> dict[str, Any]:
    """Every due slot has one run, every run's scout.trigger arrived, nothing doubled.

    Returns the figures (also recorded) after asserting them.
    """
    with engine.connect() as conn:
        per_slot = conn.execute(
            text(
                "SELECT schedule_id, scheduled_for, count(*) FROM scout_runs"
                " WHERE schedule_id IS NOT NULL GROUP BY 1, 2"
            )
        ).all()
        run_ids = {str(r) for r in conn.execute(text("SELECT id FROM scout_runs")).scalars()}
        backlog = conn.execute(text("SELECT count(*) FROM scout_outbox")).scalar_one()
    triggers = [e for e in events if e.routing_key == "scout.trigger"]
    event_ids_per_run: dict[str, set[str]] = {}
    for event in triggers:
        event_ids_per_run.setdefault(event.body["run_id"], set()).add(event.body["event_id"])
    deliveries = Counter(e.body["run_id"] for e in triggers)
    result = {
        "runs": len(run_ids),
        "slots": len(per_slot),
        "duplicate_runs": sum(n - 1 for *_slot, n in per_slot),
        "lost_events": len(run_ids - set(event_ids_per_run)),
        "unknown_events": len(set(event_ids_per_run) - run_ids),
        "redelivered_events": sum(n - 1 for n in deliveries.values()),
        "runs_with_two_event_ids": sum(1 for ids in event_ids_per_run.values() if len(ids) > 1),
        "outbox_backlog": backlog,
        "survivors_alive": sum(p.alive() for p in survivors),
        "survivors": len(survivors),
        **figures,
    }
    reliability.record(suite, checked=checked, **result)
    logs = "\n".join(p.log()[-1500:] for p in survivors)
    assert result["duplicate_runs"] == 0, (result, logs)
    assert result["lost_events"] == 0, (result, logs)
    assert result["unknown_events"] == 0, result
    assert result["runs_with_two_event_ids"] == 0, result
    assert result["outbox_backlog"] == 0, result
    assert result["survivors_alive"] == len(survivors), (result, logs)
    if expected_runs is not None:
        assert result["runs"] == expected_runs, (result, logs)
    return result
