#!/usr/bin/env python3
"""Run the reliability tests with the recorder on, then write RELIABILITY.md from the figures.

    python scripts/reliability_report.py                      # the default selection
    python scripts/reliability_report.py tests/e2e/test_x.py  # ... plus more tests
    python scripts/reliability_report.py --only tests/integration/test_secrets.py
    python scripts/reliability_report.py --render-only DIR    # render records kept earlier

The tests run as ``python -m pytest <tests> -q -p tests.reliability`` from the repository
root, with ``SCOUT_RELIABILITY_DIR`` set to a temporary folder (``--records DIR`` keeps
it). Each test appends JSON lines there through ``tests/reliability.py``; the plugin
adds every test's outcome. The rendering knows nothing about particular suites:

- suites named ``fault_*`` are fault audits and come first;
- every other suite follows, alphabetically (``pytest``, the test outcomes, last);
- a text value shared by all of a suite's records (``checked``) becomes a sentence,
  other values become table columns; integer columns get a total row; lists
  (``problems``) become bullet points.

The default selection is the bad-input, fuzzing and secrets tests, the lifecycle test
that dead-letters malformed events, the short fault soak (``tests/e2e/test_soak.py``),
and any ``tests/**/test_fault*.py``. The exit code is pytest's, and RELIABILITY.md is
written whatever it is: a failing check is a figure worth reading.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import reliability  # noqa: E402 - the repository root must be on sys.path first

DEFAULT_TESTS = [
    "tests/integration/test_bad_input_cli.py",
    "tests/integration/test_bad_input_api.py",
    "tests/integration/test_fuzz_api.py",
    "tests/integration/test_secrets.py",
    "tests/integration/test_lifecycle.py::test_poison_messages_are_dead_lettered_exactly_once",
    # The short randomized soak on its own servers (records suite fault_soak).
    "tests/e2e/test_soak.py",
]
FAULT_TESTS = "tests/**/test_fault*.py"
FAULT_PREFIX = "fault_"
HIDDEN_KEYS = {"suite", "recorded_at"}
MAX_PROBLEMS = 40
MAX_CELL = 160


# --- running ---------------------------------------------------------------------------------


def selected_tests(extra: list[str], only: bool) -> list[str]:
    if only:
        return extra
    faults = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(FAULT_TESTS))
    tests = [*DEFAULT_TESTS, *faults, *extra]
    return list(dict.fromkeys(tests))


def run_tests(tests: list[str], records: Path, pytest_args: list[str]) -> tuple[int, float, str]:
    command = [sys.executable, "-m", "pytest", *tests, "-q", "-p", "tests.reliability"]
    command += pytest_args
    env = {**os.environ, reliability.ENV_VAR: str(records)}
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, check=False)
    shown = " ".join(["python", "-m", "pytest", *command[3:]])
    return done.returncode, time.monotonic() - started, shown


# --- rendering -------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif value is None:
        text = "-"
    else:
        text = str(value)
    text = " ".join(text.split())
    if len(text) > MAX_CELL:
        text = text[: MAX_CELL - 1] + "…"
    return text.replace("|", "\\|")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """A Markdown table; columns of counts are right-aligned and get a total row."""
    counted = [
        c
        for c in columns
        if any(c in r for r in rows) and all(_is_count(r[c]) for r in rows if c in r)
    ]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(" ---: " if c in counted else " --- " for c in columns) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    if len(rows) > 1 and counted:
        total = {c: sum(r.get(c, 0) for r in rows) for c in counted}
        first = next((c for c in columns if c not in counted), None)
        cells = ["**total**" if c == first else _cell(total.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _columns(records: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any], list[str]]:
    """(table columns, values shared by every record, list-valued keys), first-seen order."""
    keys: list[str] = []
    for item in records:
        keys += [k for k in item if k not in keys and k not in HIDDEN_KEYS]
    lists = [k for k in keys if any(isinstance(r.get(k), list) for r in records)]
    shared = {
        k: records[0].get(k)
        for k in keys
        if k not in lists
        and isinstance(records[0].get(k), str)
        and all(r.get(k) == records[0].get(k) for r in records)
    }
    columns = [k for k in keys if k not in lists and k not in shared]
    return columns, shared, lists


def render_suite(name: str, records: list[dict[str, Any]]) -> list[str]:
    columns, shared, lists = _columns(records)
    lines = [f"### {name}", ""]
    for key, value in shared.items():
        lines += [f"{key.replace('_', ' ').capitalize()}: {value}", ""]
    if columns:
        lines += [*_table(records, columns), ""]
    for key in lists:
        items = [str(x) for r in records for x in (r.get(key) or [])]
        title = key.replace("_", " ").capitalize()
        if not items:
            lines += [f"{title}: none.", ""]
            continue
        lines += [f"{title} ({len(items)}):", ""]
        for item in items[:MAX_PROBLEMS]:
            text = " ".join(item.split())
            lines.append(f"- {text[:400]}{'…' if len(text) > 400 else ''}")
        if len(items) > MAX_PROBLEMS:
            lines.append(f"- … and {len(items) - MAX_PROBLEMS} more")
        lines.append("")
    return lines


def _summary_row(name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    totals: Counter[str] = Counter()
    problems = 0
    for item in records:
        for key, value in item.items():
            if _is_count(value):
                totals[key] += value
            elif isinstance(value, list):
                problems += len(value)
    figures = ", ".join(f"{key} {value}" for key, value in totals.items())
    return {
        "suite": name,
        "records": len(records),
        "figures": figures or "-",
        "problems": problems,
    }


def render_tests(records: list[dict[str, Any]]) -> list[str]:
    by_file: dict[str, Counter[str]] = {}
    seconds: Counter[str] = Counter()
    failed: list[str] = []
    for item in records:
        path = str(item.get("nodeid", "?")).split("::")[0]
        by_file.setdefault(path, Counter())[str(item.get("outcome"))] += 1
        seconds[path] += float(item.get("seconds") or 0)
        if item.get("outcome") == "failed":
            failed.append(f"{item.get('nodeid')} ({item.get('phase')})")
    rows = [
        {
            "file": path,
            "passed": outcomes["passed"],
            "failed": outcomes["failed"],
            "skipped": outcomes["skipped"],
            "seconds": round(seconds[path]),
        }
        for path, outcomes in by_file.items()
    ]
    lines = ["## Tests run", ""]
    if not rows:
        return [*lines, "No test outcomes were recorded.", ""]
    lines += [*_table(rows, ["file", "passed", "failed", "skipped", "seconds"]), ""]
    if failed:
        lines += ["Failed:", "", *[f"- `{name}`" for name in failed], ""]
    return lines


def render(
    records: list[dict[str, Any]], *, command: str | None, status: int | None, seconds: float
) -> str:
    suites = dict(reliability.iter_suites(records))
    tests = suites.pop(reliability.TESTS_SUITE, [])
    faults = sorted(name for name in suites if name.startswith(FAULT_PREFIX))
    others = sorted(name for name in suites if not name.startswith(FAULT_PREFIX))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability",
        "",
        f"Generated by `python scripts/reliability_report.py` on {when}{_commit()}.",
        "Regenerate it after changing the code or the tests; the figures come from the "
        "test run below, nothing here is written by hand.",
        "",
    ]
    if command is not None:
        outcome = "passed" if status == 0 else f"exit status {status}"
        lines += [f"Test run: `{command}` ({outcome}, {seconds:.0f} s).", ""]
    lines += ["## Summary", ""]
    summary = [_summary_row(name, suites[name]) for name in [*faults, *others]]
    if summary:
        lines += [*_table(summary, ["suite", "records", "figures", "problems"]), ""]
    else:
        lines += ["No figures were recorded.", ""]
    lines += ["## Fault audits", ""]
    if faults:
        for name in faults:
            lines += render_suite(name, suites[name])
    else:
        lines += [
            "None recorded in this run. Fault-injection tests record suites named "
            f"`{FAULT_PREFIX}*` (runs, duplicates, lost, ...) with `tests/reliability.py`; "
            f"files matching `{FAULT_TESTS}` are run by default.",
            "",
        ]
    lines += ["## Bad input, fuzzing and secrets", ""]
    for name in others:
        lines += render_suite(name, suites[name])
    lines += render_tests(tests)
    return "\n".join(lines).rstrip() + "\n"


def _commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f", from commit `{sha}`{' with uncommitted changes' if dirty else ''}"


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tests", nargs="*", help="more test paths or node ids")
    parser.add_argument("--only", action="store_true", help="run only the tests given")
    parser.add_argument("--output", type=Path, default=ROOT / "RELIABILITY.md")
    parser.add_argument("--records", type=Path, help="keep the JSON lines in this folder")
    parser.add_argument("--render-only", type=Path, metavar="DIR", help="render DIR's records")
    parser.add_argument(
        "--pytest-arg", action="append", default=[], help="passed on to pytest (repeatable)"
    )
    args = parser.parse_args(argv)

    if args.render_only is not None:
        text = render(reliability.read(args.render_only), command=None, status=None, seconds=0)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
        return 0

    tests = selected_tests(args.tests, args.only)
    if not tests:
        parser.error("no tests selected")
    with tempfile.TemporaryDirectory(prefix="scout-reliability-") as scratch:
        records = args.records or Path(scratch)
        records.mkdir(parents=True, exist_ok=True)
        for stale in records.glob("*.jsonl"):
            stale.unlink()
        status, seconds, command = run_tests(tests, records, args.pytest_arg)
        text = render(reliability.read(records), command=command, status=status, seconds=seconds)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} (pytest exit status {status})")
    return status


if __name__ == "__main__":
    sys.exit(main())
