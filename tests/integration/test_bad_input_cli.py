"""The bad-input corpus (tests/badinput.py) through the ``scout-tasks`` command line.

Every refused case must exit 2 with exactly one line on stderr that names the field,
no traceback, nothing on stdout, and nothing written (the row counts of the three
tables, and the schedule an ``update`` targets, are compared around each batch).
The valid unicode and SQL-looking values must be stored and printed back verbatim.

Some 250 command lines: at ~1.5 s of interpreter start and imports each (the package
imports Celery), one ``scout-tasks`` process per case would take minutes on a small
machine. So the cases run in a *fork server*: one process imports
``scout_tasks.cli.main``, the very function the console script calls, then forks a
child per command line, which redirects its stdout/stderr to files, calls ``main``
and exits with its return code, as ``sys.exit(main())`` does. Each child is a fresh
process with its own settings, engine and connections. A sample of cases also runs
through the installed ``scout-tasks`` script, and must give the same exit code and the
same stderr as in the fork server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from scout_tasks import service
from tests import badinput, reliability
from tests.badinput import Argv, Bad, Good
from tests.conftest import EventQueue
from tests.integration.helpers import counts, row, run_cli

SUITE = "bad_input_cli"
PARALLEL = max(2, min(4, os.cpu_count() or 2))

# The fork server. Its stdin is {"argvs": [[...], ...], "folder": ..., "parallel": N};
# it writes each child's output to <folder>/<i>.out and .err and prints the exit codes.
_DRIVER = r"""
import json, os, sys, traceback

from scout_tasks.cli import main  # what the scout-tasks console script calls


def child(argv, out_path, err_path):
    code = 1
    try:
        for fd, path in ((1, out_path), (2, err_path)):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(handle, fd)
            os.close(handle)
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def run(argvs, folder, parallel):
    codes = [None] * len(argvs)
    pending = list(enumerate(argvs))
    running = {}
    while pending or running:
        while pending and len(running) < parallel:
            index, argv = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                base = os.path.join(folder, str(index))
                child(argv, base + ".out", base + ".err")
            running[pid] = index
        pid, status = os.wait()
        codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    return codes


job = json.loads(sys.stdin.read())
print(json.dumps(run(job["argvs"], job["folder"], job["parallel"])))
"""


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Expect:
    """One command line and what its refusal must look like."""

    label: str
    argv: tuple[str, ...]
    names: tuple[str, ...]
    ok_exit_0: bool = False


Runner = Callable[[Sequence[Sequence[str]]], list[Result]]


@pytest.fixture
def env(db_url: str, broker_url: str, exchange_name: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    return {
        **base,
        "SCOUT_DATABASE_URL": db_url,
        "SCOUT_BROKER_URL": broker_url,
        "SCOUT_EXCHANGE": exchange_name,
    }


@pytest.fixture
def cli(env: dict[str, str], tmp_path: Path) -> Runner:
    """Run command lines in the fork server (cwd: an empty folder, as run_cli does)."""
    work = tmp_path / "cwd"
    work.mkdir()

    def run(argvs: Sequence[Sequence[str]]) -> list[Result]:
        folder = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        job = {"argvs": [list(a) for a in argvs], "folder": str(folder), "parallel": PARALLEL}
        done = subprocess.run(
            [sys.executable, "-c", _DRIVER],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        codes = json.loads(done.stdout)
        return [
            Result(
                code,
                (folder / f"{i}.out").read_bytes().decode(errors="replace"),
                (folder / f"{i}.err").read_bytes().decode(errors="replace"),
            )
            for i, code in enumerate(codes)
        ]

    return run


# --- command lines from the corpus -------------------------------------------------------------


def _names(case: Bad, option: str | None) -> tuple[str, ...]:
    names = [case.field, case.field.replace("_", "-")]
    if option:
        names.append(option)
    return tuple(names)


def _options(values: dict[str, Any], options: dict[str, str | None]) -> list[str]:
    args: list[str] = []
    for key, value in values.items():
        option = options[key]
        if option is not None:
            args += [option, value if isinstance(value, str) else json.dumps(value)]
    return args


def add_argv(case: Bad | Good, name: str) -> tuple[str, ...]:
    """``schedules add`` of a valid schedule named ``name``, with ``case`` put in."""
    values = badinput.with_field({**badinput.VALID_SCHEDULE, "name": name}, case)
    if case.value is not badinput.MISSING:
        values[case.field] = case.value if isinstance(case, Good) else case.argv
    positional = [values.pop("name")] if "name" in values else []
    return ("schedules", "add", *positional, *_options(values, badinput.SCHEDULE_OPTIONS))


def add_cases() -> list[Expect]:
    cases = [*badinput.SCHEDULE_FIELDS, *badinput.SCHEDULE_MISSING]
    return [
        # A unique name per case, so one wrongly accepted case cannot make the
        # others fail as duplicates.
        Expect(case.id, add_argv(case, f"cli case {i}"), _names(case, opt))
        for i, case in enumerate(cases)
        if case.cli and case.field in badinput.SCHEDULE_OPTIONS
        for opt in [badinput.SCHEDULE_OPTIONS[case.field] or "NAME"]
    ]


def update_cases(target: str) -> list[Expect]:
    options = {**badinput.SCHEDULE_OPTIONS, "name": "--name"}
    return [
        Expect(
            case.id,
            ("schedules", "update", target, options[case.field], case.argv),
            _names(case, options[case.field]),
        )
        for case in badinput.SCHEDULE_FIELDS
        if case.cli and case.field in options
    ]


def trigger_argv(case: Bad | Good) -> tuple[str, ...]:
    values = badinput.with_field(badinput.VALID_TRIGGER, case)
    if case.value is not badinput.MISSING:
        values[case.field] = case.value if isinstance(case, Good) else case.argv
    return ("trigger", *_options(values, dict(badinput.TRIGGER_OPTIONS)))


def trigger_cases() -> list[Expect]:
    return [
        Expect(case.id, trigger_argv(case), _names(case, badinput.TRIGGER_OPTIONS[case.field]))
        for case in badinput.TRIGGER_FIELDS
        if case.cli and case.field in badinput.TRIGGER_OPTIONS
    ]


def cron_next_cases() -> list[Expect]:
    cases = [
        # "--" ends the options, so that "-1 * * * *" is the expression.
        Expect(case.id, ("cron", "next", "--", case.argv), _names(case, "EXPRESSION"))
        for case in badinput.CRON
        if case.cli and not case.too_long_to_store
    ]
    cases += [
        Expect(case.id, ("cron", "next", "0 12 * * *", "--timezone", case.argv), _names(case, ""))
        for case in badinput.TIMEZONE
        if case.cli
    ]
    return cases + [_from_argv(a) for a in badinput.CRON_NEXT]


def _from_argv(case: Argv) -> Expect:
    return Expect(case.label, case.args, case.names, case.ok_exit_0)


# --- checking ---------------------------------------------------------------------------------


def refusal_problem(result: Result, expect: Expect) -> str:
    """What is wrong with ``result`` as a refusal ('' if nothing)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if "Traceback" in result.stderr:
        return f"traceback on stderr: {result.stderr[-500:]!r}"
    if expect.ok_exit_0 and result.code == 0:
        return ""
    if result.code != 2:
        return f"exit {result.code} (expected 2), stderr {result.stderr[:300]!r}"
    if len(lines) != 1:
        return f"{len(lines)} stderr lines (expected 1): {result.stderr[:300]!r}"
    if result.stdout.strip():
        return f"printed on stdout: {result.stdout[:200]!r}"
    line = lines[0].lower()
    if not any(name and name.lower() in line for name in expect.names):
        return f"the error does not name {expect.names[0]!r}: {lines[0][:300]!r}"
    return ""


@dataclass
class Tally:
    surface: str
    checked: str
    cases: int = 0
    exit_2: int = 0
    exit_0: int = 0
    other_exit: int = 0
    problems: list[str] = field(default_factory=list)
    unchanged: bool = True

    def count(self, expects: Iterable[Expect], results: Iterable[Result]) -> None:
        for expect, result in zip(expects, results, strict=True):
            self.cases += 1
            if result.code == 2:
                self.exit_2 += 1
            elif result.code == 0:
                self.exit_0 += 1
            else:
                self.other_exit += 1
            problem = refusal_problem(result, expect)
            if problem:
                self.problems.append(f"{self.surface} [{expect.label}]: {problem}")

    def wrote(self, what: str) -> None:
        self.unchanged = False
        self.problems.append(f"{self.surface}: {what}")

    def finish(self) -> None:
        reliability.record(
            SUITE,
            surface=self.surface,
            checked=self.checked,
            cases=self.cases,
            exit_2=self.exit_2,
            accepted=self.exit_0,
            other_exit=self.other_exit,
            tables_unchanged=self.unchanged,
            problems=self.problems,
        )
        assert self.problems == [], f"{len(self.problems)} problem(s):\n" + "\n".join(self.problems)


# --- refusals ---------------------------------------------------------------------------------


def test_schedules_add_refuses_every_bad_value(cli: Runner, engine: Engine) -> None:
    expects = add_cases()
    tally = Tally(
        "scout-tasks schedules add",
        "each bad value of every option and the NAME argument; missing ones",
    )
    before = counts(engine)
    tally.count(expects, cli([e.argv for e in expects]))
    if counts(engine) != before:
        tally.wrote(f"row counts went from {before} to {counts(engine)}")
    tally.finish()


def test_schedules_update_refuses_every_bad_value(cli: Runner, engine: Engine) -> None:
    target = service.create_schedule(engine, dict(badinput.VALID_SCHEDULE))
    before = row(engine, "SELECT * FROM scout_schedules WHERE id = :id", id=target["id"])
    expects = update_cases(str(target["id"]))
    tally = Tally("scout-tasks schedules update", "each bad value of every option")
    tally.count(expects, cli([e.argv for e in expects]))
    after = row(engine, "SELECT * FROM scout_schedules WHERE id = :id", id=target["id"])
    if after != before or counts(engine)["scout_schedules"] != 1:
        changed = {k: after[k] for k in after if after[k] != before[k]}
        tally.wrote(f"the schedule changed: {changed}")
    tally.finish()


def test_trigger_refuses_every_bad_value(
    cli: Runner, engine: Engine, event_queue: EventQueue
) -> None:
    expects = trigger_cases()
    tally = Tally(
        "scout-tasks trigger", "each bad value of --source, --max-strategies, --triggered-by"
    )
    tally.count(expects, cli([e.argv for e in expects]))
    if counts(engine) != {"scout_schedules": 0, "scout_runs": 0, "scout_outbox": 0}:
        tally.wrote(f"rows were written: {counts(engine)}")
    if published := event_queue.get(timeout=0.5, count=1000):
        tally.wrote(f"{len(published)} scout.trigger event(s) published")
    tally.finish()


def test_cron_next_refuses_every_bad_value(cli: Runner) -> None:
    expects = cron_next_cases()
    tally = Tally(
        "scout-tasks cron next",
        "every bad expression and time zone; bad -n and --after; times past year 9999",
    )
    tally.count(expects, cli([e.argv for e in expects]))
    tally.finish()


def test_lookups_and_filters_refuse_bad_values(cli: Runner, engine: Engine) -> None:
    expects = [_from_argv(a) for a in badinput.LOOKUPS]
    tally = Tally(
        "scout-tasks show/list/cancel",
        "ids and names that do not exist or are not UTF-8, bad filters and limits",
    )
    before = counts(engine)
    tally.count(expects, cli([e.argv for e in expects]))
    if counts(engine) != before:
        tally.wrote(f"row counts went from {before} to {counts(engine)}")
    tally.finish()


def test_the_console_script_answers_as_the_fork_server(
    cli: Runner, env: dict[str, str], tmp_path: Path
) -> None:
    """The installed ``scout-tasks`` gives the same exit code and stderr on a sample."""
    # The first case of some fields (validation errors, and click's own for
    # --max-strategies and --misfire-policy), and two of `cron next`'s options.
    fields = ("cron_expression", "timezone", "name", "max_strategies", "misfire_policy")
    firsts: dict[str, Expect] = {}
    for expect in add_cases():
        firsts.setdefault(expect.label.split(":")[0], expect)
    expects = [firsts[f] for f in fields]
    expects.append(next(e for e in trigger_cases() if e.label.startswith("triggered_by")))
    expects += [_from_argv(a) for a in badinput.CRON_NEXT[:4:3]]
    forked = cli([e.argv for e in expects])
    scout = {k: v for k, v in env.items() if k.startswith("SCOUT_")}
    work = tmp_path / "script"
    work.mkdir()
    with ThreadPoolExecutor(PARALLEL) as pool:
        real = list(pool.map(lambda e: run_cli(*e.argv, env=scout, cwd=work), expects))
    differences = [
        f"{e.label}: script {r.returncode} {r.stderr!r}, fork server {f.code} {f.stderr!r}"
        for e, r, f in zip(expects, real, forked, strict=True)
        if (r.returncode, r.stderr) != (f.code, f.stderr)
    ]
    assert len(expects) == 8
    assert differences == []


# --- what must be accepted ----------------------------------------------------------------------


def test_valid_unicode_and_sql_looking_values_are_stored_verbatim(
    cli: Runner, engine: Engine, event_queue: EventQueue
) -> None:
    schedules = [c for c in badinput.VALID_SCHEDULE_VALUES if c.cli]
    triggers = [c for c in badinput.VALID_TRIGGER_VALUES if c.cli]
    argvs = [(*add_argv(case, f"valid {i}"), "--json") for i, case in enumerate(schedules)] + [
        (*trigger_argv(case), "--json") for case in triggers
    ]
    results = cli(argvs)
    problems: list[str] = []
    for case, result, table in zip(
        [*schedules, *triggers],
        results,
        ["scout_schedules"] * len(schedules) + ["scout_runs"] * len(triggers),
        strict=True,
    ):
        label = f"{table} {case.field}: {case.label}"
        if result.code != 0 or "Traceback" in result.stderr:
            problems.append(f"{label}: exit {result.code}, stderr {result.stderr[:300]!r}")
            continue
        printed = json.loads(result.stdout)
        stored = row(engine, f"SELECT * FROM {table} WHERE id = :id", id=printed["id"])
        if {printed[case.field], stored[case.field]} != {case.expected}:
            problems.append(f"{label}: read back {printed[case.field]!r}/{stored[case.field]!r}")
    arrived = event_queue.get(count=len(triggers), timeout=15)
    if len(arrived) != len(triggers):
        problems.append(f"{len(arrived)} of {len(triggers)} scout.trigger events arrived")
    reliability.record(
        SUITE,
        surface="valid values",
        checked="unicode (emoji, RTL, combining), SQL-looking strings and bounds, "
        "added and triggered with --json, read back verbatim",
        valid_cases=len(argvs),
        stored_verbatim=len(argvs) - len(problems),
        problems=problems,
    )
    assert problems == []
