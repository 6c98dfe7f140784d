"""The sweep for runs whose agent never started or went silent."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine

from scout_tasks import counters, runs
from scout_tasks.events import STARTED
from scout_tasks.settings import get_settings

log = logging.getLogger(__name__)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def sweep_stale_runs(
    engine: Engine,
    now: datetime | None = None,
    pending_timeout: float | None = None,
    run_timeout: float | None = None,
) -> int:
    """Fail runs whose agent never started or went silent; return how many.

    A run still pending ``pending_timeout`` seconds after it was created never
    got a ``scout.started``; a running run with no event for ``run_timeout``
    seconds lost its agent. Silence is measured from ``updated_at``, which
    every applied event sets to the database's clock when it is received
    (never to the agent's timestamp, so a forged far-future timestamp cannot
    keep a run alive). Without this they would stay active forever, and an
    ``overlap_policy = 'skip'`` schedule would never fire again. ``now``
    defaults to the database's clock; the timeouts default to the settings
    (``SCOUT_RUN_PENDING_TIMEOUT``, ``SCOUT_RUN_TIMEOUT``).
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if pending_timeout is None or run_timeout is None:
        settings = get_settings()
        pending_timeout = (
            settings.run_pending_timeout if pending_timeout is None else pending_timeout
        )
        run_timeout = settings.run_timeout if run_timeout is None else run_timeout
    with engine.begin() as conn:
        failed = runs.fail_stale_runs(
            conn,
            now=now,
            pending_timeout=pending_timeout,
            run_timeout=run_timeout,
            pending_message=f"no {STARTED} within {_seconds(pending_timeout)}s",
            running_message=f"no event for {_seconds(run_timeout)}s",
        )
        counters.bump(
            conn,
            counters.merge(
                counters.runs_finished(["failed"] * len(failed)),
                {(counters.RUNS_STALE, ""): len(failed)},
            ),
        )
    for run_id, message in failed:
        log.warning(
            "run %s failed: %s",
            run_id,
            message,
            extra={"action": "run.stale", "run_id": str(run_id), "reason": message},
        )
    return len(failed)
