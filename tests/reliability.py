"""A tiny recorder of reliability figures, for RELIABILITY.md.

When ``SCOUT_RELIABILITY_DIR`` is set, :func:`record` appends one JSON line per call to
a file in that folder; otherwise it does nothing, so tests call it unconditionally.
``scripts/reliability_report.py`` sets the variable, runs the tests and renders the
lines. A record is a flat object::

    {"suite": "bad_input_api", "checked": "what was tried", "cases": 212, "5xx": 0, ...}

Suites whose name starts with ``fault_`` are fault audits (runs, duplicates, lost, ...);
the report lists them first. Lists (``problems``) are rendered as bullet points.

Loaded as a pytest plugin (``-p tests.reliability``, as the report script does), it also
records every test's outcome and duration as suite ``pytest``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ENV_VAR = "SCOUT_RELIABILITY_DIR"
TESTS_SUITE = "pytest"


def folder() -> Path | None:
    """Where records go, or None when nothing is being recorded."""
    value = os.environ.get(ENV_VAR)
    return Path(value) if value else None


def record(suite: str, **figures: Any) -> None:
    """Append one record for ``suite`` (no-op unless ``SCOUT_RELIABILITY_DIR`` is set)."""
    target = folder()
    if target is None:
        return
    target.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {"suite": suite, **figures, "recorded_at": datetime.now(UTC).isoformat()},
        ensure_ascii=False,
        default=str,
    )
    # One file per process, so parallel test processes never interleave lines.
    with (target / f"records-{os.getpid()}.jsonl").open("a", encoding="utf-8") as out:
        out.write(line + "\n")


def read(source: Path) -> list[dict[str, Any]]:
    """Every record in the folder ``source``, in the order they were written."""
    records: list[dict[str, Any]] = []
    for path in sorted(source.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return sorted(records, key=lambda r: str(r.get("recorded_at", "")))


def iter_suites(records: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Records grouped by suite, in first-seen order."""
    order: dict[str, list[dict[str, Any]]] = {}
    for item in records:
        order.setdefault(str(item.get("suite", "?")), []).append(item)
    yield from order.items()


# --- pytest plugin: every test's outcome --------------------------------------------------


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record the call phase of each test, and setup/teardown phases that did not pass."""
    if report.when != "call" and report.outcome == "passed":
        return
    record(
        TESTS_SUITE,
        nodeid=report.nodeid,
        phase=report.when,
        outcome=report.outcome,
        seconds=round(report.duration, 2),
    )
