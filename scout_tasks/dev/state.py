"""Where a project folder's dev state lives, and the record of the running ``scout-tasks dev``.

Everything lives in the project folder's ``.scout/``::

    .scout/dev.json      the running instance: URLs, pids, where PostgreSQL keeps its data
    .scout/pgdata/       the PostgreSQL data folder (see below when running as root)
    .scout/run/          its Unix socket (no TCP port, so no clash with a system server;
                         in the temp folder if the project path is too long or unusual)
    .scout/logs/         postgres.log, and the logs of dev's children
    .scout/broker/       queue/ (a file per message), control/ (the exchanges' bindings)

When scout-tasks runs as root, PostgreSQL (which refuses root) runs as
``nobody``; when ``nobody`` cannot reach ``.scout/`` (a project under a 0700
folder such as root's home or a ``mktemp -d``), the data folder and socket
live in :attr:`Layout.server_dir` instead, a per-project folder in the system
temp folder, 0700 and owned by ``nobody``; ``dev.json`` records where.

Settings read this module to find the running instance; it starts nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

STATE_DIR = ".scout"
STATE_FILE = "dev.json"
# Only names the socket file (.s.PGSQL.5432): the server listens on no TCP port.
SOCKET_PORT = 5432
# A Unix socket path must fit in sockaddr_un.sun_path (108 bytes with the NUL).
_MAX_SOCKET_PATH = 107
_PLAIN_PATH = re.compile(r"\A[A-Za-z0-9/._-]+\Z")


@dataclass(frozen=True, slots=True)
class Layout:
    """The paths of one project folder's embedded state (all absolute)."""

    folder: Path

    @classmethod
    def here(cls, folder: Path | str | None = None) -> Layout:
        """The layout for ``folder`` (default: the current directory)."""
        return cls(Path(folder if folder is not None else Path.cwd()).resolve())

    @property
    def state(self) -> Path:
        return self.folder / STATE_DIR

    @property
    def state_file(self) -> Path:
        return self.state / STATE_FILE

    @property
    def pgdata(self) -> Path:
        return self.state / "pgdata"

    @property
    def log_dir(self) -> Path:
        return self.state / "logs"

    @property
    def broker_dir(self) -> Path:
        return self.state / "broker"

    def _digest(self) -> str:
        return hashlib.sha256(os.fsencode(self.folder)).hexdigest()[:12]

    @property
    def server_dir(self) -> Path:
        """This project's folder in the system temp folder, for PostgreSQL's files.

        Used when the server's account cannot reach ``.scout/``. Named after the
        project folder, so the next ``dev`` finds the same data; a reboot that
        empties the temp folder only means a fresh database.
        """
        return Path(tempfile.gettempdir()) / f"scout-tasks-{self._digest()}"

    @property
    def socket_dir(self) -> Path:
        """``.scout/run``, or a short folder in the temp dir when that path will not do.

        The fallback is kept outside the project folder because the kernel
        cannot bind a socket path longer than 107 bytes, and a path with spaces
        or other URL-special characters does not survive every rendering of the
        database URL as a libpq URI (the beat's renders a space as "+").
        """
        local = self.state / "run"
        socket_path = str(local / f".s.PGSQL.{SOCKET_PORT}")
        if len(os.fsencode(socket_path)) <= _MAX_SOCKET_PATH and _PLAIN_PATH.match(socket_path):
            return local
        return Path(tempfile.gettempdir()) / f"scout-{os.geteuid()}-{self._digest()}"

    def relative(self, path: Path) -> str:
        """``path`` relative to the project folder when inside it, for messages."""
        try:
            return str(path.relative_to(self.folder))
        except ValueError:
            return str(path)

    def prepare(self) -> None:
        """Create ``.scout/`` with its logs folder, and keep it out of git."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ignore = self.state / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# scout-tasks dev state (database, broker, logs)\n*\n")


@dataclass(frozen=True, slots=True)
class DevInstance:
    """What ``.scout/dev.json`` records about the running ``scout-tasks dev``."""

    folder: str
    database_url: str
    broker_url: str
    postgres_pid: int
    dev_pid: int
    pgdata: str
    started_at: str
    api_url: str | None = None
    children: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DevInstance:
        data = json.loads(text)
        return cls(
            folder=str(data["folder"]),
            database_url=str(data["database_url"]),
            broker_url=str(data["broker_url"]),
            postgres_pid=int(data["postgres_pid"]),
            dev_pid=int(data["dev_pid"]),
            pgdata=str(data["pgdata"]),
            started_at=str(data["started_at"]),
            api_url=data.get("api_url"),
            children={str(k): int(v) for k, v in dict(data.get("children") or {}).items()},
        )


def read_state(layout: Layout) -> DevInstance | None:
    """The recorded instance, alive or not; None when there is no readable record."""
    try:
        return DevInstance.from_json(layout.state_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning(
            "ignoring unreadable %s",
            layout.state_file,
            extra={"action": "embedded.bad_state", "path": str(layout.state_file)},
        )
        return None


def write_state(layout: Layout, instance: DevInstance) -> None:
    """Replace the record atomically, so a reader never sees half a file."""
    tmp = layout.state_file.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(instance.to_json())
    os.replace(tmp, layout.state_file)


def remove_state(layout: Layout, dev_pid: int) -> None:
    """Delete the record if it is still ``dev_pid``'s."""
    current = read_state(layout)
    if current is not None and current.dev_pid == dev_pid:
        layout.state_file.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def postgres_running(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is the live postmaster of ``pgdata``.

    A pid alone could have been reused by an unrelated process (or be a zombie
    nobody reaped), so the data folder's ``postmaster.pid`` must name it too;
    PostgreSQL removes that file when it shuts down (and a reboot that empties
    the temp folder removes it with the data folder).
    """
    if pid <= 0 or not pid_alive(pid):
        return False
    try:
        first_line = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except FileNotFoundError:
        return False
    except OSError:
        # Not ours to read (another user's server): the pid check has to do.
        return True
    return first_line == str(pid)


def running_instance(layout: Layout) -> DevInstance | None:
    """The instance recorded in ``layout``'s ``dev.json`` if its PostgreSQL is running."""
    instance = read_state(layout)
    if instance is None or not postgres_running(instance.postgres_pid, Path(instance.pgdata)):
        return None
    return instance


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
